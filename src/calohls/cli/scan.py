"""``calohls scan``: the size × precision study of a config file (float, PTQ, QAT, firmware, Pareto front)."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from calohls.config import StudyConfig, load_config
from calohls.files import refuse_inputs_inside

if TYPE_CHECKING:
    from calohls.scan.answer import StudyAnswer

__all__ = ["replaces_folder", "scan_command", "stage_progress"]


@contextlib.contextmanager
def stage_progress(hide: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress display with one bar per study stage; yields the ``progress(stage, done, total)`` callback.

    The display starts at the first report, so a study refused while its options and inputs are checked prints
    nothing but its error line.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars: dict[str, int] = {}
    display: list[Progress] = []

    def update(stage: str, done: int, total: int) -> None:
        if not display:
            display.append(
                Progress(
                    TextColumn("{task.description:<12}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=Console(stderr=True),
                    disable=hide,
                )
            )
            display[0].start()
        bar = display[0]
        if stage not in bars:
            bars[stage] = bar.add_task(stage, total=total)
        bar.update(bars[stage], completed=done, total=total)

    try:
        yield update
    finally:
        if display:
            display[0].stop()


def replaces_folder(output: Path, overwrite: bool) -> bool:
    """Whether ``--overwrite`` replaces ``output``: it does unless ``output`` is a study folder (which is resumed)."""
    return overwrite and not (output / "study.json").is_file()


def print_answer(answer: StudyAnswer) -> None:
    """The study's answer and its details, as plain lines on stdout."""
    click.echo(answer.answer)
    for line in answer.details:
        click.echo(f"  {line}")
    target = answer.target
    state = "met" if target.met else "not met (closest: " + "; ".join(target.misses) + ")"
    click.echo(f"  Design target: {state}, design {target.design}.")


@click.command("scan", short_help="The size × precision study: float, PTQ, QAT, firmware and the Pareto front.")
@click.argument("study", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False), required=True, help="Study folder.")
@click.option("--data", type=click.Path(path_type=Path, dir_okay=False), help="Cluster file (overrides `data:`).")
@click.option("--workers", type=int, help="Local worker processes. [default: one per core]")
@click.option("--scheduler", help="Dask scheduler address (tcp://host:8786), or 'local' for a local Dask cluster.")
@click.option("--overwrite", is_flag=True, help="Replace an output folder that is not a study folder.")
@click.option("--hide-progress", is_flag=True, help="Do not show the progress bars.")
def scan_command(
    study: Path,
    output: Path,
    data: Path | None,
    workers: int | None,
    scheduler: str | None,
    overwrite: bool,
    hide_progress: bool,
) -> None:
    """Run the study described in the YAML file STUDY (calohls.config.StudyConfig) into OUTPUT: every model size
    trained in float, quantized after training at several precisions, trained quantization-aware at several EBOPs
    weights, the best QAT designs built into checked firmware, and all designs on one resolution-vs-LUT plane.

    Finished work is recorded in OUTPUT/tasks.jsonl: run the same command again after an interruption, or after
    changing options, and only what is missing or changed runs.

    \b
    Examples:
      calohls scan study.yaml -o studies/poster
      calohls scan study.yaml -o studies/poster --scheduler tcp://head:8786
    """
    config = load_config(StudyConfig, study, data=str(data) if data else None, workers=workers, scheduler=scheduler)
    refuse_inputs_inside(output, (study, config.data), replaces_folder(output, overwrite))
    from calohls.stages.study import run_study

    with stage_progress(hide_progress) as progress:
        answer = run_study(config, output, overwrite=overwrite, progress=progress)
    print_answer(answer)
    click.echo(f"wrote {output}")
    click.echo(
        f"next: calohls report {shlex.quote(str(output))} -o {shlex.quote(str(output / 'report.html'))}", err=True
    )
