"""``calohls simulate``: single particles through the built-in calorimeter, topo-clustered, saved as HDF5."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from calohls.cli.progress import progress_bar
from calohls.config import SimConfig, dump_config, load_config
from calohls.data.schema import PARTICLES
from calohls.files import refuse_inputs_inside

__all__ = ["simulate_command"]

log = logging.getLogger(__name__)


def _default(field: str) -> str:
    value = SimConfig.model_fields[field].default
    return ",".join(value) if isinstance(value, tuple) else str(value)


class _RateColumn(ProgressColumn):
    """Events per second, once there is an estimate."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f} events/s" if task.speed else "", style="progress.data.speed")


def _progress_bar(hide: bool) -> Progress:
    """A progress bar on stderr (nothing at all with ``hide`` or off a terminal)."""
    return progress_bar(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        hide=hide,
    )


@click.command("simulate", short_help="Simulate single particles and write their topo-clusters to HDF5.")
@click.option(
    "--particles",
    metavar="LIST",
    help=f"Comma-separated particle types, drawn with equal odds; known: {', '.join(PARTICLES)}. "
    f"[default: {_default('particles')}]",
)
@click.option("--events", type=int, help=f"Number of single-particle events. [default: {_default('events')}]")
@click.option("--mu", type=float, help=f"Mean pile-up interactions per bunch crossing. [default: {_default('mu')}]")
@click.option(
    "--seed",
    type=int,
    help=f"Random seed; the same seed gives the same clusters. [default: {_default('seed')}]",
)
@click.option(
    "--e-min", type=float, help=f"Lowest particle energy in GeV (log-uniform). [default: {_default('e_min')}]"
)
@click.option("--e-max", type=float, help=f"Highest particle energy in GeV. [default: {_default('e_max')}]")
@click.option(
    "--max-cells",
    type=int,
    help=f"Cells stored per cluster, highest energy first. [default: {_default('max_cells')}]",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Worker processes; 1 simulates in this process. [default: one per CPU core]",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="YAML file of simulation options; options given on the command line override it.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="HDF5 file to write.",
)
@click.option("--overwrite", is_flag=True, help="Replace the output file if it exists.")
@click.option("--hide-progress", is_flag=True, help="Do not show the progress bar.")
def simulate_command(
    particles: str | None,
    events: int | None,
    mu: float | None,
    seed: int | None,
    e_min: float | None,
    e_max: float | None,
    max_cells: int | None,
    workers: int | None,
    config_path: Path | None,
    output: Path,
    overwrite: bool,
    hide_progress: bool,
) -> None:
    """Simulate single particles in the built-in calorimeter and write their topo-clusters to OUTPUT.

    Options come from --config (if given), then the command line; the resolved options are stored in the file
    (see `calohls inspect FILE --config`).

    \b
    Example:
      calohls simulate --particles pi+,pi-,pi0 --events 20000 --mu 200 --seed 1 -o data/clusters.h5
    """
    config = load_config(
        SimConfig,
        config_path,
        particles=particles,
        events=events,
        mu=mu,
        seed=seed,
        e_min=e_min,
        e_max=e_max,
        max_cells=max_cells,
    )
    refuse_inputs_inside(output, (config_path,), overwrite)
    log.info("simulation options:\n%s", dump_config(config))

    # Imported once the options are valid: the simulation's imports take a moment.
    from calohls.data.hdf5 import open_clusters
    from calohls.sim.generate import simulate_to_file

    start = time.perf_counter()
    with _progress_bar(hide_progress) as bar:
        task = bar.add_task("simulating", total=config.events)
        try:
            simulate_to_file(
                config,
                output,
                overwrite=overwrite,
                workers=workers,
                progress=lambda k: bar.advance(task, k),
            )
        except BaseException:
            bar.update(task, visible=False)  # the error message says it all
            raise
    seconds = time.perf_counter() - start

    with open_clusters(output) as f:
        n_clusters = f.n_clusters
    click.echo(
        f"wrote {n_clusters:,} clusters from {config.events:,} events to {output} "
        f"in {seconds:.1f} s ({n_clusters / max(seconds, 1e-9):,.0f} clusters/s)"
    )
