"""The README quotes benchmark figures only from benchmarks/results.json, and that file holds full-size records."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _table_module():
    spec = importlib.util.spec_from_file_location("benchmark_table", ROOT / "benchmarks" / "table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_table_is_the_one_made_from_the_results():
    table = _table_module()
    results = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    block = table.readme_block((ROOT / "README.md").read_text())
    assert block, "README.md lacks the benchmark table markers"
    assert block == table.table(results), "README benchmark table is stale: run `python benchmarks/table.py --readme`"


def test_results_hold_full_size_records_only():
    results = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    quick = [name for name, entry in results["benchmarks"].items() if entry.get("quick")]
    assert not quick, f"quick records in results.json: {quick}"
