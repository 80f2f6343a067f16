"""The particles a study simulates and selects, by name: below both the configuration and the data layer, which
each need the names (the cluster record re-exports them as :data:`calohls.data.schema.PARTICLES`)."""

from __future__ import annotations

__all__ = ["PARTICLES"]

#: Particle names accepted on the command line and their PDG ids.
PARTICLES: dict[str, int] = {"pi+": 211, "pi-": -211, "pi0": 111, "gamma": 22}
