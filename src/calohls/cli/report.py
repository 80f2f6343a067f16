"""``calohls report``: one self-contained HTML page of a whole study."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["report_command"]


@click.command("report", short_help="One self-contained HTML page of a study: data, runs, PTQ, QAT, firmware, scan.")
@click.argument("study", type=click.Path(path_type=Path, file_okay=False))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True, help="HTML file.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT.")
def report_command(study: Path, output: Path, overwrite: bool) -> None:
    """Write one HTML page of everything calohls made in the folder STUDY: the answer of the size × precision scan,
    the data, each training run with its evaluation, the PTQ findings, the QAT Pareto checkpoints, the firmware,
    the configs and the versions. Figures are embedded, so the page can be mailed or archived on its own. Parts not
    run yet say so.

    STUDY may also be a folder of run folders, or a single run, PTQ, firmware or scan folder.

    \b
    Examples:
      calohls report study -o study.html
      calohls report runs/ -o runs.html --overwrite
    """
    from calohls.report import write_report

    path = write_report(study, output, overwrite=overwrite)
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
