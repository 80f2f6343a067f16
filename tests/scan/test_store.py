from __future__ import annotations

import operator

import pytest

from calohls.errors import DataError
from calohls.scan.executors import run_points
from calohls.scan.store import ResultStore


def test_append_and_reload(tmp_path):
    store = ResultStore(tmp_path / "r.jsonl")
    for i in range(3):
        store.append({"key": f"p{i}", "value": i})
    again = ResultStore(tmp_path / "r.jsonl")
    assert len(again) == 3
    assert "p1" in again
    assert again.get("p2") == {"key": "p2", "value": 2}
    with pytest.raises(DataError, match="stored twice"):
        again.append({"key": "p0", "value": 9})
    with pytest.raises(DataError, match="needs a string 'key'"):
        again.append({"value": 9})


def test_a_torn_last_line_is_dropped_and_nothing_else(tmp_path):
    path = tmp_path / "r.jsonl"
    store = ResultStore(path)
    store.append({"key": "a", "v": 1})
    store.append({"key": "b", "v": 2})
    with path.open("ab") as f:
        f.write(b'{"key": "c", "v"')  # killed while writing
    store = ResultStore(path)
    assert [r["key"] for r in store] == ["a", "b"]
    store.append({"key": "c", "v": 3})
    assert [r["key"] for r in ResultStore(path)] == ["a", "b", "c"]
    assert path.read_text().count("\n") == 3


def test_a_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
    with pytest.raises(DataError, match="corrupt line after 1 records"):
        ResultStore(path)


@pytest.mark.parametrize("workers", [1, 2])
def test_run_points_yields_every_point(workers):
    # a function importable in spawned workers (test modules are not)
    got = dict(run_points(operator.neg, list(range(6)), workers=workers))
    assert got == {i: -i for i in range(6)}


def test_run_points_on_a_local_dask_cluster():
    got = dict(run_points(operator.neg, list(range(4)), workers=2, scheduler="local"))
    assert got == {i: -i for i in range(4)}


def test_unreachable_scheduler_is_one_clear_error(monkeypatch):
    from calohls.errors import ConfigError
    from calohls.scan import executors

    monkeypatch.setattr(executors, "CONNECT_TIMEOUT", "1s")
    with pytest.raises(ConfigError, match=r"cannot reach the Dask scheduler 'tcp://127\.0\.0\.1:1'"):
        list(run_points(operator.neg, [1], scheduler="tcp://127.0.0.1:1"))
