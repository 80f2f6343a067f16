"""``calohls ptq``: post-training quantization sweeps of trained runs."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from calohls.cli.progress import progress_bar
from calohls.config import SWEEPS, PTQConfig, load_config
from calohls.files import refuse_inputs_inside

__all__ = ["ptq_command"]


@click.command("ptq", short_help="Post-training quantization sweeps of trained runs (MPE, per-layer differences).")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False), required=True, help="Output folder.")
@click.option(
    "--sweep", "sweeps", multiple=True, type=click.Choice(SWEEPS), help="Sweep to run (repeatable). [default: all]"
)
@click.option("--engine", type=click.Choice(["emulate", "csim"]), help="Bit-exact emulator or hls4ml C-simulation.")
@click.option("--clusters", type=int, help="Test clusters per run. [default: 20000]")
@click.option("--total-bits", type=int, help="W of ap_fixed<W,I> in the int-bits sweep. [default: 18]")
@click.option("--integer-bits", type=int, help="I of ap_fixed<W,I> in the total-bits sweep. [default: 10]")
@click.option("--workers", type=int, help="Local worker processes. [default: one per core]")
@click.option("--scheduler", help="Dask scheduler address (tcp://host:8786), or 'local' for a local Dask cluster.")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), help="YAML of PTQ options.")
@click.option("--overwrite", is_flag=True, help="Start afresh in an output folder made with other options.")
@click.option("--hide-progress", is_flag=True, help="Do not show the progress bar.")
def ptq_command(
    runs: tuple[Path, ...],
    output: Path,
    sweeps: tuple[str, ...],
    engine: str | None,
    clusters: int | None,
    total_bits: int | None,
    integer_bits: int | None,
    workers: int | None,
    scheduler: str | None,
    config_path: Path | None,
    overwrite: bool,
    hide_progress: bool,
) -> None:
    """Quantize the trained RUNS (e.g. a small, a medium and a large one) with hls4ml at many precisions and measure
    how far each falls from its float model: MPE of the output energy, resolution, per-layer differences.

    Every finished point is stored at once in OUTPUT/results.jsonl: run the same command again after an interruption
    and it continues where it stopped. Figures and OUTPUT/summary.json (the findings) are written at the end.

    \b
    Examples:
      calohls ptq runs/small runs/medium runs/large -o ptq/poster
      calohls ptq runs/medium -o ptq/medium --sweep int-bits --total-bits 16
      calohls ptq runs/medium -o ptq/csim --engine csim --clusters 2000 --scheduler tcp://head:8786
    """
    config = load_config(
        PTQConfig,
        config_path,
        sweeps=sweeps or None,
        engine=engine,
        clusters=clusters,
        total_bits=total_bits,
        integer_bits=integer_bits,
        workers=workers,
        scheduler=scheduler,
    )
    refuse_inputs_inside(output, (*runs, config_path), overwrite)
    from calohls.stages.ptq import run_ptq

    with progress_bar(
        TextColumn("ptq"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("points"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        hide=hide_progress,
    ) as bar:
        task = bar.add_task("ptq", total=None)
        summary = run_ptq(
            list(runs),
            output,
            config,
            overwrite=overwrite,
            progress=lambda d, t: bar.update(task, completed=d, total=t),
        )
    for line in summary.findings:
        click.echo(line)
    click.echo(f"wrote {output}")
