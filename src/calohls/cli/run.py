"""``calohls run``: the whole study in one command, from simulated data to firmware and the HTML report."""

from __future__ import annotations

from pathlib import Path

import click

from calohls.cli.scan import print_answer, replaces_folder, stage_progress
from calohls.config import STUDY_PRESETS, StudyConfig, load_config
from calohls.files import refuse_inputs_inside

__all__ = ["run_command"]


@click.command("run", short_help="The whole study: simulate, train, evaluate, PTQ, QAT, firmware, report.")
@click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False), default=Path("study"),
              show_default=True, help="Study folder.")  # fmt: skip
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="YAML of study options (calohls.config.StudyConfig); they override the preset.")  # fmt: skip
@click.option("--full", is_flag=True, help="The full study (large data, all sizes; hours) instead of the default.")
@click.option("--workers", type=int, help="Local worker processes. [default: one per core]")
@click.option("--scheduler", help="Dask scheduler address (tcp://host:8786), or 'local' for a local Dask cluster.")
@click.option("--overwrite", is_flag=True, help="Replace an output folder that is not a study folder.")
@click.option("--hide-progress", is_flag=True, help="Do not show the progress bars.")
def run_command(
    output: Path,
    config_path: Path | None,
    full: bool,
    workers: int | None,
    scheduler: str | None,
    overwrite: bool,
    hide_progress: bool,
) -> None:
    """Run the study into OUTPUT and write OUTPUT/report.html. The built-in default (3 sizes on 60k simulated
    events) takes about 7 minutes on a 2-core laptop; --full reproduces the whole study.

    Stages whose outputs are up to date (same options, same inputs, by content hash) are skipped, so running it
    again after an interruption or a change of options redoes only what is missing or changed.

    \b
    Examples:
      calohls run
      calohls run --full -o studies/full --scheduler tcp://head:8786
      calohls run --config study.yaml -o studies/mine
    """
    defaults = STUDY_PRESETS["full" if full else "default"]
    config = load_config(StudyConfig, config_path, defaults=defaults, workers=workers, scheduler=scheduler)
    refuse_inputs_inside(output, (config_path, config.data), replaces_folder(output, overwrite))
    from calohls.pipeline import run_pipeline

    with stage_progress(hide_progress) as progress:
        result = run_pipeline(config, output, overwrite=overwrite, progress=progress)
    print_answer(result.answer)
    click.echo(f"wrote {result.report} ({result.seconds:.0f} s)")
