"""An append-only results store: one JSON line per finished point, written at once and never rewritten.

Each record has a unique ``key``. :meth:`ResultStore.append` writes the whole line with one ``write`` call on a file
opened for appending and syncs it to disk, so a point counts as done exactly when its line is complete. A process
killed mid-write leaves at most one incomplete last line: the next :class:`ResultStore` drops it (the point is then
simply computed again) before appending. Nothing finished is lost or stored twice.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from calohls.config import shorten
from calohls.errors import DataError
from calohls.files import writing

__all__ = ["ResultStore"]

log = logging.getLogger(__name__)


class ResultStore:
    """Finished points of a scan, in ``path`` (JSON lines)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        good_end = 0
        for number, line in enumerate(raw.splitlines(keepends=True), start=1):
            if not line.endswith(b"\n"):
                break  # an incomplete last line: that point was not finished
            try:
                record = json.loads(line)
            except ValueError:
                raise DataError(
                    f"{self.path} has a corrupt line after {len(self._records)} records; move the file away to start"
                    " the scan afresh"
                ) from None
            if not isinstance(record, dict) or not isinstance(record.get("key"), str):
                raise DataError(
                    f"{self.path} line {number} is not a result record (a JSON object with a string 'key'): "
                    f"{shorten(line.decode(errors='replace').strip())}; remove that line, or move the file away to "
                    "start afresh"
                )
            self._records[record["key"]] = record
            good_end += len(line)
        if good_end < len(raw):
            log.warning("dropping an unfinished record at the end of %s", self.path)
            with self.path.open("r+b") as f:
                f.truncate(good_end)

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._records.values())

    def get(self, key: str) -> dict[str, Any] | None:
        return self._records.get(key)

    def append(self, record: dict[str, Any]) -> None:
        """Store a finished point (a JSON-ready dict with a unique ``key``)."""
        key = record.get("key")
        if not isinstance(key, str):
            raise DataError(f"a result record needs a string 'key'; got {key!r}")
        if key in self._records:
            raise DataError(f"point {key!r} is already in {self.path}; it must not be stored twice")
        line = (json.dumps(record, allow_nan=False) + "\n").encode()
        with writing(self.path):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        self._records[key] = record
