"""Benchmarks of calohls: a registry of named benchmarks whose figures ``benchmarks/run.py`` writes to one JSON file.

A benchmark is a function that takes the run's :class:`Options` and returns a JSON-ready dict of figures. Register
it with the :func:`benchmark` decorator in any module of this package; ``run.py`` imports every module of the
package whose name does not start with ``_`` (``run`` itself excepted), so a later stage adds its benchmarks by
adding a module::

    from benchmarks import Options, benchmark

    @benchmark()
    def training_speed(opts: Options) -> dict:
        import keras  # heavy or optional imports inside the function, not at module level

        ...
        return {"samples_per_s": rate, "summary": [f"training: {rate:,.0f} samples/s"]}

The optional ``"summary"`` entry of the returned dict, a list of short lines, is what ``run.py`` prints.
Import heavy libraries (JAX, hls4ml) inside the benchmark function: a module-level import would be paid by every
run, and a loaded JAX switches the simulation's worker processes from fork to spawn.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BENCHMARKS", "BenchmarkFn", "Options", "benchmark", "best_of", "load_average"]


@dataclass(frozen=True)
class Options:
    """What a benchmark is told about the run.

    Attributes:
        quick: A short smoke run: use small samples; the figures are then only indicative.
        workers: Worker processes for parallel stages.
        scratch: An empty folder for temporary files, removed after the benchmark.
        full: Also measure the larger (slow) cases a benchmark offers, e.g. more model sizes.
    """

    quick: bool
    workers: int
    scratch: Path
    full: bool = False


BenchmarkFn = Callable[[Options], dict[str, Any]]

#: Registered benchmarks by name, in registration order.
BENCHMARKS: dict[str, BenchmarkFn] = {}


def benchmark(name: str | None = None) -> Callable[[BenchmarkFn], BenchmarkFn]:
    """Register a benchmark under ``name`` (default: the function's name).

    Raises:
        ValueError: another function is already registered under that name.
    """

    def register(fn: BenchmarkFn) -> BenchmarkFn:
        key = name or fn.__name__
        old = BENCHMARKS.get(key)
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(
                f"benchmark {key!r} is already registered by {old.__module__}.{old.__qualname__}; choose another name"
            )
        BENCHMARKS[key] = fn
        return fn

    return register


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Call ``fn`` ``repeats`` times; return the shortest wall time in seconds and the last result."""
    best, result = float("inf"), None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None where the system does not report them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None
