"""No function of the package is longer than :data:`MAX_LINES` lines (a long function wants to be split)."""

from __future__ import annotations

import ast
from pathlib import Path

import calohls

#: Most lines of a function, from its ``def`` line to its last line (decorators not counted).
MAX_LINES = 80

PACKAGE = Path(calohls.__file__).parent


def _long_functions() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_longer_than_the_limit():
    long = _long_functions()
    assert not long, f"functions over {MAX_LINES} lines; split them: " + "; ".join(long)
