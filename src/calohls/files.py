"""Files written safely: to a temporary sibling first, renamed onto the target only when complete.

Nothing calohls writes is ever half-written at its final path, and an existing output is never replaced unless the
caller says so.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from calohls.errors import CalohlsError, ConfigError, FileExistsRefusedError, InputFileError, OutputError

__all__ = [
    "WRITE_ERRNOS",
    "atomic_folder",
    "atomic_output",
    "check_output",
    "check_parent",
    "commit",
    "discard",
    "partial_path",
    "pid_alive",
    "reading",
    "refuse_inputs_inside",
    "remove_stale_partials",
    "unreadable",
    "unwritable",
    "why_not_a_file",
    "write_text_atomic",
    "writing",
]

log = logging.getLogger(__name__)

#: errno values that only writing raises: a full or read-only file system, a file too large for it.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})

_WRITE_HINTS = {
    errno.ENOSPC: "free space or choose another output path",
    errno.EDQUOT: "free space (the disk quota is used up) or choose another output path",
    errno.EROFS: "the file system is read-only; choose an output path on a writable one",
    errno.EFBIG: "the file is too large for this file system; choose another output path",
    errno.EACCES: "choose an output folder you may write to",
    errno.EPERM: "choose an output folder you may write to",
    errno.ENOTDIR: "a parent of it is not a folder; choose another output path",
}


def unwritable(path: str | os.PathLike[str], exc: OSError) -> OutputError:
    """The one-line error for an output that cannot be written: the path, the system's reason, its errno name and
    what to do (e.g. ``cannot write runs/x: No space left on device (ENOSPC); free space or choose ...``)."""
    code = errno.errorcode.get(exc.errno) if isinstance(exc.errno, int) else None
    reason = exc.strerror or " ".join(str(exc).split())[:160] or exc.__class__.__name__
    hint = _WRITE_HINTS.get(exc.errno, "check the output path, its permissions and the free space")  # type: ignore[arg-type]
    return OutputError(f"cannot write {path}: {reason}{f' ({code})' if code else ''}; {hint}", path=path, cause=exc)


def _inside(name: object, folder: Path) -> bool:
    return isinstance(name, str | os.PathLike) and Path(os.fspath(name)).is_relative_to(folder)


@contextlib.contextmanager
def writing(path: str | os.PathLike[str], *, staging: Path | None = None) -> Iterator[None]:
    """Turn OS errors of writing ``path`` inside the block into :class:`OutputError` naming ``path``.

    Without ``staging`` the block is taken to only write (create folders and files, rename), so every
    :class:`OSError` is converted. With ``staging`` (the temporary file or folder that becomes ``path``) the block
    may also read inputs: only errors that a write alone raises (:data:`WRITE_ERRNOS`) or that name a path inside
    ``staging`` are converted, so a failing read still reports its own file; an :class:`OutputError` about a file
    inside ``staging`` is said again of ``path`` (users know the output, not its temporary name).
    """
    try:
        yield
    except OutputError as exc:
        if staging is not None and exc.cause is not None and _inside(exc.path, staging):
            raise unwritable(path, exc.cause) from None
        raise
    except CalohlsError:
        raise
    except OSError as exc:
        if staging is None or exc.errno in WRITE_ERRNOS or _inside(exc.filename, staging):
            raise unwritable(path, exc) from None
        raise


def check_parent(path: str | os.PathLike[str]) -> None:
    """Refuse an output path below a regular file (``notes.txt/out.h5``), before any work.

    Raises:
        OutputError: The nearest existing ancestor of ``path`` is not a folder.
    """
    for parent in Path(path).parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(
                    f"cannot write {path}: {parent} is not a folder; choose another output path", path=path
                )
            return


def partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def why_not_a_file(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be read as a file, in words ("not found", "is a folder", "is a symbolic link loop", ...),
    or None if it is a file."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop"
        if path.is_symlink():
            return f"is a symbolic link to {os.readlink(path)}, which does not exist"
        if exc.errno == errno.ENOENT:
            return "not found"
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    return None if stat.S_ISREG(mode) else "is not a regular file"


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary siblings ``.<name>.partial-<pid>`` of ``path`` left by processes that no longer run
    (killed before they could clean up); those of running processes are theirs. Returns what was removed."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.partial-(\d+)")
    removed = []
    with contextlib.suppress(OSError):
        for sibling in path.parent.iterdir():
            match = pattern.fullmatch(sibling.name)
            if match is None or pid_alive(int(match.group(1))):
                continue
            with contextlib.suppress(OSError):
                if sibling.is_dir() and not sibling.is_symlink():
                    shutil.rmtree(sibling)
                else:
                    sibling.unlink()
                removed.append(sibling)
                log.info("removed %s, left by process %s that no longer runs", sibling, match.group(1))
    return removed


def refuse_inputs_inside(output: str | os.PathLike[str], inputs: Iterable[object], overwrite: bool) -> None:
    """Refuse, before any work, to replace an output that holds one of the command's inputs.

    ``--overwrite`` removes the whole output (file or folder) before the new one is put in its place; an input inside
    it would be deleted with it (and the command then fail, or worse, succeed on nothing). Inputs that are None are
    ignored; paths are compared after resolving symbolic links.

    Raises:
        ConfigError: ``overwrite`` is set, ``output`` exists and an input lies inside it (or is it).
    """
    output = Path(output)
    if not overwrite or not output.exists():
        return
    target = output.resolve()
    for item in inputs:
        if item is None:
            continue
        path = Path(os.fspath(item)).resolve()  # type: ignore[arg-type]
        if path == target or path.is_relative_to(target):
            raise ConfigError(
                f"the input {item} lies inside the output {output}, which --overwrite would delete with it; "
                "choose another output path or move the input out of it"
            )


def check_output(path: Path, overwrite: bool) -> None:
    check_parent(path)
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
        OutputError: ``path`` cannot be written (a parent that is not a folder, checked before any writing; a full
            or read-only file system).
    """
    path = Path(path)
    check_output(path, overwrite)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    partial = partial_path(path)
    try:
        with writing(path, staging=partial):
            yield partial
        with writing(path):
            commit(partial, path, overwrite)
    except BaseException:
        discard(partial)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder atomically: yield an empty temporary sibling that replaces ``path`` on a clean exit.

    On an exception the temporary folder is removed and ``path`` is left untouched; an existing ``path`` is
    replaced only with ``overwrite`` (checked before any work). Operating-system errors of writing it become
    :class:`OutputError` naming ``path`` (see :func:`writing`).
    """
    path = Path(path)
    check_parent(path)
    if path.exists() and not overwrite:
        raise FileExistsRefusedError(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} exists and is not a folder; choose another output folder")
    staging = path.with_name(f".{path.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    with writing(path):
        staging.mkdir(parents=True)
    try:
        with writing(path, staging=staging):
            yield staging
        with writing(path):
            _put_folder(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _put_folder(staging: Path, path: Path) -> None:
    """Rename ``staging`` to ``path``, replacing an existing ``path`` (restored if the rename fails)."""
    if not path.exists():
        staging.rename(path)
        return
    old = path.with_name(f".{path.name}.replaced")
    shutil.rmtree(old, ignore_errors=True)
    path.rename(old)
    try:
        staging.rename(path)
    except BaseException:
        old.rename(path)
        raise
    shutil.rmtree(old, ignore_errors=True)


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
