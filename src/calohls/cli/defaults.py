"""The ``[default: …]`` of an option's help, read from the config model that holds the default (never typed twice)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["default"]


def default(config: type[BaseModel], path: str) -> str:
    """``[default: VALUE]`` for the field ``path`` (dotted, e.g. ``model.max_cells``) of ``config``'s defaults."""
    value: Any = config()
    for part in path.split("."):
        value = getattr(value, part)
    return f"[default: {value}]"
