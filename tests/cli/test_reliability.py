"""Reliability under a hostile but realistic user: inputs inside an ``--overwrite``d output, a replaced cluster file
or an edited run, concurrent studies, Ctrl-C, a full disk, a killed parent, unbounded values, malformed records.

Each promise is checked through the real entry point (``python -m calohls ...`` in a subprocess), in the style of
``test_bad_inputs.py`` whose inputs and checks are reused: every entry of :data:`CASES` prepares its own files in the
case's output folder, runs one command and expects one ``error:`` line with the given fragments and exit code, no
traceback, and its folder unchanged (no input lost, nothing half-written). Ctrl-C, SIGKILL and a full disk need a
process of their own and are separate tests below.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import h5py
import pytest
import yaml
from tests.conftest import negate_cell_energies


def _sibling(name: str) -> object:
    """The test module ``name`` beside this one (tests are not a package: --import-mode=importlib)."""
    spec = importlib.util.spec_from_file_location(f"_calohls_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]  (dataclasses look their module up)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


_bad = _sibling("test_bad_inputs")
Inputs = _bad.Inputs
inputs = _bad.inputs  # the module's good and bad inputs (a tiny trained and a tiny QAT run among them)
run_cli, snapshot, prepare_out = _bad.run_cli, _bad.snapshot, _bad.prepare_out
assert_clean_failure, assert_one_error_line = _bad.assert_clean_failure, _bad.assert_one_error_line
STUDY_BASE = _bad.STUDY_BASE

#: Commands run at the same time.
PARALLEL = 3
#: Longest error line (the CLI bounds it; a quoted value is cut to 80 characters).
MAX_LINE = 1000


# -- files the cases make in their own folder --------------------------------------------------------------------


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    (shutil.copytree if src.is_dir() else shutil.copyfile)(src, dst)
    return dst


def _edit_h5(path: Path, edit: Callable[[h5py.Group], object]) -> Path:
    with h5py.File(path, "r+") as f:
        edit(f["clusters"])
    return path


def _replaced(i: Inputs, name: str = "clusters.h5") -> Path:
    """A copy of the session's cluster file with one cluster's truth energy changed (same size, same count): a
    file re-made at the run's path."""

    def edit(g: h5py.Group) -> None:
        g["e_true"][0] = g["e_true"][0] * 1.5

    return _edit_h5(_copy(i.sim, i.out / name), edit)


def _negative(i: Inputs, src: Path, name: str) -> Path:
    """A copy of ``src`` with every cell and EM-scale energy of the wrong sign."""

    def edit(g: h5py.Group) -> None:
        negate_cell_energies(g.file)
        g["e_em"][...] = -g["e_em"][...]

    return _edit_h5(_copy(src, i.out / name), edit)


def _run_on(i: Inputs, run: Path, data: Path, name: str = "run") -> Path:
    """A copy of ``run`` whose run.json names ``data`` as its cluster file."""
    out = _copy(run, i.out / name)
    info = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**info, "data": {**info["data"], "path": str(data)}}))
    return out


def _run_edited(i: Inputs, file: str, edit: Callable[[str], str]) -> Path:
    out = _copy(i.run, i.out / "run")
    (out / file).write_text(edit((out / file).read_text()))
    return out


def _yaml(i: Inputs, name: str, text: str) -> Path:
    (i.out / name).write_text(text)
    return i.out / name


def _study_config(i: Inputs, name: str, **changes: object) -> Path:
    return _yaml(i, name, yaml.safe_dump({**STUDY_BASE, "data": str(i.good), **changes}, sort_keys=False))


def _not_a_study(i: Inputs, name: str = "study") -> Path:
    """A folder of someone's notes: ``--overwrite`` would replace it."""
    folder = i.out / name
    folder.mkdir()
    (folder / "notes.txt").write_text("someone's notes\n")
    return folder


def _config_in_notes(i: Inputs) -> Path:
    """A valid study config inside a folder of notes (``study/``) that ``--overwrite`` would replace."""
    _not_a_study(i)
    return _study_config(i, "study/s.yaml")


def _study_with_tasks(i: Inputs, line: str) -> Path:
    folder = i.out / "study"
    folder.mkdir()
    (folder / "study.json").write_text(json.dumps({"kind": "calohls-study"}))
    (folder / "tasks.jsonl").write_text(line + "\n")
    return folder


def _fewer_cells(text: str) -> str:
    """features.json of the 16-cell run, edited to say 8 cells."""
    return text.replace('"max_cells": 16', '"max_cells": 8')


def _alias_bomb() -> str:
    """A 'billion laughs' YAML document of a few hundred bytes (9^9 values once expanded)."""
    lines = ["a: &a [" + ",".join(["lol"] * 9) + "]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\nepochs: 1\n"


# -- the cases ---------------------------------------------------------------------------------------------------


class Case(NamedTuple):
    """``args(inputs)`` (which may make files in ``inputs.out``) fails with ``code`` on one line holding
    ``expect(inputs)``; with ``unchanged`` the case's folder is as before (no input lost, nothing written)."""

    id: str
    args: Callable[[Inputs], list[object]]
    expect: Callable[[Inputs], tuple[str, ...]]
    code: int = 1
    unchanged: bool = True


def _tiny(*args: object) -> tuple[object, ...]:
    return ("--preset", "tiny", "--max-cells", "4", "--epochs", "1", "--batch-size", "32", "--hide-progress", *args)


INSIDE = ("lies inside the output", "--overwrite would delete", "choose another output path")

CASES = [
    # -- 1. --overwrite never deletes an input inside the output
    Case(
        "scan-overwrite-data-inside",
        lambda i: [
            "scan",
            _study_config(i, "s.yaml", data=str(_copy(i.good, _not_a_study(i) / "data.h5"))),
            *("-o", i.out / "study", "--overwrite", "--hide-progress"),
        ],
        lambda i: (str(i.out / "study" / "data.h5"), *INSIDE),
    ),
    Case(
        "scan-overwrite-config-inside",
        lambda i: ["scan", _config_in_notes(i), "-o", i.out / "study", "--overwrite"],
        lambda i: (str(i.out / "study" / "s.yaml"), *INSIDE),
    ),
    Case(
        "run-overwrite-config-inside",
        lambda i: ["run", "--config", _config_in_notes(i), "-o", i.out / "study", "--overwrite"],
        lambda i: (str(i.out / "study" / "s.yaml"), *INSIDE),
    ),
    Case(
        "train-overwrite-data-inside",
        lambda i: [
            "train",
            _copy(i.good, i.out / "run" / "clusters.h5"),
            "-o",
            i.out / "run",
            "--overwrite",
            *_tiny(),
        ],
        lambda i: (str(i.out / "run" / "clusters.h5"), *INSIDE),
    ),
    Case(
        "train-overwrite-config-inside",
        lambda i: [
            "train",
            i.good,
            "-o",
            i.out / "existing_dir",
            "--overwrite",
            "--config",
            _yaml(i, "existing_dir/train.yaml", "epochs: 1\n"),
            *_tiny(),
        ],
        lambda i: (str(i.out / "existing_dir" / "train.yaml"), *INSIDE),
    ),
    Case(
        "qat-overwrite-data-inside",
        lambda i: [
            "qat",
            _copy(i.good, i.out / "run" / "clusters.h5"),
            "-o",
            i.out / "run",
            "--overwrite",
            *_tiny(),
        ],
        lambda i: (str(i.out / "run" / "clusters.h5"), *INSIDE),
    ),
    Case(
        "qat-overwrite-init-from-inside",
        lambda i: [
            "qat",
            i.sim,
            "-o",
            i.out / "runs",
            "--overwrite",
            "--init-from",
            _copy(i.run, i.out / "runs" / "float"),
            *_tiny(),
        ],
        lambda i: (str(i.out / "runs" / "float"), *INSIDE),
    ),
    Case(
        "ptq-overwrite-run-inside",
        lambda i: ["ptq", _copy(i.run, i.out / "ptq" / "run"), "-o", i.out / "ptq", "--overwrite"],
        lambda i: (str(i.out / "ptq" / "run"), *INSIDE),
    ),
    Case(
        "firmware-overwrite-run-inside",
        lambda i: ["firmware", _copy(i.qat_run, i.out / "fw" / "qat"), "-o", i.out / "fw", "--overwrite"],
        lambda i: (str(i.out / "fw" / "qat"), *INSIDE),
    ),
    Case(
        "evaluate-overwrite-data-inside",
        lambda i: [
            "evaluate",
            _copy(i.run, i.out / "run"),
            "--overwrite",
            "--data",
            _copy(i.sim, i.out / "run" / "eval" / "clusters.h5"),
        ],
        lambda i: (str(i.out / "run" / "eval" / "clusters.h5"), *INSIDE),
    ),
    Case(
        "simulate-overwrite-config-is-output",
        lambda i: [
            "simulate",
            "--config",
            _yaml(i, "s.yaml", "events: 10\n"),
            "-o",
            i.out / "s.yaml",
            "--overwrite",
        ],
        lambda i: (str(i.out / "s.yaml"), *INSIDE),
    ),
    Case(
        "convert-overwrite-source-is-output",
        lambda i: ["convert", _copy(i.good_root, i.out / "x.root"), "-o", i.out / "x.root", "--overwrite"],
        lambda i: (str(i.out / "x.root"), *INSIDE),
    ),
    Case(
        "train-overwrite-data-via-symlink",
        lambda i: [
            "train",
            (i.out / "link.h5").symlink_to(_copy(i.good, i.out / "run" / "c.h5")) or i.out / "link.h5",
            *("-o", i.out / "run", "--overwrite", *_tiny()),
        ],
        lambda i: (str(i.out / "link.h5"), *INSIDE),
    ),
    # -- 3. a replaced cluster file, an edited run
    Case(
        "evaluate-data-replaced-at-its-path",
        lambda i: ["evaluate", _run_on(i, i.run, _replaced(i))],
        lambda i: (str(i.out / "clusters.h5"), "is not the cluster file", "other energies", "train again"),
    ),
    Case(
        "evaluate-other-data-given",
        lambda i: ["evaluate", _copy(i.run, i.out / "run"), "--data", _replaced(i)],
        lambda i: (str(i.out / "clusters.h5"), "is not the cluster file", "--data"),
    ),
    Case(
        "ptq-data-replaced",
        lambda i: ["ptq", _run_on(i, i.run, _replaced(i)), "-o", i.out / "ptq"],
        lambda i: (str(i.out / "clusters.h5"), "is not the cluster file"),
    ),
    Case(
        "firmware-data-replaced",
        lambda i: ["firmware", _run_on(i, i.qat_run, _replaced(i)), "-o", i.out / "fw", "--no-synth"],
        lambda i: (str(i.out / "clusters.h5"), "is not the cluster file"),
    ),
    Case(
        "qat-init-from-data-replaced",
        lambda i: [
            "qat",
            _replaced(i),
            "-o",
            i.out / "qat",
            "--init-from",
            _run_on(i, i.run, i.out / "clusters.h5", "float"),
            "--preset",
            "tiny",
            "--max-cells",
            "16",
            "--epochs",
            "1",
            "--hide-progress",
        ],
        lambda i: (str(i.out / "clusters.h5"), "is not the cluster file", str(i.out / "float")),
    ),
    Case(
        "evaluate-config-target-edited",
        lambda i: ["evaluate", _run_edited(i, "config.yaml", lambda t: t.replace("log_ratio", "log_e"))],
        lambda i: (str(i.out / "run" / "config.yaml"), "changed after training", "train again"),
    ),
    Case(
        "evaluate-features-edited",
        lambda i: [
            "evaluate",
            _run_edited(i, "features.json", lambda t: t.replace('"max_cells": 16', '"max_cells": 8')),
        ],
        lambda i: (str(i.out / "run" / "features.json"), "8 cells", "re-run the training"),
    ),
    # -- 7. bounded messages
    Case(
        "train-config-alias-bomb",
        lambda i: ["train", i.good, "-o", i.out / "run", "--config", _yaml(i, "bomb.yaml", _alias_bomb())],
        lambda i: (str(i.out / "bomb.yaml"), "aliases expand to more than 100,000 values"),
    ),
    Case(
        "train-config-huge-value",
        lambda i: [
            "train",
            i.good,
            "-o",
            i.out / "run",
            "--config",
            _yaml(i, "big.yaml", f"epochs: {'9x' * 500_000}\n"),
        ],
        lambda i: ("epochs='9x9x", "…", "valid integer"),
    ),
    Case(
        "simulate-huge-unknown-option",
        lambda i: ["simulate", "-o", i.out / "s.h5", "--config", _yaml(i, "big.yaml", f"{'x' * 1000}: 1\n")],
        lambda i: ("xxxx…", "unknown option"),
    ),
    # -- 9. validation gaps
    Case(
        "train-max-cells-true",
        lambda i: ["train", i.good, "-o", i.out / "run", "--config", _yaml(i, "t.yaml", "model:\n  max_cells: true\n")],
        lambda i: ("model.max_cells=True", "a number is needed, not true"),
    ),
    Case(
        "qat-epochs-false",
        lambda i: ["qat", i.good, "-o", i.out / "run", "--config", _yaml(i, "q.yaml", "epochs: false\n")],
        lambda i: ("epochs=False", "a number is needed"),
    ),
    Case(
        "train-n-cells-above-stored",
        lambda i: [
            "train",
            _edit_h5(_copy(i.good, i.out / "c.h5"), lambda g: g["n_cells"].__setitem__(5, 1000)),
            "-o",
            i.out / "run",
            *_tiny(),
        ],
        lambda i: (str(i.out / "c.h5"), "cluster 5 has n_cells=1000", "64 cells", "re-create"),
    ),
    Case(
        "train-negative-energies",
        lambda i: ["train", _negative(i, i.good, "neg.h5"), "-o", i.out / "run", *_tiny()],
        lambda i: (str(i.out / "neg.h5"), "negative EM-scale energy", "wrong sign"),
    ),
    Case(
        "evaluate-negative-energies",
        lambda i: ["evaluate", _copy(i.run, i.out / "run"), "--data", _negative(i, i.sim, "neg.h5")],
        lambda i: (str(i.out / "neg.h5"), "negative EM-scale energy", "wrong sign"),
    ),
    Case(
        "scan-tasks-jsonl-empty-object",
        lambda i: ["scan", _study_config(i, "s.yaml"), "-o", _study_with_tasks(i, "{}"), "--hide-progress"],
        lambda i: (str(i.out / "study" / "tasks.jsonl"), "line 1 is not a result record", "{}", "remove that line"),
        unchanged=False,  # study.json and config.yaml are written again before the records are read
    ),
    Case(
        "scan-tasks-jsonl-list",
        lambda i: ["scan", _study_config(i, "s.yaml"), "-o", _study_with_tasks(i, "[1, 2]"), "--hide-progress"],
        lambda i: (str(i.out / "study" / "tasks.jsonl"), "line 1 is not a result record", "[1, 2]"),
        unchanged=False,
    ),
    # -- 10. wording
    Case(
        "train-data-symlink-loop",
        lambda i: [
            "train",
            (i.out / "loop.h5").symlink_to(i.out / "loop.h5") or i.out / "loop.h5",
            "-o",
            i.out / "run",
        ],
        lambda i: (str(i.out / "loop.h5"), "symbolic link loop"),
    ),
    Case(
        "scan-data-is-a-folder",
        lambda i: ["scan", _study_config(i, "s.yaml", data=str(i.existing_dir)), "-o", i.out / "study"],
        lambda i: (str(i.existing_dir), "is a folder, not a file", "`data:`"),
    ),
    Case(
        "train-config-symlink-loop",
        lambda i: [
            "train",
            i.good,
            "-o",
            i.out / "run",
            "--config",
            (i.out / "c.yaml").symlink_to(i.out / "c.yaml") or i.out / "c.yaml",
        ],
        lambda i: (str(i.out / "c.yaml"), "symbolic link loop"),
    ),
    Case(
        "inspect-dangling-symlink",
        lambda i: ["inspect", (i.out / "gone.h5").symlink_to(i.out / "nowhere.h5") or i.out / "gone.h5"],
        lambda i: (str(i.out / "gone.h5"), "symbolic link to", "does not exist"),
    ),
]


class Outcome(NamedTuple):
    result: subprocess.CompletedProcess[str]
    out: Path
    before: dict
    after: dict


@pytest.fixture(scope="module")
def outcomes(inputs: Inputs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    """Every case run in its own folder (prepared, then snapshotted around the command), a few at a time."""

    def one(case: Case) -> tuple[str, Outcome]:
        out = tmp_path_factory.mktemp(case.id)
        prepare_out(out)
        i = dataclasses.replace(inputs, out=out)
        args = case.args(i)
        before = snapshot(out)
        result = run_cli(args, cwd=out)
        return case.id, Outcome(result, out, before, snapshot(out))

    with ThreadPoolExecutor(PARALLEL) as pool:
        yield dict(pool.map(one, CASES))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refused_in_one_line(case: Case, inputs: Inputs, outcomes: dict[str, Outcome]) -> None:
    """One bounded error line naming the problem and the fix; the case's folder (its inputs) untouched."""
    outcome = outcomes[case.id]
    i = dataclasses.replace(inputs, out=outcome.out)
    if case.unchanged:
        line = assert_clean_failure(outcome.result, case.code, case.expect(i), outcome.before, outcome.after)
    else:
        line = assert_one_error_line(
            outcome.result.stdout, outcome.result.stderr, outcome.result.returncode, case.code, case.expect(i)
        )
    assert len(line) <= MAX_LINE + len("error: "), len(line)


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


# -- 5. and 6.: Ctrl-C, a full disk, a killed parent -------------------------------------------------------------
# Each command runs in a session of its own, so that Ctrl-C can be sent as a terminal sends it: SIGINT to every
# process of the group (the command and its worker processes).


def _start(args: list[object], cwd: Path, **kwargs: object) -> subprocess.Popen[str]:
    # Ctrl-C as at a terminal: a shell without job control starts background commands with SIGINT ignored, and an
    # ignored signal is inherited through exec, while a handler is reset to the default
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return subprocess.Popen(
        [sys.executable, "-m", "calohls", *map(str, args)],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,  # type: ignore[arg-type]
    )


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen[str], what: str, timeout: float = 90) -> None:
    """Poll until ``condition()`` (the command reached the stage to interrupt); fail if the command ended first."""
    end = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the command ended before {what}: {process.communicate()}"
        assert time.monotonic() < end, f"no {what} after {timeout} s"
        time.sleep(0.05)


def _group_alive(pgid: int) -> list[int]:
    """The processes still running in process group ``pgid`` (zombies aside), read from /proc."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            alive.append(int(entry.name))
    return alive


def _wait_group_gone(pgid: int, timeout: float = 15) -> list[int]:
    end = time.monotonic() + timeout
    while (alive := _group_alive(pgid)) and time.monotonic() < end:
        time.sleep(0.1)
    return alive


def _interrupt(process: subprocess.Popen[str], timeout: float = 150) -> tuple[str, str]:
    """SIGINT to the command's process group; its output once it ended. A command still running after ``timeout``
    (generous: on 2 busy cores the other test worker may hold both) is killed and its pipes are closed before the
    test fails, so that no unclosed pipe is reported against a later test."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        pytest.fail(f"still running {timeout:.0f} s after Ctrl-C; stderr: {stderr[-2000:]!r}")


def _partials(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".partial" in p.name]


def _assert_interrupted(process: subprocess.Popen[str], stdout: str, stderr: str, folder: Path) -> None:
    """Exit code 130, the one line ``error: interrupted``, no process of the command left, no partial output."""
    assert process.returncode == 130, f"exit code {process.returncode}: {stderr}"
    assert stderr == "error: interrupted\n", stderr
    assert stdout == ""
    assert not _wait_group_gone(process.pid), "processes of the command still run"
    assert not _partials(folder), _partials(folder)


#: Long enough (about 100 s at 20k clusters/s) that the signal always lands while it simulates and writes.
SIMULATE = ["simulate", "--events", "2000000", "--max-cells", "16", "--hide-progress"]


def test_ctrl_c_during_qat_gives_130_and_one_line(inputs: Inputs, tmp_path: Path) -> None:
    """Ctrl-C while QAT trains (JAX/XLA threads running): one line, 130, no SIGSEGV, no run folder."""
    args = ["qat", inputs.sim, "-o", tmp_path / "run", "--preset", "tiny", "--max-cells", "4", "--epochs", "500"]
    process = _start([*args, "--batch-size", "64", "--hide-progress"], tmp_path)
    _wait_for(lambda: (tmp_path / ".run.partial").exists(), process, "training started")
    time.sleep(1.0)  # inside the first epochs (compiling or fitting)
    stdout, stderr = _interrupt(process)
    _assert_interrupted(process, stdout, stderr, tmp_path)
    assert not (tmp_path / "run").exists()


def test_ctrl_c_of_simulate_with_workers(tmp_path: Path) -> None:
    """Ctrl-C of ``simulate --workers 2``: no worker tracebacks, 130, workers gone, no partial file."""
    process = _start([*SIMULATE, "--workers", "2", "-o", tmp_path / "s.h5"], tmp_path)
    _wait_for(lambda: bool(_partials(tmp_path)), process, "the output was started")
    time.sleep(0.5)
    stdout, stderr = _interrupt(process)
    _assert_interrupted(process, stdout, stderr, tmp_path)
    assert not (tmp_path / "s.h5").exists()


def test_killed_simulate_leaves_no_workers_and_its_partial_is_removed_later(tmp_path: Path) -> None:
    """SIGKILL of the parent: its workers die with it; the next run into that path removes the stale partial."""
    process = _start([*SIMULATE, "--workers", "2", "-o", tmp_path / "s.h5"], tmp_path)
    _wait_for(lambda: bool(_partials(tmp_path)), process, "the output was started")
    stale = _partials(tmp_path)
    process.kill()  # the parent only
    process.communicate(timeout=30)
    assert not _wait_group_gone(process.pid), "workers outlived their parent"
    assert stale
    assert all(p.exists() for p in stale)
    result = run_cli(["simulate", "--events", "50", "--workers", "1", "-o", tmp_path / "s.h5"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not _partials(tmp_path), _partials(tmp_path)


#: Runs the rest of its command line with writes beyond the first argument's bytes failing with EFBIG, as a full
#: disk fails them with ENOSPC: a real failing write in the HDF5 library, without the privileges that mounting a
#: small file system needs. (The limit and the ignored SIGXFSZ outlive the exec.)
LIMITED = """import os, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]),) * 2)
os.execv(sys.executable, [sys.executable, "-m", "calohls", *sys.argv[2:]])
"""


def test_full_disk_during_simulate_gives_1_and_one_line(tmp_path: Path) -> None:
    """The disk fills while clusters are written: one line naming the output and the reason, exit code 1 (no
    SIGSEGV from the HDF5 library), no partial file."""
    args = ["simulate", "--events", "3000", "--max-cells", "32", "--workers", "1", "-o", tmp_path / "s.h5"]
    result = subprocess.run(
        [sys.executable, "-c", LIMITED, "300000", *map(str, args)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    fragments = (f"cannot write {tmp_path / 's.h5'}:", "File too large (EFBIG)")
    assert_one_error_line(result.stdout, result.stderr, result.returncode, 1, fragments)
    assert not _partials(tmp_path)
    assert not (tmp_path / "s.h5").exists()


# -- 2. the study lock ---------------------------------------------------------------------------------------------


def test_second_study_in_a_locked_folder_is_refused(inputs: Inputs, tmp_path: Path) -> None:
    """A study folder in use (its lock held, here by this process): one line naming the holder's PID."""
    from calohls.stages.study import study_lock

    config = tmp_path / "s.yaml"
    config.write_text(yaml.safe_dump({**STUDY_BASE, "data": str(inputs.good)}))
    with study_lock(tmp_path / "study"):
        before = snapshot(tmp_path)
        result = run_cli(["scan", config, "-o", tmp_path / "study", "--hide-progress"], cwd=tmp_path)
        after = snapshot(tmp_path)
    fragments = (str(tmp_path / "study"), f"in use by process {os.getpid()}", "wait for it")
    assert_clean_failure(result, 1, fragments, before, after)
    assert not (tmp_path / ".study.lock").exists()  # released


def test_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    from calohls.stages.study import study_lock

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = tmp_path / ".study.lock"
    lock.write_text(dead.stdout)  # left by a process that was killed (its flock went with it)
    with study_lock(tmp_path / "study"):
        assert lock.read_text().strip() == str(os.getpid())
    assert not lock.exists()


# -- 4., 8. and 10.: a moved study, a firmware build log, quoted commands, old run folders ------------------------


def test_copied_ptq_sweep_resumes(inputs: Inputs, tmp_path: Path) -> None:
    """ptq.yaml names its runs relative to the sweep: a copy of runs and sweep resumes without redoing a point."""
    config = tmp_path / "ptq.yaml"
    options = {"sweeps": ["total-bits"], "total_bits_range": [12, 12], "clusters": 50, "trace_clusters": 10}
    config.write_text(yaml.safe_dump({**options, "workers": 1}))
    first = tmp_path / "a"
    shutil.copytree(inputs.run, first / "runs" / "tiny")
    args = ["runs/tiny", "-o", "ptq", "--config", config, "--hide-progress"]
    result = run_cli(["ptq", *args], cwd=first)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((first / "ptq" / "ptq.yaml").read_text())["runs"] == {"tiny": "../runs/tiny"}
    second = tmp_path / "b"
    shutil.copytree(first, second)
    points = (second / "ptq" / "results.jsonl").read_text()
    result = run_cli(["-v", "ptq", *args], cwd=second)
    assert result.returncode == 0, result.stderr
    assert "1 points, 1 already done" in result.stderr
    assert (second / "ptq" / "results.jsonl").read_text() == points


def test_failed_firmware_build_keeps_its_log(inputs: Inputs, tmp_path: Path) -> None:
    """A C++ compiler that fails: one line naming the build log, which is kept beside the (absent) output."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("g++", "c++"):
        (bin_dir / name).write_text("#!/bin/sh\necho 'fatal: this compiler is broken' >&2\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    args = ["firmware", inputs.qat_run, "-o", tmp_path / "fw", "--clusters", "10", "--no-synth"]
    result = run_cli(args, cwd=tmp_path, env=env)
    kept = tmp_path / "fw.build.log"
    assert_one_error_line(result.stdout, result.stderr, result.returncode, 1, ("failed", str(kept)))
    assert "this compiler is broken" in kept.read_text()
    assert not (tmp_path / "fw").exists()
    assert not _partials(tmp_path)


def test_next_command_is_shell_quoted(inputs: Inputs, tmp_path: Path) -> None:
    out = tmp_path / "my run; rm -rf x"
    args = ["train", inputs.good, "-o", out, "--preset", "tiny", "--max-cells", "4", "--epochs", "1"]
    result = run_cli([*args, "--batch-size", "32", "--hide-progress"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == f"next: calohls evaluate '{out}'"
    assert "NOT converged" in result.stderr  # one epoch: cut off at the cap, and said so


def test_run_without_fingerprints_still_evaluates(inputs: Inputs, tmp_path: Path) -> None:
    """A run folder of an earlier calohls (no fingerprint, no config digest) is read as before, with a log note."""
    run = shutil.copytree(inputs.run, tmp_path / "run")
    info = json.loads((run / "run.json").read_text())
    assert {"data_fingerprint", "config_digest"} <= set(info)
    old = {k: v for k, v in info.items() if k not in ("data_fingerprint", "config_digest")}
    (run / "run.json").write_text(json.dumps(old))
    result = run_cli(["-v", "evaluate", run], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "records no fingerprint" in result.stderr
    assert "records no digest" in result.stderr


def test_locked_cluster_file_is_said_to_be_locked(inputs: Inputs, tmp_path: Path) -> None:
    """A cluster file another process is writing (HDF5's file lock held): not "re-create it", but who holds it."""
    path = _copy(inputs.good, tmp_path / "c.h5")
    with h5py.File(path, "r+"):  # this process writes it
        result = run_cli(["inspect", path], cwd=tmp_path)
    fragments = (str(path), "is locked", "another process is writing it", "HDF5_USE_FILE_LOCKING=FALSE")
    assert_one_error_line(result.stdout, result.stderr, result.returncode, 1, fragments)


def test_study_data_is_keyed_by_its_clusters(tmp_path: Path) -> None:
    """The digest a study files its tasks under is of the clusters: the same options simulated again give the same
    digest (the file's bytes differ: its creation time), another seed another one."""
    from calohls.config import SimConfig
    from calohls.data.fingerprint import clusters_digest
    from calohls.sim.generate import simulate_to_file
    from calohls.stages.study import file_digest

    paths = {}
    for name, seed in (("a", 1), ("again", 1), ("other", 2)):
        time.sleep(1.1 if name == "again" else 0)  # another creation time (stored to the second)
        paths[name] = simulate_to_file(SimConfig(events=300, seed=seed, max_cells=8), tmp_path / f"{name}.h5")
    assert file_digest(paths["a"]) != file_digest(paths["again"])
    assert clusters_digest(paths["a"]) == clusters_digest(paths["again"])
    assert clusters_digest(paths["a"]) != clusters_digest(paths["other"])
