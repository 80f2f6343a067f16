"""Files written safely: to a temporary sibling first, renamed onto the target only when complete.

Nothing calohls writes is ever half-written at its final path, and an existing output is never replaced unless the
caller says so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from calohls.errors import CalohlsError, ConfigError, FileExistsRefusedError, InputFileError

__all__ = [
    "atomic_folder",
    "atomic_output",
    "check_output",
    "commit",
    "discard",
    "partial_path",
    "reading",
    "unreadable",
    "write_text_atomic",
]


def partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def check_output(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise ConfigError(f"output {path} is a directory; give the path of a file")
    if path.exists() and not overwrite:
        raise FileExistsRefusedError(path)


def discard(partial: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()


def commit(partial: Path, path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:  # appeared while we were writing
        discard(partial)
        raise FileExistsRefusedError(path)
    os.replace(partial, path)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Write a file atomically: yield a temporary sibling path that replaces ``path`` on a clean exit.

    The parent folder is created. On an exception the temporary file is removed and ``path`` is left
    untouched.

    Args:
        path: Final output path.
        overwrite: Replace an existing ``path``; without it an existing output is an error.

    Yields:
        The temporary path to write to.

    Raises:
        FileExistsRefusedError: ``path`` exists and ``overwrite`` is False (checked before any writing).
    """
    path = Path(path)
    check_output(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    try:
        yield partial
    except BaseException:
        discard(partial)
        raise
    commit(partial, path, overwrite)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder atomically: yield an empty temporary sibling that replaces ``path`` on a clean exit.

    On an exception the temporary folder is removed and ``path`` is left untouched; an existing ``path`` is
    replaced only with ``overwrite`` (checked before any work).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsRefusedError(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} exists and is not a folder; choose another output folder")
    staging = path.with_name(f".{path.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if path.exists():
        old = path.with_name(f".{path.name}.replaced")
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
        staging.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, overwrite: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically (replacing an existing file unless ``overwrite`` is False)."""
    with atomic_output(path, overwrite=overwrite) as partial:
        partial.write_text(text)
    return Path(path)


def unreadable(path: str | os.PathLike[str], kind: str, exc: BaseException, hint: str) -> InputFileError:
    """The one-line error for a file that cannot be read as ``kind``: what failed, and ``hint`` on how to fix it."""
    reason = " ".join(str(exc).split())[:160] or exc.__class__.__name__
    return InputFileError(f"cannot read {path} as {kind} ({exc.__class__.__name__}: {reason}); {hint}")


@contextlib.contextmanager
def reading(
    path: str | os.PathLike[str], kind: str, hint: str, catch: tuple[type[BaseException], ...] = (Exception,)
) -> Iterator[None]:
    """Turn low-level read failures (``catch``) inside the block into :func:`unreadable` errors naming ``path``."""
    try:
        yield
    except CalohlsError:
        raise
    except catch as exc:
        raise unreadable(path, kind, exc, hint) from None
