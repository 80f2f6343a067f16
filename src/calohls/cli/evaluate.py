"""``calohls evaluate``: response and resolution of a trained calibration against the EM scale and LCW-like."""

from __future__ import annotations

import math
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from calohls.physics.response import QUANTILE_PAIRS

__all__ = ["evaluate_command"]


def _fmt(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:.3f}"


@click.command("evaluate", short_help="Response and resolution of a trained run vs EM scale and LCW-like.")
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--data", type=click.Path(path_type=Path, dir_okay=False), help="Cluster file, if it has moved.")
@click.option("--per-decade", type=click.IntRange(1, 20), default=3, show_default=True, help="E_true bins per decade.")
@click.option(
    "--quantiles",
    type=click.Choice(list(QUANTILE_PAIRS)),
    default="16-84",
    show_default=True,
    help="Quantile pair (in %) of the resolution (q_hi - q_lo) / median.",
)
@click.option("--overwrite", is_flag=True, help="Replace an earlier evaluation (RUN_DIR/eval).")
@click.option("--json", "as_json", is_flag=True, help="Print RUN_DIR/eval/metrics.json on stdout instead of tables.")
def evaluate_command(
    run_dir: Path, data: Path | None, per_decade: int, quantiles: str, overwrite: bool, as_json: bool
) -> None:
    """Evaluate the run RUN_DIR on its test clusters: median response E_pred/E_true and resolution in log bins of
    E_true for the DeepSets network, the EM scale and an LCW-like calibration, for all clusters, π0 and π±.
    Writes RUN_DIR/eval/metrics.json and the figures (PNG).

    \b
    Example:
      calohls evaluate runs/medium
    """
    from calohls.files import refuse_inputs_inside
    from calohls.physics.evaluate import GROUPS, METHODS, evaluate_run

    refuse_inputs_inside(run_dir / "eval", (data,), overwrite)

    result = evaluate_run(
        run_dir, data=data, per_decade=per_decade, quantiles=QUANTILE_PAIRS[quantiles], overwrite=overwrite
    )
    if as_json:
        click.echo((run_dir / "eval" / "metrics.json").read_text())
        return
    console = Console()
    short = {"em": "EM", "lcw": "LCW", "deepsets": "DS"}
    for group, by_method in result.tables.items():
        first = next(iter(by_method.values()))
        table = Table(
            title=f"{GROUPS[group][0]}: median response E_pred/E_true, {first.resolution_label}",
            caption="EM: EM scale, LCW: LCW-like weighting, DS: DeepSets",
        )
        table.add_column("E_true [GeV]")
        table.add_column("clusters", justify="right")
        for kind in ("median", "resolution"):
            for method in METHODS:
                table.add_column(f"{kind[:3]}\n{short[method]}", justify="right")
        for i, count in enumerate(first.counts):
            cells = [f"{first.edges[i]:.3g}–{first.edges[i + 1]:.3g}", f"{count:,}"]
            cells += [_fmt(by_method[m].median[i]) for m in METHODS]
            cells += [_fmt(by_method[m].resolution[i]) for m in METHODS]
            table.add_row(*cells)
        console.print(table)
        c = result.checks[group]
        console.print(
            f"DeepSets: median within ±2 % above 1 GeV: {'yes' if c['median_within_2pct_above_1gev'] else 'no'} "
            f"(worst {100 * c['worst_median_deviation_above_1gev']:.1f} %); resolution better than EM scale in "
            f"{c['bins_better_than_em']}/{c['bins']} bins, than LCW-like in {c['bins_better_than_lcw']}/{c['bins']}",
            soft_wrap=True,
        )
    click.echo(f"wrote {run_dir / 'eval'}")
