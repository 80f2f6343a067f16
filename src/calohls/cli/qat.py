"""``calohls qat``: quantization-aware training of a DeepSets calibration with HGQ2 into a run folder."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from calohls.cli.options import default, fitting_options, network_options
from calohls.config import QATConfig, load_config
from calohls.files import refuse_inputs_inside

__all__ = ["qat_command"]


@click.command("qat", short_help="Quantization-aware training (HGQ2) of a DeepSets calibration.")
@click.argument("data", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--output", "run_dir", type=click.Path(path_type=Path), required=True, help="Run folder to write.")
@network_options(QATConfig)
@click.option(
    "--epochs",
    type=int,
    help=f"Most epochs: the beta ramp, then training at --beta-end. {default(QATConfig, 'epochs')}",
)
@click.option(
    "--beta-start",
    type=float,
    help=f"Weight of EBOPs in the loss at the first epoch. {default(QATConfig, 'beta_start')}",
)
@click.option(
    "--beta-end", type=float, help=f"Weight of EBOPs in the loss after the ramp. {default(QATConfig, 'beta_end')}"
)
@fitting_options(QATConfig, "Learning rate.")
@click.option(
    "--select",
    type=click.Choice(["loss", "ebops"]),
    help="Pareto checkpoint kept as the model: best validation loss, or fewest EBOPs within --max-loss-increase "
    "of it. [default: ebops]",
)
@click.option(
    "--max-loss-increase",
    type=float,
    help=f"Relative loss increase --select ebops accepts. {default(QATConfig, 'max_loss_increase')}",
)
@click.option(
    "--init-from",
    type=click.Path(path_type=Path, file_okay=False),
    help="Float run (calohls train, same size and cells) whose weights and feature scaling start the QAT.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="YAML file of QAT options (calohls.config.QATConfig); command-line options override it.",
)
@click.option("--overwrite", is_flag=True, help="Replace the run folder if it exists.")
@click.option("--hide-progress", is_flag=True, help="Do not show the progress bar.")
def qat_command(
    data: Path,
    run_dir: Path,
    preset: str | None,
    phi: str | None,
    f_widths: str | None,
    max_cells: int | None,
    epochs: int | None,
    beta_start: float | None,
    beta_end: float | None,
    batch_size: int | None,
    learning_rate: float | None,
    seed: int | None,
    max_clusters: int | None,
    select: str | None,
    max_loss_increase: float | None,
    init_from: Path | None,
    config_path: Path | None,
    overwrite: bool,
    hide_progress: bool,
) -> None:
    """Train a DeepSets calibration on the clusters in DATA with trainable fixed-point bit widths (HGQ2), paying
    beta × EBOPs (the estimated FPGA cost) in the loss while beta rises. Keeps every checkpoint on the Pareto front
    of validation loss vs EBOPs, and the selected one as the run's model, in a run folder that `calohls evaluate`
    and `calohls firmware` read.

    \b
    Examples:
      calohls qat data/clusters.h5 -o runs/qat-small
      calohls qat data/clusters.h5 -o runs/qat-tiny --preset tiny --beta-end 1e-6
      calohls qat data/clusters.h5 -o runs/qat-best --select loss --epochs 200
      calohls qat data/clusters.h5 -o runs/qat-tiny --preset tiny --init-from runs/tiny
    """
    config = load_config(
        QATConfig,
        config_path,
        model={"preset": preset, "phi": phi, "f": f_widths, "max_cells": max_cells},
        epochs=epochs,
        beta_start=beta_start,
        beta_end=beta_end,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        max_clusters=max_clusters,
        select=select,
        max_loss_increase=max_loss_increase,
        init_from=init_from,
    )
    refuse_inputs_inside(run_dir, (data, config_path, config.init_from), overwrite)
    from calohls.cli.progress import epoch_bar
    from calohls.model.qat import train_qat

    with epoch_bar(config.epochs, "QAT", hide=hide_progress) as on_epoch:
        result = train_qat(data, run_dir, config, overwrite=overwrite, on_epoch=on_epoch)
    click.echo(
        f"QAT {config.model.phi_widths}→{config.model.f_widths} on {result.n_train:,} clusters "
        f"({result.n_val:,} validation, {result.n_test:,} test) in {result.seconds:.0f} s, {result.epochs} epochs: "
        f"selected epoch {result.best_epoch}, validation loss {result.best_val_loss:.5f}, {result.ebops:,} EBOPs "
        f"({result.pareto_points} Pareto points); wrote {run_dir}"
    )
    quoted = shlex.quote(str(run_dir))
    click.echo(f"next: calohls evaluate {quoted}  /  calohls firmware {quoted}", err=True)
