"""Checked firmware of HGQ2 models (hls4ml C simulation and Verilator vs Keras, Yosys) and ``calohls firmware``.

The module trains one tiny QAT run (``calohls.model.qat``); the firmware of its model is built once on crafted
clusters (real hls4ml + g++, Verilator and Yosys) and once through the command line on the run's test clusters
(without synthesis).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from calohls.cli import main
from calohls.config import FirmwareConfig, QATConfig, load_config
from calohls.data.features import FEATURES
from calohls.errors import ConfigError, ConversionError, DataError, FileExistsRefusedError, ToolMissingError
from calohls.firmware import tools
from calohls.firmware.build import build_firmware, firmware_from_run
from calohls.firmware.l0 import L0View
from calohls.firmware.timing import TimingEstimate

N_CELLS, N_FEATURES = 8, len(FEATURES)


def inputs(n: int, *, seed: int = 0, extreme: bool = True) -> np.ndarray:
    """Clusters of 0 to 8 real cells and all-zero padding; with ``extreme``, a tenth scaled by ±100 or ±1000, far
    beyond the trained ranges (the input quantizers wrap) yet exact in Keras' float32 arithmetic."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_CELLS, N_FEATURES)).astype(np.float32)
    x[..., 0] = 1.0
    n_real = rng.integers(0, N_CELLS + 1, n)
    x[np.arange(N_CELLS)[None, :] >= n_real[:, None]] = 0.0
    if extreme:
        scale = rng.choice(np.array([1e2, -1e2, 1e3, -1e3], np.float32), n)
        big = rng.random(n) < 0.1
        x[big] *= scale[big, None, None]
    return x


#: A tiny QAT run on 8 cells: Φ 4, F 4, 1200 clusters, two epochs.
TINY_QAT = {
    "model": {"phi": "4", "f": "4", "max_cells": N_CELLS},
    "epochs": 2,
    "batch_size": 64,
    "learning_rate": 0.005,
    "seed": 3,
    "max_clusters": 1200,
}


@pytest.fixture(scope="module")
def qat_run(sim_file, tmp_path_factory):
    from calohls.model.qat import train_qat

    run = tmp_path_factory.mktemp("qat") / "tiny"
    train_qat(sim_file, run, QATConfig.model_validate(TINY_QAT))
    return run


@pytest.fixture(scope="module")
def model(qat_run):
    from calohls.model.run_folder import open_run

    return open_run(qat_run).model


@pytest.fixture(scope="module")
def firmware(model, tmp_path_factory):
    """The module's firmware folder: the QAT model checked on 1500 crafted clusters, Yosys run."""
    out = tmp_path_factory.mktemp("fw") / "tiny"
    result = build_firmware(model, inputs(1500, seed=1), out)
    return out, result


def _info(folder):
    return json.loads((folder / "firmware.json").read_text())


# -- build_firmware --------------------------------------------------------------------------------------------


def test_firmware_is_bit_exact_to_keras(firmware):
    out, result = firmware
    info = _info(out)
    assert info["clusters_checked"] == 1500 == result.clusters_checked
    assert info["differing"] == {"hls": 0, "rtl": 0} == result.differing
    assert info["max_abs_difference"] == {"hls": 0.0, "rtl": 0.0}
    assert info["bit_exact"] is True
    assert result.bit_exact


def test_firmware_json_records_resources_latency_and_options(firmware, model):
    out, result = firmware
    info = _info(out)
    resources = info["resources"]
    assert set(resources) == {"LUT", "FF", "CARRY", "DSP", "BRAM"}
    assert resources["LUT"] > 0
    assert resources["FF"] > 0
    assert resources["CARRY"] > 0
    assert resources["DSP"] == 0  # da4ml makes no multipliers
    assert resources == result.resources
    assert info["estimate"]["LUT"] > 0
    assert info["estimate"]["stages"] == info["latency"]["cycles"] >= 2
    assert info["latency"]["ns"] == info["latency"]["cycles"] * 2.5
    assert info["ii"] == 1
    assert (info["clock_period"], info["latency_cutoff"], info["latency_levels"]) == (2.5, 2.5, 5.0)
    assert (info["family"], info["part"]) == ("xcup", "xcvu13p-flga2577-2-e")
    assert info["timings"]["total"] >= info["timings"]["rtl_compile"] > 0
    assert {"hls_compile", "hls_predict", "rtl_predict", "synth"} <= set(info["timings"])
    for package in ("calohls", "keras", "hls4ml", "hgq2", "da4ml", "verilator", "yosys"):
        assert info["versions"][package]
    for path in info["files"].values():
        assert (out / path).exists()
    assert info["model"]["name"] == model.name
    assert info["model"]["parameters"] > 0


def test_config_yaml_holds_the_resolved_options(firmware):
    out, _ = firmware
    config = load_config(FirmwareConfig, yaml.safe_load((out / "config.yaml").read_text()))
    assert config == FirmwareConfig(clock_period=2.5, latency_cutoff=2.5, clusters=1500, synth=True, lut_budget=34_560)


def test_firmware_json_records_timing_and_the_l0_view(firmware):
    out, result = firmware
    info = _info(out)
    timing = TimingEstimate.from_json(info["timing"])
    assert timing == result.timing
    assert len(timing.stages) == info["latency"]["cycles"]
    assert info["timing"]["timing_met"] is (timing.period_ns <= 2.5)
    period = max(2.5, timing.period_ns)
    assert info["latency"]["ns_estimate"] == pytest.approx(info["latency"]["cycles"] * period, abs=1e-3)
    assert result.latency_estimate_ns == pytest.approx(info["latency"]["ns_estimate"], abs=1e-3)
    l0 = L0View.from_json(info["l0"])
    assert l0 == result.l0
    assert l0.lut_per_instance == info["resources"]["LUT"]
    assert l0.clusters_per_bx_per_instance == int(25.0 / period + 1e-9)
    assert l0.instances == 34_560 // info["resources"]["LUT"]
    assert l0.clusters_per_bx == l0.instances * l0.clusters_per_bx_per_instance


def test_firmware_folder_names_no_absolute_path(firmware):
    """The folder was built under a temporary name: its scripts and project files name their files relative to
    themselves, so that the folder (or a copy) rebuilds with the commands firmware.json records."""
    out, _ = firmware
    info = _info(out)
    assert info["rebuild"]["yosys"] == "cd rtl && yosys -s synth.ys"
    for name in ("rtl/synth.ys", "rtl/sim/build.sh", "hls/hls4ml_config.yml", "hls/build_lib.sh"):
        text = (out / name).read_text()
        assert ".partial" not in text
        assert str(out.parent) not in text
    assert "OutputDir: .\n" in (out / "hls/hls4ml_config.yml").read_text()


def test_existing_folder_is_refused_before_any_work(firmware, model):
    out, _ = firmware
    stamp = (out / "firmware.json").stat().st_mtime_ns
    with pytest.raises(FileExistsRefusedError, match="pass --overwrite"):
        build_firmware(model, inputs(10), out)
    assert (out / "firmware.json").stat().st_mtime_ns == stamp


def test_float_model_is_refused(tmp_path):
    from calohls.config import ModelConfig
    from calohls.model.deepsets import build_deepsets

    float_model = build_deepsets(ModelConfig(preset="tiny", max_cells=N_CELLS), N_FEATURES)
    with pytest.raises(ConversionError, match=r"needs a quantization-aware run \(make one with `calohls qat`\)") as err:
        build_firmware(float_model, inputs(10), tmp_path / "fw")
    assert "ptq_estimate" in str(err.value)
    assert not (tmp_path / "fw").exists()


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"clock_period": 0.0}, ConfigError, "clock_period=0.0 must be a positive finite number"),
        ({"clock_period": float("nan")}, ConfigError, "clock_period=nan must be a positive finite number"),
        ({"latency_cutoff": 5.0}, ConfigError, "latency_cutoff=5.0 ns exceeds clock_period=2.5 ns"),
        ({"family": "xc9"}, ConfigError, "family='xc9' is not a synth_xilinx family"),
    ],
)
def test_bad_options_fail_before_any_work(model, tmp_path, options, error, message):
    with pytest.raises(error, match=message):
        build_firmware(model, inputs(10), tmp_path / "fw", **options)
    assert not (tmp_path / "fw").exists()


def test_bad_inputs_fail_before_any_work(model, tmp_path):
    with pytest.raises(
        DataError,
        match=rf"x has shape \(10, 4, {N_FEATURES}\); the model takes n ≥ 1 clusters of shape \(8, {N_FEATURES}\)",
    ):
        build_firmware(model, np.zeros((10, 4, N_FEATURES)), tmp_path / "fw")
    assert not (tmp_path / "fw").exists()


def test_missing_tools_fail_before_any_work(monkeypatch, model, tmp_path):
    monkeypatch.setattr(tools.shutil, "which", lambda name: None)
    with pytest.raises(ToolMissingError, match="apt-get install"):
        build_firmware(model, inputs(10), tmp_path / "fw")
    monkeypatch.undo()
    monkeypatch.setattr(tools, "_package_root", lambda name: None)
    with pytest.raises(ToolMissingError, match=r"pip install 'calohls\[rtl\]'"):
        build_firmware(model, inputs(10), tmp_path / "fw", synth=False)
    assert not (tmp_path / "fw").exists()


# -- calohls firmware --------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("_restore_logging")
def test_cli_builds_checked_firmware_of_a_qat_run(qat_run, tmp_path):
    out = tmp_path / "fw"
    args = ["firmware", str(qat_run), "-o", str(out), "--clusters", "100", "--no-synth", "--clock-period", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "bit-exact on 100 clusters: C simulation 0 and RTL 0 differ" in result.stdout
    assert f"wrote {out}" in result.stdout
    info = _info(out)
    # without synthesis: no timing estimate, the L0 view at the target clock (3 ns: 8 clusters per crossing)
    assert info["timing"] is None
    assert info["l0"]["clock_source"] == "target (no estimate)"
    assert info["l0"]["clusters_per_bx_per_instance"] == 8
    assert "8 clusters per bunch crossing per instance at 333.3 MHz" in result.stdout
    assert info["bit_exact"] is True
    assert info["clusters_checked"] == 100
    assert info["resources"] is None
    assert info["source"]["run"] == str(qat_run.resolve())
    assert info["clock_period"] == 3.0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config == {"clock_period": 3.0, "latency_cutoff": 3.0, "clusters": 100, "synth": False, "lut_budget": 34_560}


@pytest.mark.usefixtures("_restore_logging")
def test_cli_refuses_a_float_run(tmp_path):
    run = tmp_path / "float"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"kind": "calohls-run", "stage": "train"}))
    result = CliRunner().invoke(main, ["firmware", str(run), "-o", str(tmp_path / "fw")])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert (
        "is a float run (stage 'train'); firmware needs a quantization-aware run: make one with `calohls qat`"
        in (lines[0])
    )
    assert not (tmp_path / "fw").exists()


@pytest.mark.usefixtures("_restore_logging")
def test_cli_refuses_impossible_options(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    result = CliRunner().invoke(main, ["firmware", str(run), "-o", str(tmp_path / "fw"), "--latency-cutoff", "4"])
    assert result.exit_code == 1
    assert "latency_cutoff=4.0 ns exceeds clock_period=2.5 ns" in result.stderr


def test_firmware_from_run_refuses_existing_output(tmp_path):
    (tmp_path / "fw").mkdir()
    with pytest.raises(FileExistsRefusedError):
        firmware_from_run(tmp_path / "missing-run", tmp_path / "fw")


@pytest.mark.parametrize("synthesised", [True, False])
def test_firmware_result_json_round_trip(tmp_path, synthesised):
    from calohls.firmware.build import FirmwareResult
    from calohls.firmware.l0 import l0_view
    from calohls.firmware.timing import StageTiming

    timing = TimingEstimate((StageTiming(0, 2.1, 3, 2, 0), StageTiming(1, 2.7, 4, 1, 1)), 2.5) if synthesised else None
    result = FirmwareResult(
        path=tmp_path / "fw",
        clusters_checked=100,
        differing={"hls": 0, "rtl": 0},
        bit_exact=True,
        resources={"LUT": 1200, "FF": 300, "CARRY": 40, "DSP": 0, "BRAM": 0.0} if synthesised else None,
        estimate={"LUT": 1150, "FF": 290},
        latency_cycles=2,
        latency_ns=5.0,
        ii=1,
        timings={"total": 1.5},
        timing=timing,
        l0=l0_view(1200, 1, 2.5, 2.7 if synthesised else None),
    )
    data = json.loads(json.dumps(result.to_json()))
    assert data["path"] == str(tmp_path / "fw")
    assert FirmwareResult.from_json(data) == result
