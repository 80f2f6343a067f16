"""Options that ``calohls train`` and ``calohls qat`` share, with each ``[default: …]`` read from the config model
that holds it (never typed twice)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from pydantic import BaseModel

from calohls.config import PRESETS, TrainConfig

__all__ = ["default", "fitting_options", "network_options"]


def default(config: type[BaseModel], path: str) -> str:
    """``[default: VALUE]`` for the field ``path`` (dotted, e.g. ``model.max_cells``) of ``config``'s defaults."""
    value: Any = config()
    for part in path.split("."):
        value = getattr(value, part)
    return f"[default: {value}]"


def _all(*options: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def decorate(command: Any) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def network_options(config: type[TrainConfig]) -> Callable[[Any], Any]:
    """``--preset``, ``--phi``, ``--f`` and ``--max-cells``; the examples are the default preset's widths."""
    phi, f = (",".join(map(str, w)) for w in PRESETS[config().model.preset])
    preset = f"Named network size. {default(config, 'model.preset')}"
    return _all(
        click.option("--preset", type=click.Choice(list(PRESETS)), help=preset),
        click.option("--phi", metavar="WIDTHS", help=f"Φ layer widths, e.g. {phi} (overrides the preset)."),
        click.option("--f", "f_widths", metavar="WIDTHS", help=f"F layer widths, e.g. {f} (overrides the preset)."),
        click.option(
            "--max-cells",
            type=int,
            help=f"Cells per cluster the network sees, most energetic first. {default(config, 'model.max_cells')}",
        ),
    )


def fitting_options(config: type[TrainConfig], learning_rate: str) -> Callable[[Any], Any]:
    """``--batch-size``, ``--learning-rate`` (described as ``learning_rate``), ``--seed`` and ``--max-clusters``."""
    seed = f"Seed of the split, the initial weights and the batch order. {default(config, 'seed')}"
    return _all(
        click.option("--batch-size", type=int, help=f"Clusters per gradient step. {default(config, 'batch_size')}"),
        click.option("--learning-rate", type=float, help=f"{learning_rate} {default(config, 'learning_rate')}"),
        click.option("--seed", type=int, help=seed),
        click.option("--max-clusters", type=int, help="Use at most this many clusters of DATA."),
    )
