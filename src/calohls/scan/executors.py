"""Run independent scan points in parallel: local worker processes by default, a Dask cluster when given one.

Results are yielded as points finish (in any order), so the caller can store each at once.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

from calohls.errors import ConfigError

__all__ = ["run_points"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long to wait for a Dask scheduler to answer.
CONNECT_TIMEOUT = "20s"


def run_points(
    fn: Callable[[T], Any], points: Sequence[T], *, workers: int | None = None, scheduler: str | None = None
) -> Iterator[tuple[T, Any]]:
    """Yield ``(point, fn(point))`` for every point as it finishes.

    Args:
        fn: A top-level (importable) function; it runs in other processes.
        points: Picklable point descriptions.
        workers: Local worker processes (default: one per core; 1 runs in this process, in order).
        scheduler: Address of a Dask scheduler (``tcp://host:8786``), or ``"local"`` for a local Dask cluster;
            None uses local processes.
    """
    if not points:
        return
    if scheduler:
        yield from _dask(fn, points, scheduler, workers)
        return
    workers = min(workers or os.cpu_count() or 1, len(points))
    if workers <= 1:
        for point in points:
            yield point, fn(point)
        return
    # spawn: the parent has JAX loaded (multithreaded), which fork would copy in a broken state
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_one_thread_each) as pool:
        futures = {pool.submit(fn, p): p for p in points}
        for future in as_completed(futures):
            yield futures[future], future.result()


#: Thread pools of the numerical libraries; one thread each in pool workers, which already use every core together.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def _one_thread_each() -> None:
    """Pool-worker initializer (runs before numpy, numba or JAX are imported there): no nested thread pools."""
    for name in _THREAD_VARIABLES:
        os.environ[name] = "1"
    os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def _dask(fn: Callable[[T], Any], points: Sequence[T], scheduler: str, workers: int | None) -> Iterator[tuple[T, Any]]:
    try:
        from distributed import Client, LocalCluster
        from distributed import as_completed as dask_completed
    except ImportError:
        raise ConfigError("a Dask scheduler needs the dask extra: pip install 'calohls[dask]'") from None
    cluster = (
        LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1) if scheduler == "local" else None
    )
    try:
        client = Client(cluster or scheduler, timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise ConfigError(f"cannot reach the Dask scheduler {scheduler!r} ({exc}); check the address") from None
    try:
        futures = {client.submit(fn, p, pure=False): p for p in points}
        for future in dask_completed(futures):
            yield futures[future], future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
