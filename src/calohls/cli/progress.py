"""Progress bars of the commands: on stderr, and only where someone watches them."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import Progress, ProgressColumn

__all__ = ["progress_bar"]


def progress_bar(*columns: str | ProgressColumn, hide: bool = False, **kwargs: Any) -> Progress:
    """A rich progress bar on stderr, shown only on an interactive terminal and not with ``hide``.

    Redirected to a file or a pipe, rich would print the bar's last state and a blank line when it stops, also
    when the command fails; there the single ``error:`` line must be all that stderr holds, so no bar is drawn.
    """
    console = Console(stderr=True)
    return Progress(*columns, console=console, disable=hide or not console.is_interactive, **kwargs)
