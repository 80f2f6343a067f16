"""Progress bars of the commands: on stderr, and only where someone watches them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from calohls.model.train import EpochEnd, OnEpoch

__all__ = ["epoch_bar", "progress_bar"]


def progress_bar(*columns: str | ProgressColumn, hide: bool = False, **kwargs: Any) -> Progress:
    """A rich progress bar on stderr, shown only on an interactive terminal and not with ``hide``.

    Redirected to a file or a pipe, rich would print the bar's last state and a blank line when it stops, also
    when the command fails; there the single ``error:`` line must be all that stderr holds, so no bar is drawn.
    """
    console = Console(stderr=True)
    return Progress(*columns, console=console, disable=hide or not console.is_interactive, **kwargs)


@contextlib.contextmanager
def epoch_bar(epochs: int, label: str, *, hide: bool = False) -> Iterator[OnEpoch]:
    """One progress bar over the epochs of a training; yields the ``on_epoch`` callback that advances it.

    The status shows the loss and validation loss, and the EBOPs when the logs carry them (QAT).
    """
    bar = progress_bar(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epochs  {task.fields[status]}"),
        TimeElapsedColumn(),
        hide=hide,
    )
    task = bar.add_task(label, total=epochs, status="")

    def on_epoch(end: EpochEnd) -> None:
        logs = end.logs
        if "closure_round" in logs:  # after the fit: the rounds that close π0 and π± separately
            bar.update(task, status=f"closing π0 and π± medians: round {logs['closure_round']:.0f} of "
                                    f"{logs['closure_rounds']:.0f}")  # fmt: skip
            return
        status = f"loss {logs.get('loss', float('nan')):.4f}  val {logs.get('val_loss', float('nan')):.4f}"
        if "ebops" in logs:
            status += f"  EBOPs {logs['ebops']:,.0f}"
        bar.update(task, completed=end.epoch, status=status)

    with bar:
        yield on_epoch
