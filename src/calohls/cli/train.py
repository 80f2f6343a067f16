"""``calohls train``: fit a DeepSets calibration on a cluster file into a run folder."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from calohls.cli.options import default, fitting_options, network_options
from calohls.config import TrainConfig, load_config
from calohls.files import refuse_inputs_inside

__all__ = ["train_command"]


@click.command("train", short_help="Train a DeepSets calibration on a cluster file.")
@click.argument("data", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--output", "run_dir", type=click.Path(path_type=Path), required=True, help="Run folder to write.")
@network_options(TrainConfig)
@click.option(
    "--epochs", type=int, help=f"Most epochs (early stopping usually ends sooner). {default(TrainConfig, 'epochs')}"
)
@fitting_options(TrainConfig, "Initial learning rate.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="YAML file of training options (calohls.config.TrainConfig); command-line options override it.",
)
@click.option("--overwrite", is_flag=True, help="Replace the run folder if it exists.")
@click.option("--hide-progress", is_flag=True, help="Do not show the progress bar.")
def train_command(
    data: Path,
    run_dir: Path,
    preset: str | None,
    phi: str | None,
    f_widths: str | None,
    max_cells: int | None,
    epochs: int | None,
    batch_size: int | None,
    learning_rate: float | None,
    seed: int | None,
    max_clusters: int | None,
    config_path: Path | None,
    overwrite: bool,
    hide_progress: bool,
) -> None:
    """Train a DeepSets network that regresses log10(E_true) of the clusters in DATA from their cells, and save
    the model, the feature scaling, the split, the history and the resolved options in the run folder.

    \b
    Examples:
      calohls train data/clusters.h5 -o runs/medium
      calohls train data/clusters.h5 -o runs/large --preset large --epochs 60
      calohls train data/clusters.h5 -o runs/custom --phi 48,48 --f 32 --max-cells 32
    """
    config = load_config(
        TrainConfig,
        config_path,
        model={"preset": preset, "phi": phi, "f": f_widths, "max_cells": max_cells},
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        max_clusters=max_clusters,
    )
    refuse_inputs_inside(run_dir, (data, config_path), overwrite)
    from calohls.cli.progress import epoch_bar
    from calohls.model.train import train

    with epoch_bar(config.epochs, "training", hide=hide_progress) as on_epoch:
        result = train(data, run_dir, config, overwrite=overwrite, on_epoch=on_epoch)
    click.echo(
        f"trained {config.model.phi_widths}→{config.model.f_widths} on {result.n_train:,} clusters "
        f"({result.n_val:,} validation, {result.n_test:,} test) in {result.seconds:.0f} s: best epoch "
        f"{result.best_epoch} of {result.epochs}, validation loss {result.best_val_loss:.5f}; wrote {run_dir}"
    )
    if result.closure is not None:
        click.echo(result.closure.message())
    if not result.convergence.converged:
        click.echo(f"warning: {result.convergence.message}", err=True)
    click.echo(f"next: calohls evaluate {shlex.quote(str(run_dir))}", err=True)
