from __future__ import annotations

import json

from calohls.config import PTQConfig
from calohls.scan.ptq import PTQPoint
from calohls.scan.ptq_summary import PTQSummary, summarize_ptq


def _record(run: str, sweep: str, value: int, mpe: float, ksum_rel: float, phi_rel: float) -> PTQPoint:
    return PTQPoint(
        key=f"{run}|{sweep}|{value}",
        run=run,
        sweep=sweep,
        value=value,
        default="",
        label="",
        engine="emulate",
        trace_clusters=0,
        mpe=mpe,
        mean_signed_difference=0.0,
        identical_fraction=0.0,
        median_response=1.0,
        resolution=0.2,
        layers={
            "ksum": {"mean_abs": ksum_rel, "reference_mean_abs": 1.0},
            "phi_1": {"mean_abs": phi_rel, "reference_mean_abs": 1.0},
        },
        types={},
        seconds=0.0,
    )


def test_findings_from_constructed_sweeps():
    records = []
    for bits in range(2, 9):
        # the sum needs 6 integer bits, phi_1 needs 3; the large model deviates more at low precision
        records.append(
            _record("small", "int-bits", bits, 10.0 / bits, 0.5 if bits < 6 else 0.001, 0.5 if bits < 3 else 0.0)
        )
        records.append(
            _record("large", "int-bits", bits, 40.0 / bits if bits < 7 else 0.5, 0.5 if bits < 6 else 0.001, 0.0)
        )
    runs = {"small": {"parameters": 100}, "large": {"parameters": 10000}}
    s = summarize_ptq(records, runs, PTQConfig(sweeps=("int-bits",)))
    assert s.runs_by_size == ["small", "large"]
    entry = s.sweeps["int-bits"]
    assert entry["small"].layer_bits_needed == {"ksum": 6, "phi_1": 3}
    assert entry["large"].bits_for_mpe_below_1pct == 7
    assert entry["small"].bits_for_mpe_below_1pct is None  # 10/8 = 1.25 % at the top of the range
    text = "\n".join(s.findings)
    assert "'larger models deviate more at low precision' holds" in text
    expected = "'the sum needs more integer bits' holds here: ksum needs 6 integer bits, the per-cell Φ layers at most"
    expected += " 3"
    assert expected in text


def test_findings_say_when_they_do_not_hold():
    records = [_record("small", "int-bits", b, 5.0, 0.0, 0.5 if b < 8 else 0.0) for b in range(2, 9)]
    records += [_record("large", "int-bits", b, 1.0, 0.0, 0.0) for b in range(2, 9)]
    s = summarize_ptq(
        records, {"small": {"parameters": 1}, "large": {"parameters": 2}}, PTQConfig(sweeps=("int-bits",))
    )
    text = "\n".join(s.findings)
    assert "'larger models deviate more at low precision' does not hold" in text
    assert "'the sum needs more integer bits' does not hold here" in text


def test_summary_json_round_trip():
    records = [_record("small", "int-bits", b, 5.0 / b, 0.0, 0.0) for b in range(2, 9)]
    s = summarize_ptq(records, {"small": {"parameters": 1}}, PTQConfig(sweeps=("int-bits",)))
    data = json.loads(json.dumps(s.to_json()))
    assert list(data) == ["mpe_tolerance_percent", "layer_best_factor", "runs_by_size", "sweeps", "findings", "config"]
    assert list(data["sweeps"]["int-bits"]["small"]["best"]) == ["value", "mpe"]
    assert PTQSummary.from_json(data) == s
