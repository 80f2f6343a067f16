"""Plot style, the experiment label, new figures, and :func:`save`, the one function that writes figures.

Drawing functions in :mod:`calohls.plots` take an ``ax`` and return their artists; they never create, save or
close figures. Make figures with :func:`new_figure` (a plain :class:`~matplotlib.figure.Figure`, not registered
with pyplot, so nothing global is touched and no display is needed) and write them with :func:`save`, which
also closes them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib as mpl
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from calohls.errors import ConfigError

try:
    import mplhep
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"calohls.plots needs matplotlib, mplhep and hist ({err}); install them with: pip install 'calohls[plot]'"
    ) from err

__all__ = [
    "DEFAULT_EXTRA",
    "FORMATS",
    "experiment_label",
    "new_figure",
    "save",
    "style_context",
    "use_style",
]

#: Secondary text of the experiment label, drawn under "ATLAS Simulation Internal".
DEFAULT_EXTRA = "calohls simulation, μ = 200"

#: File formats :func:`save` writes, by file suffix.
FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}


def use_style() -> None:
    """Apply the ATLAS style (fonts, inward ticks on all sides, colours) to matplotlib's settings.

    Call it once, before drawing (the command line does this). Calling it again is harmless: it re-applies the
    same settings, undoing only changes made to those settings in between. The matplotlib backend is left
    alone: figures made with :func:`new_figure` and written with :func:`save` need no display.
    """
    mplhep.style.use("ATLAS")


@contextlib.contextmanager
def style_context() -> Iterator[None]:
    """The ATLAS style inside a ``with`` block only; matplotlib's settings are restored on leaving it."""
    with mpl.rc_context():
        use_style()
        yield


def new_figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    figsize: tuple[float, float] | None = None,
    **subplots_kw: Any,
) -> tuple[Figure, Any]:
    """A new figure with a grid of axes, independent of pyplot (it never shows in ``pyplot.get_fignums()``).

    Args:
        nrows: Rows of axes.
        ncols: Columns of axes.
        figsize: Width and height in inches; default from the style (8 × 6 in the ATLAS style) times the grid.
        **subplots_kw: Passed to :meth:`matplotlib.figure.Figure.subplots` (``sharex``, ``gridspec_kw``, ...).

    Returns:
        The figure and its axes: one :class:`~matplotlib.axes.Axes` for a 1 × 1 grid, else an array of them.
    """
    if figsize is None:
        width, height = mpl.rcParams["figure.figsize"]
        figsize = (width * ncols, height * nrows)
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)  # a canvas that can measure text, so labels are placed before the figure is saved
    axes = fig.subplots(nrows, ncols, **subplots_kw)
    return fig, axes


def experiment_label(
    ax: Axes,
    text: str = "Simulation",
    extra: str | None = DEFAULT_EXTRA,
    *,
    exp: str = "calohls",
    loc: int = 4,
    **kwargs: Any,
) -> tuple[Text, ...]:
    """Draw the experiment label in the ATLAS layout: ``exp`` in bold followed by ``text``, with ``extra`` below.

    The default names calohls, not ATLAS: the built-in data are calohls's own simulation. On figures of ATLAS
    samples pass ``exp="ATLAS", text="Simulation Internal"``.

    Draw it after the data (and after setting axis limits), so that it is placed on the final axes.

    Args:
        ax: The axes to label.
        text: Status text after the experiment name, e.g. ``"Simulation"``; written exactly as given.
        extra: Secondary line under the label, e.g. the sample; ``None`` or ``""`` for none.
        loc: Layout of the label, as in mplhep: 4 (top left, secondary line below) is the ATLAS one.
        **kwargs: Passed to mplhep's ATLAS label (``fontsize``, ...).

    Returns:
        The text artists drawn (the experiment name, the status text and, when given, the secondary line).
    """
    texts = mplhep.label.exp_label(exp=exp, llabel=text, rlabel=extra or "", loc=loc, ax=ax, **kwargs)
    return tuple(t for t in texts if t is not None and t.get_text())


def save(fig: Figure, path: str | os.PathLike[str], *, dpi: float = 150) -> Path:
    """Write ``fig`` to ``path`` and close it; the only function of calohls that writes figures.

    The file is written to a temporary file in the same folder and then renamed over ``path``, so ``path``
    never holds a partly written figure; an existing file is replaced. Missing parent folders are created. The
    figure is closed (and released by pyplot, if it was made there) even when writing fails.

    Args:
        fig: The figure.
        path: Output file; the suffix picks the format (``.png``, ``.pdf`` or ``.svg``).
        dpi: Resolution of PNG output in dots per inch.

    Returns:
        The path written.

    Raises:
        ConfigError: the suffix is not one of :data:`FORMATS` or ``dpi`` is not positive.
    """
    path = Path(path)
    try:
        fmt = FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ConfigError(
                f"cannot tell the figure format from {path.name!r}; end the file name in one of {sorted(FORMATS)}"
            )
        if not dpi > 0:
            raise ConfigError(f"dpi={dpi!r} must be a positive number, e.g. 150")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        # os.open with mode 0o666 keeps the permissions of the final file to those the umask allows.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as fh:
                fig.savefig(fh, format=fmt, dpi=dpi)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    finally:
        _close(fig)
    return path


def _close(fig: Figure) -> None:
    """Release ``fig``: drop it from pyplot's figure list when pyplot made it (a figure of its own needs nothing)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)
