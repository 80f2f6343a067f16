"""Run the calohls benchmarks and merge their figures into one JSON file.

    python benchmarks/run.py [--quick | --full] [--only NAME[,NAME]] [--out PATH]

Every module of the ``benchmarks`` package registers its benchmarks (see ``benchmarks/__init__.py``); this script
imports them all, runs those selected and writes the results file (default ``benchmarks/results.json``) after each
benchmark. Entries of benchmarks not run now are kept, so figures of separate runs accumulate and one benchmark can
be re-run alone. Layout of the file (see ``benchmarks/README.md``)::

    {"created": ISO time of the last write, "command": its command line,
     "machine": {"cpu_count", "cpu_model", "load_average", "python", "numpy", "calohls", ...},
     "versions": calohls.versions.versions() at the last write,
     "benchmarks": {name: {...figures..., "created", "command", "quick", "full", "wall_s", "load_average",
                           "versions", "summary"}}}
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import pkgutil
import platform
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Run as a script, Python puts this folder first on the path; put the repository root there instead, so that the
# package is imported as `benchmarks` and its modules cannot shadow top-level ones.
if sys.path and Path(sys.path[0] or ".").resolve() == HERE:
    sys.path[0] = str(ROOT)
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import benchmarks  # noqa: E402
from benchmarks import BENCHMARKS, Options, load_average  # noqa: E402

DEFAULT_OUT = HERE / "results.json"
#: Quick runs are smoke tests on small samples: their figures go to their own (untracked) file, never beside the
#: full-size records that the README quotes.
QUICK_OUT = HERE / "results-quick.json"


#: Modules whose benchmarks run first, in this order (the others follow by name). The simulation comes first: its
#: worker processes start by fork only while JAX is not loaded, and the later stages load it.
MODULE_ORDER = ("simulation", "training", "ptq", "firmware", "pipeline")


def discover() -> dict[str, str]:
    """Import every benchmark module of the package (in :data:`MODULE_ORDER`, which is the order the benchmarks are
    registered and run in); return the modules that could not be imported and why."""
    failed = {}
    found = [
        m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.name.startswith("_") and m.name != "run"
    ]
    first = [name for name in MODULE_ORDER if name in found]
    for name in first + sorted(set(found) - set(first)):
        try:
            importlib.import_module(f"benchmarks.{name}")
        except ImportError as exc:  # a stage whose optional dependencies are not installed
            failed[name] = f"{type(exc).__name__}: {exc}"
    return failed


def cpu_model() -> str:
    """The CPU's model name (from ``/proc/cpuinfo`` where there is one), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command_line() -> str:
    """The command line of this run, as it could be typed again (paths below the current folder relative)."""
    words = [sys.executable, *sys.argv]
    for i, word in enumerate(words[:2]):
        with contextlib.suppress(ValueError):  # not below the current folder: keep it as it is
            words[i] = str(Path(word).absolute().relative_to(Path.cwd()))
    return shlex.join(words)


def machine() -> dict[str, Any]:
    """The machine and software versions the figures were taken with."""
    import numpy

    import calohls

    return {
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "load_average": load_average(),
        "platform": platform.platform(),
        "processor": platform.machine(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "calohls": calohls.__version__,
    }


def _clean(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as Python values and non-finite floats as None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist"):  # numpy array or scalar
        return _clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_results(path: Path) -> dict[str, Any]:
    """The results file, or an empty layout if it does not exist.

    Raises:
        SystemExit: the file exists but is not a results file (it is left untouched).
    """
    if not path.exists():
        return {"benchmarks": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: cannot read {path} ({exc}); move it away or choose another --out") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks", {}), dict):
        raise SystemExit(f"error: {path} is not a benchmark results file; move it away or choose another --out")
    data.setdefault("benchmarks", {})
    return data


def versions() -> dict[str, str]:
    """Versions of calohls and of the libraries its figures depend on (``calohls.versions.versions()``)."""
    from calohls.versions import versions as package_versions

    return package_versions()


def write_results(path: Path, entries: dict[str, dict[str, Any]], command: str) -> None:
    """Merge ``entries`` into the results file at ``path`` (re-read now) and replace it atomically."""
    data = read_results(path)
    data["benchmarks"].update(entries)
    head = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine(),
        "versions": versions(),
    }
    for key in head:
        data.pop(key, None)
    ordered = {**head, **data}
    text = json.dumps(_clean(ordered), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates the file readable by its owner only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_one(name: str, opts: Options, command: str) -> dict[str, Any]:
    """Run one benchmark in a scratch folder (``opts.scratch`` is replaced by a new one); return its entry with the
    run's metadata added: when it finished, the command line, the mode, wall time, load averages and versions."""
    load_start = load_average()
    scratch = Path(tempfile.mkdtemp(prefix=f"calohls-bench-{name}-"))
    t0 = time.perf_counter()
    try:
        result = BENCHMARKS[name](Options(quick=opts.quick, workers=opts.workers, scratch=scratch, full=opts.full))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    wall = time.perf_counter() - t0
    summary = result.pop("summary", [])
    return {
        **result,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "quick": opts.quick,
        "full": opts.full,
        "wall_s": wall,
        "load_average": {"start": load_start, "end": load_average()},
        "versions": versions(),
        "summary": list(summary),
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Run the calohls benchmarks and merge their figures into one JSON file.",
    )
    try:
        shown = DEFAULT_OUT.relative_to(Path.cwd())
    except ValueError:
        shown = DEFAULT_OUT
    parser.add_argument(
        "--out", type=Path, default=None, help=f"results file (default: {shown}; with --quick {QUICK_OUT.name})"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short smoke run on small samples")
    mode.add_argument("--full", action="store_true", help="also the larger, slow cases (e.g. more model sizes)")
    parser.add_argument("--only", metavar="NAME[,NAME]", help="run only these benchmarks (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for parallel stages (default: 2)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    failed_imports = discover()
    for module, why in failed_imports.items():
        print(f"warning: benchmark module {module!r} not loaded ({why})", file=sys.stderr)
    if args.list:
        for name, fn in BENCHMARKS.items():
            first_paragraph = (fn.__doc__ or "").strip().split("\n\n")[0]
            print(f"{name:22} {' '.join(first_paragraph.split())}")
        return 0
    if args.workers < 1:
        print(f"error: --workers={args.workers} must be at least 1", file=sys.stderr)
        return 2

    names = list(BENCHMARKS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            print(
                f"error: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS) or 'none'}",
                file=sys.stderr,
            )
            return 2

    out: Path = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    if args.quick and out.resolve() == DEFAULT_OUT.resolve():
        print(
            f"error: --quick figures do not go into {DEFAULT_OUT.name}, which holds full-size records only; "
            f"leave out --out (they go to {QUICK_OUT.name}) or choose another file",
            file=sys.stderr,
        )
        return 2
    read_results(out)  # refuse an unreadable results file before spending time on the benchmarks
    command = command_line()
    opts = Options(quick=args.quick, workers=args.workers, scratch=Path(), full=args.full)
    mode = " (quick)" if args.quick else " (full)" if args.full else ""
    print(f"calohls benchmarks{mode}: {', '.join(names)}; load average {load_average()}")
    errors = []
    for name in names:
        print(f"\n== {name} ==", flush=True)
        try:
            entry = run_one(name, opts, command)
        except Exception:
            traceback.print_exc()
            errors.append(name)
            print(f"{name} failed; its previous entry in {out} (if any) is kept", file=sys.stderr)
            continue
        write_results(out, {name: entry}, command)
        for line in entry["summary"]:
            print(f"  {line}")
        print(f"  ({entry['wall_s']:.1f} s; load average {entry['load_average']['end']})", flush=True)

    print(f"\nresults: {out}")
    if errors:
        print(f"failed: {', '.join(errors)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
