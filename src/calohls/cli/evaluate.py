"""``calohls evaluate``: response and resolution of a trained calibration against the reference methods."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich import box
from rich.console import Console
from rich.table import Table

from calohls.physics.response import DEFAULT_BOOTSTRAP, QUANTILE_PAIRS

if TYPE_CHECKING:
    from calohls.physics.evaluate import Evaluation

__all__ = ["evaluate_command"]


@click.command("evaluate", short_help="Response and resolution of a trained run vs EM, LCW-like, GBDT and oracle.")
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
@click.option(
    "--bootstrap",
    type=click.IntRange(0, 10_000),
    default=DEFAULT_BOOTSTRAP,
    show_default=True,
    help="Bootstrap resamples of the 68 % intervals of every median and resolution; 0 computes none.",
)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Seed of the fits and bootstrap.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier evaluation (RUN_DIR/eval).")
@click.option("--json", "as_json", is_flag=True, help="Print RUN_DIR/eval/metrics.json on stdout instead of tables.")
def evaluate_command(
    run_dir: Path,
    data: Path | None,
    per_decade: int,
    quantiles: str,
    bootstrap: int,
    seed: int,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Evaluate the run RUN_DIR on its test clusters: median response E_pred/E_true and resolution, with 68 %
    bootstrap intervals, in log bins of E_true, for the DeepSets network and the reference methods fitted on the
    run's training clusters (EM scale, LCW-like weighting, gradient-boosted trees on cluster moments, and the EM
    scale calibrated per true particle type), for all clusters, π0 and π±. Prints a verdict per condition of a
    good calibration. Writes RUN_DIR/eval/metrics.json and the figures (PNG).

    \b
    Example:
      calohls evaluate runs/medium
    """
    from calohls.files import refuse_inputs_inside
    from calohls.stages.evaluate import evaluate_and_draw

    refuse_inputs_inside(run_dir / "eval", (data,), overwrite)

    result = evaluate_and_draw(
        run_dir,
        data=data,
        per_decade=per_decade,
        quantiles=QUANTILE_PAIRS[quantiles],
        overwrite=overwrite,
        bootstrap=bootstrap,
        seed=seed,
    )
    if as_json:
        click.echo((run_dir / "eval" / "metrics.json").read_text())
        return
    _print_tables(result)
    click.echo(f"wrote {run_dir / 'eval'}")


def _print_tables(result: Evaluation) -> None:
    from calohls.physics.methods import GROUPS, METHODS
    from calohls.report.render import value_with_error

    console = Console()
    methods = ", ".join(f"{m.short}: {m.label}" for m in METHODS.values())
    caption = f"E_true in GeV; n: test clusters; {methods}; 0.173(5) = 0.173 ± 0.005 (68 % bootstrap)"
    for group, by_method in result.tables.items():
        first = next(iter(by_method.values()))
        for kind in ("median", "resolution"):
            title = "median response E_pred/E_true" if kind == "median" else first.resolution_label
            table = Table(title=f"{GROUPS[group][0]}: {title}", caption=caption, box=box.SIMPLE_HEAD, pad_edge=False)
            table.add_column("E_true", no_wrap=True)
            table.add_column("n", justify="right", no_wrap=True, min_width=5)
            for m in by_method:
                table.add_column(METHODS[m].short, justify="right", no_wrap=True, min_width=9)
            for i, count in enumerate(first.counts):
                cells = [f"{first.edges[i]:.3g}–{first.edges[i + 1]:.3g}", f"{count:,}"]
                cells += [
                    value_with_error(float(getattr(t, kind)[i]), float(getattr(t, f"{kind}_err")[i]))
                    for t in by_method.values()
                ]
                table.add_row(*cells)
            console.print(table)
        for condition in result.checks[group].conditions.values():
            line = f"{METHODS['deepsets'].label}, {GROUPS[group].label}: {condition.verdict}"
            console.print(line, soft_wrap=True, markup=False)
