"""The L0 figure of the study (clusters per bunch crossing of the designs built into firmware)."""

from __future__ import annotations

from calohls.config import StudyConfig
from calohls.plots.study import draw_study

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _points(firmware: bool) -> list[dict]:
    points = [
        {"kind": "float", "preset": "tiny", "resolution": 0.30, "parameters": 500},
        {"kind": "ptq", "preset": "tiny", "resolution": 0.33, "lut": 50_000, "pareto": True},
        {"kind": "qat", "preset": "tiny", "resolution": 0.31, "lut": 20_000, "pareto": True, "ebops": 18_000},
    ]
    if firmware:
        points[2] |= {
            "clusters_per_bx": 4,
            "clusters_per_bx_per_instance": 4,
            "instances": 1,
            "timing_met": False,
            "fmax_estimate_mhz": 187.5,
        }
        points.append(
            {"kind": "qat", "preset": "tiny", "resolution": 0.32, "lut": 9_000, "clusters_per_bx": 30,
             "clusters_per_bx_per_instance": 10, "instances": 3, "timing_met": True, "fmax_estimate_mhz": 410.0}
        )  # fmt: skip
    return points


def test_l0_figure_only_with_firmware_designs(tmp_path):
    config = StudyConfig()
    with_fw = draw_study(_points(True), config, tmp_path / "fw")
    assert (tmp_path / "fw" / "l0_clusters_per_bx.png") in with_fw
    assert (tmp_path / "fw" / "l0_clusters_per_bx.png").read_bytes()[:8] == PNG_SIGNATURE
    without = draw_study(_points(False), config, tmp_path / "none")
    assert not (tmp_path / "none" / "l0_clusters_per_bx.png").exists()
    assert len(with_fw) == len(without) + 1
