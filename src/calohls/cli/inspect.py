"""``calohls inspect``: what a cluster file holds, and the EM-scale response per particle type."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml
from rich.console import Console
from rich.table import Table

from calohls.physics.response import QUANTILE_PAIRS, log_bins

if TYPE_CHECKING:
    from calohls.physics.summary import FileSummary, HitCoverage

__all__ = ["inspect_command"]


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "–" if x is None or not math.isfinite(x) else format(x, fmt)


def _coverage_line(cov: HitCoverage) -> str:
    if not cov.has_hits:
        return "cell calibration hits: none (cell e_true is 0), so the cells cover none of ENG_CALIB_TOT"
    if cov.median is None:
        return "cell calibration hits cover: – (no cluster with ENG_CALIB_TOT > 0)"
    return (
        f"cell calibration hits cover a median {cov.median:.3f} of ENG_CALIB_TOT "
        f"(16–84 %: {cov.q16:.3f}–{cov.q84:.3f}; {cov.clusters:,} clusters with ENG_CALIB_TOT > 0 "
        f"of the first {cov.read:,}; stored cells only)"
    )


def _stored_config(path: Path) -> dict[str, Any]:
    """The generating config stored in a cluster file: free-form YAML, printed back as it was written.

    Raises:
        InputFileError: the file cannot be read, or holds no config (not written by ``calohls simulate``).
    """
    from calohls.data.convert import detect_format
    from calohls.data.hdf5 import open_clusters
    from calohls.errors import InputFileError

    if detect_format(path) == "root":
        raise InputFileError(f"{path} is a ROOT file, which holds no generating config; inspect it without --config")
    with open_clusters(path) as f:
        config = f.config
    if config is None:
        raise InputFileError(
            f"{path} holds no generating config (it was not written by 'calohls simulate'); inspect it without --config"
        )
    return dict(config)


def _print_summary(f: FileSummary, console: Console) -> None:
    s, trunc = f.scalars, f.scalars.truncated
    console.print(
        f"[bold]{f.path}[/bold]: "
        f"{'MLTree ROOT' if f.format == 'root' else 'schema version ' + str(f.schema_version)}, "
        f"{s.n_clusters:,} clusters "
        f"in {s.n_events:,} events, up to {s.max_cells} cells stored per cluster",
        soft_wrap=True,
    )
    console.print(
        f"truncated clusters (more than {s.max_cells} cells): {trunc.clusters:,} "
        f"({100 * trunc.fraction:.2f} %), largest has {trunc.max_cells_total} cells",
        soft_wrap=True,
    )
    console.print(_coverage_line(f.hit_coverage), soft_wrap=True)

    particles = Table(title="Clusters per particle")
    for name, justify in (
        ("particle", "left"),
        ("PDG id", "right"),
        ("clusters", "right"),
        ("share", "right"),
    ):
        particles.add_column(name, justify=justify)
    for name, p in s.particles.items():
        particles.add_row(name, str(p.pdg), f"{p.clusters:,}", f"{100 * p.fraction:.1f} %")
    console.print(particles)

    energy = Table(title="Energies [GeV]")
    for name in ("quantity", "min", "median", "max"):
        energy.add_column(name, justify="left" if name == "quantity" else "right")
    for field, r in s.energy.items():
        energy.add_row(field, *(_num(r and getattr(r, k), ".4g") for k in ("min", "median", "max")))
    console.print(energy)

    resp = s.response
    for g in resp.groups.values():
        table = Table(title=f"{g.label} response {resp.quantity} ({g.clusters:,} clusters)")
        for name in ("E_true [GeV]", "clusters", "median", resp.resolution_label):
            table.add_column(name, justify="right")
        t = g.table
        for i, count in enumerate(t.counts):
            table.add_row(
                f"{t.edges[i]:.3g} – {t.edges[i + 1]:.3g}",
                f"{int(count):,}",
                _num(float(t.median[i])),
                _num(float(t.resolution[i])),
            )
        console.print(table)
    if resp.groups:
        min_count = next(iter(resp.groups.values())).table.min_count
        console.print(f"bins with fewer than {min_count} clusters show –")


@click.command("inspect", short_help="Summarise a cluster file: counts, energies, EM-scale response.")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout instead of tables.")
@click.option(
    "--config",
    "show_config",
    is_flag=True,
    help="Print only the generating config stored in FILE, as YAML (as JSON with --json); "
    "usable as `calohls simulate --config`.",
)
@click.option(
    "--branch-map",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="YAML file of tree/branch names and unit scales, for a ROOT FILE not in the ATLAS MLTree layout.",
)
@click.option(
    "--geometry",
    type=click.Path(path_type=Path, dir_okay=False),
    help="ROOT file with the cell geometry tree (e.g. cell_geo.root), for a ROOT FILE without its own.",
)
@click.option("--e-min", type=float, default=0.5, show_default=True, help="Lower edge of the E_true bins, GeV.")
@click.option("--e-max", type=float, default=500.0, show_default=True, help="Upper edge of the E_true bins, GeV.")
@click.option(
    "--per-decade", type=click.IntRange(1, 20), default=3, show_default=True, help="E_true bins per factor of ten."
)
@click.option(
    "--quantiles",
    type=click.Choice(list(QUANTILE_PAIRS)),
    default="16-84",
    show_default=True,
    help="Quantile pair (in %) of the resolution (q_hi - q_lo) / median.",
)
@click.option(
    "--min-count",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Fewest clusters for a bin to get a response value.",
)
def inspect_command(
    file: Path,
    as_json: bool,
    show_config: bool,
    branch_map: Path | None,
    geometry: Path | None,
    e_min: float,
    e_max: float,
    per_decade: int,
    quantiles: str,
    min_count: int,
) -> None:
    """Summarise the cluster file FILE (calohls HDF5 or ATLAS MLTree ROOT): counts per particle, energy
    ranges, truncation, the share of E_true (ENG_CALIB_TOT) that the stored cells' calibration hits cover, and the
    EM-scale response E_EM/E_true per particle type in log bins of E_true (median and resolution).

    \b
    Examples:
      calohls inspect data/clusters.h5
      calohls inspect data/clusters.h5 --json
      calohls inspect data/clusters.h5 --config > sim.yaml
      calohls inspect user.mltree.root --branch-map branches.yaml
      calohls inspect job1.events.root --geometry cell_geo.root
    """
    from calohls.data.root import BranchMap
    from calohls.physics.summary import summarize_file

    if show_config:
        config = _stored_config(file)
        click.echo(json.dumps(config, indent=2) if as_json else yaml.safe_dump(config, sort_keys=False), nl=as_json)
        return

    summary = summarize_file(
        file,
        bins=log_bins(e_min, e_max, per_decade),
        quantiles=QUANTILE_PAIRS[quantiles],
        min_count=min_count,
        branches=BranchMap.from_yaml(branch_map) if branch_map else None,
        geometry=geometry,
    )
    if as_json:
        click.echo(json.dumps(summary.to_json(), indent=2, allow_nan=False))
    else:
        _print_summary(summary, Console())
