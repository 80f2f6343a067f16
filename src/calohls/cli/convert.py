"""``calohls convert``: bring ATLAS MLTree ROOT ntuples into one calohls HDF5 cluster file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from calohls.cli.progress import progress_bar

if TYPE_CHECKING:
    from calohls.data.convert import ConvertResult

__all__ = ["convert_command"]


def _report(result: ConvertResult, seconds: float) -> list[str]:
    """The lines printed after a conversion: what was written, dropped, flagged and skipped."""
    c = result.counts
    n_files = len(result.inputs)
    lines = [
        f"wrote {c.kept:,} clusters ({c.events:,} events, {n_files} file{'s' if n_files != 1 else ''}) "
        f"to {result.output} in {seconds:.1f} s"
    ]
    drops = [f"{c.no_cells:,} without cells"] + [f"{n:,} by {rule}" for rule, n in c.selected_out.items()]
    lines.append(f"read {c.clusters:,} clusters; dropped {', '.join(drops)}")
    if c.calib_tot_nonpositive:
        lines.append(
            f"warning: {c.calib_tot_nonpositive:,} written clusters have ENG_CALIB_TOT <= 0 (moment missing: -1), "
            "no calibration target; drop them with --select truth_matched"
        )
    hits = sorted({tuple(i.hit_branches) for i in result.inputs})
    for found in hits:
        files = sum(1 for i in result.inputs if tuple(i.hit_branches) == found)
        what = " + ".join(found) if found else "no hit branches (cell e_true = 0)"
        lines.append(f"cell e_true from {what} ({files} file{'s' if files != 1 else ''})")
    noise = sorted({i.noise_branch for i in result.inputs})
    lines.append(f"cell noise from {', '.join(noise)}")
    for s in result.skipped:
        lines.append(f"skipped {s.path}: {s.reason}")
    return lines


@click.command("convert", short_help="Convert ATLAS MLTree ROOT ntuples into one calohls HDF5 cluster file.")
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True, help="HDF5 file to write."
)
@click.option(
    "--geometry",
    type=click.Path(path_type=Path, dir_okay=False),
    help="ROOT file with the cell geometry tree (e.g. cell_geo.root), for inputs without their own.",
)
@click.option(
    "--branch-map",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="YAML file of tree/branch names and unit scales (defaults: the MLTree names; GeV energies, MeV noise, mm).",
)
@click.option(
    "--max-cells",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Cells stored per cluster, highest energy first.",
)
@click.option(
    "--step-size",
    default="100MB",
    show_default=True,
    help="Events read at a time: a size of the branches in memory (100MB, as uproot counts) or a number of events.",
)
@click.option(
    "--select",
    "select",
    multiple=True,
    metavar="RULE",
    help="Keep only clusters passing RULE (repeatable): e_em>1, 0.5<e_em<500, abs_eta<2.5, e_true>0, truth_matched.",
)
@click.option(
    "--skip-bad", is_flag=True, help="Leave out inputs that cannot be read, and list them, instead of failing."
)
@click.option("--no-unit-check", is_flag=True, help="Accept implausible median cluster energies or cell noise.")
@click.option("--overwrite", is_flag=True, help="Replace the output file if it exists.")
@click.option("--hide-progress", is_flag=True, help="Do not show the progress display.")
def convert_command(
    sources: tuple[str, ...],
    output: Path,
    geometry: Path | None,
    branch_map: Path | None,
    max_cells: int,
    step_size: str,
    select: tuple[str, ...],
    skip_bad: bool,
    no_unit_check: bool,
    overwrite: bool,
    hide_progress: bool,
) -> None:
    """Convert the MLTree ROOT files SOURCES (files, folders of .root files, or quoted glob patterns; each an
    event tree with per-cluster and per-cell branches, and a cell geometry tree unless --geometry gives it) into
    the one calohls HDF5 file OUTPUT that `calohls train` and the later stages read.

    \b
    Examples:
      calohls convert user.pions.mltree.root -o data/pions.h5
      calohls convert job1.root job2.root -o data/pions.h5
      calohls convert downloads/user.pions/ --geometry cell_geo.root -o data/pions.h5 --skip-bad
      calohls convert 'jets/*.root' -o data/jets.h5 --select 'e_em>0.5' --select 'abs_eta<3' --max-cells 128
    """
    from calohls.data.convert import ConvertProgress, convert_mltree, parse_step_size
    from calohls.files import refuse_inputs_inside

    refuse_inputs_inside(output, (*sources, branch_map, geometry), overwrite)
    from calohls.data.root import BranchMap
    from calohls.data.selection import ClusterSelection

    branches = BranchMap.from_yaml(branch_map) if branch_map else BranchMap()
    if no_unit_check:
        branches = branches.model_copy(update={"check_units": False})
    selection = ClusterSelection.parse(select)
    step = parse_step_size(step_size)
    start = time.perf_counter()
    with progress_bar(
        TextColumn("converting file {task.fields[file]}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} events, {task.fields[clusters]:,} clusters"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        hide=hide_progress,
        transient=True,
    ) as bar:
        task = bar.add_task("convert", total=None, file="", clusters=0)

        def show(p: ConvertProgress) -> None:
            file = f"{p.file_index + 1}/{p.n_files}"
            bar.update(task, completed=p.events_done, total=p.events_total, file=file, clusters=p.clusters)

        result = convert_mltree(
            sources,
            output,
            branches=branches,
            geometry=geometry,
            max_cells=max_cells,
            step_size=step,
            selection=selection,
            skip_bad=skip_bad,
            overwrite=overwrite,
            progress=show,
        )
    for line in _report(result, time.perf_counter() - start):
        click.echo(line)
