"""``calohls report``: one self-contained HTML page of a whole study (data, training, PTQ, QAT, firmware, scan).

:func:`~calohls.report.collect.collect_study` walks the study folder into typed records;
:func:`~calohls.report.render.render_report` lays them out; :func:`write_report` does both and writes the page.
"""

from __future__ import annotations

from calohls.report.collect import Study, collect_study
from calohls.report.render import render_report, write_report

__all__ = ["Study", "collect_study", "render_report", "write_report"]
