"""The stages of the study: each computes with the library (``physics``, ``scan``, ...), writes the typed result
it gets back and draws it with :mod:`calohls.plots`. The command line and :mod:`calohls.pipeline` call these;
nothing below them imports them (see ``docs/architecture.md``)."""
