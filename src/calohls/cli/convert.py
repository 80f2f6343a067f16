"""``calohls convert``: bring an ATLAS MLTree ROOT ntuple into a calohls HDF5 cluster file."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

from calohls.cli.progress import progress_bar

__all__ = ["convert_command"]


@click.command("convert", short_help="Convert an ATLAS MLTree ROOT ntuple into a calohls HDF5 cluster file.")
@click.argument("source", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True, help="HDF5 file to write."
)
@click.option(
    "--branch-map",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="YAML file of tree/branch names and unit scales (defaults: the ATLAS MLTree names, MeV and mm).",
)
@click.option(
    "--max-cells",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Cells stored per cluster, highest energy first.",
)
@click.option("--overwrite", is_flag=True, help="Replace the output file if it exists.")
@click.option("--hide-progress", is_flag=True, help="Do not show the progress display.")
def convert_command(
    source: Path, output: Path, branch_map: Path | None, max_cells: int, overwrite: bool, hide_progress: bool
) -> None:
    """Convert the MLTree ROOT file SOURCE (an event tree with per-cluster and per-cell branches, and a cell
    geometry tree) into the calohls HDF5 file OUTPUT that `calohls train` and the later stages read.

    \b
    Examples:
      calohls convert user.pions.mltree.root -o data/pions.h5
      calohls convert ntuple.root --branch-map branches.yaml -o data/pions.h5 --max-cells 128
    """
    from calohls.data.convert import root_to_hdf5
    from calohls.files import refuse_inputs_inside

    refuse_inputs_inside(output, (source, branch_map), overwrite)
    from calohls.data.root import BranchMap

    branches = BranchMap.from_yaml(branch_map) if branch_map else None
    start = time.perf_counter()
    with progress_bar(
        SpinnerColumn(),
        TextColumn("converting: {task.completed:,.0f} clusters"),
        TimeElapsedColumn(),
        hide=hide_progress,
        transient=True,
    ) as bar:
        task = bar.add_task("convert", total=None)
        n = root_to_hdf5(
            source,
            output,
            branches=branches,
            max_cells=max_cells,
            overwrite=overwrite,
            progress=lambda k: bar.advance(task, k),
        )
    click.echo(f"wrote {n:,} clusters from {source} to {output} in {time.perf_counter() - start:.1f} s")
