"""da4ml logic of float DeepSets at PTQ precisions: bit-exact to the emulator and the hls4ml C simulation."""

from __future__ import annotations

import numpy as np
import pytest

from calohls.config import ModelConfig
from calohls.data.features import FEATURES
from calohls.errors import ConversionError
from calohls.firmware.hls import Precision, compile_model, convert, csim_predict
from calohls.firmware.ptq_rtl import ptq_estimate, ptq_trace
from calohls.firmware.rtl import rtl_predict, write_logic
from calohls.model.deepsets import build_deepsets
from calohls.quant.emulate import Emulator

N_FEATURES = len(FEATURES)

#: Precisions covering the paths of the trace: lossless ('auto') accumulators; a KSum accumulator that wraps (so the
#: sums turn negative before the division); every type narrow (products rounded one by one); rounding and
#: saturation; split weights and data.
PRECISIONS = {
    "default": Precision(),
    "narrow_default": Precision(default="ap_fixed<10,4>"),
    "uniform": Precision.uniform("ap_fixed<12,3>"),
    "rnd_sat": Precision(default="ap_fixed<14,5,RND,SAT>"),
    "uniform_rnd_sat_sym": Precision.uniform("ap_fixed<12,4,RND,SAT_SYM>"),
    "ksum_accum": Precision(default="ap_fixed<16,6>", layers={"ksum": {"accum": "ap_fixed<12,3>"}}),
    "split": Precision.split(weights="ap_fixed<6,2>", data="ap_fixed<14,6>"),
}


def _model(max_cells: int):
    """The tiny float DeepSets, with output weights large enough that the output depends visibly on the inputs."""
    model = build_deepsets(ModelConfig(preset="tiny", max_cells=max_cells), N_FEATURES, seed=7, output_mean=0.15)
    out = model.get_layer("output")
    out.kernel.assign(np.random.default_rng(3).normal(0.0, 0.4, out.kernel.shape).astype(np.float32))
    return model


def _inputs(n: int, max_cells: int, seed: int = 0) -> np.ndarray:
    """Scaled inputs: the real flag, 0 to max_cells real cells, all-zero padding, a tenth of them 50 times larger."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, max_cells, N_FEATURES)).astype(np.float32)
    x[..., 0] = 1.0
    n_real = rng.integers(0, max_cells + 1, n)
    x[np.arange(max_cells)[None, :] >= n_real[:, None]] = 0.0
    x[: n // 10] *= 50.0
    return x


@pytest.fixture(scope="module")
def model():
    return _model(8)


def _emulated(model, precision, tmp_path):
    return Emulator.from_hls(convert(model, precision, tmp_path / "prj"))


@pytest.mark.parametrize("name", list(PRECISIONS))
def test_trace_is_bit_exact_to_the_emulator(model, tmp_path, name):
    x = _inputs(2000, 8)
    expected = _emulated(model, PRECISIONS[name], tmp_path).predict(x)
    got = ptq_trace(model, PRECISIONS[name]).predict(x)
    assert got.shape == (2000,)
    assert np.array_equal(got, expected)
    assert len(np.unique(got)) > 50


def test_wrapping_sums_are_exercised(model, tmp_path):
    """In the narrow precision the KSum accumulator wraps, so negative sums meet the truncating division."""
    x = _inputs(2000, 8)
    ksum = _emulated(model, PRECISIONS["narrow_default"], tmp_path).trace(x)["ksum"]
    assert (ksum < 0).any()


@pytest.mark.parametrize("cells", [6, 5])
def test_division_by_a_cell_count_that_is_no_power_of_two(tmp_path, cells):
    model = _model(cells)
    x = _inputs(2000, cells, seed=cells)
    for precision in (PRECISIONS["default"], PRECISIONS["narrow_default"]):
        expected = _emulated(model, precision, tmp_path / str(hash(precision))).predict(x)
        assert np.array_equal(ptq_trace(model, precision).predict(x), expected)


def test_trace_is_bit_exact_to_the_c_simulation(model, tmp_path):
    precision = PRECISIONS["narrow_default"]
    hls_model = convert(model, precision, tmp_path / "prj")
    compile_model(hls_model)
    x = _inputs(1000, 8, seed=4)
    assert np.array_equal(ptq_trace(model, precision).predict(x), csim_predict(hls_model, x))


def test_estimate(model):
    wide = ptq_estimate(model, "ap_fixed<16,6>")
    narrow = ptq_estimate(model, Precision(default="ap_fixed<10,4>"))
    for est in (wide, narrow):
        assert est.lut > 0
        assert est.ff > 0
        assert est.stages >= 1
        assert est.latency_ns == est.stages * 2.5
        assert est.multipliers == 0
    assert narrow.lut < wide.lut
    assert wide.precision == {"default": "ap_fixed<16,6>", "layers": {}}
    assert ptq_estimate(model, None).lut == wide.lut  # hls4ml's default precision
    assert ptq_estimate(model, "ap_fixed<16,6>", latency_cutoff=1.0).stages > wide.stages


def test_unsupported_modes_are_refused(model):
    with pytest.raises(
        ConversionError, match=r"rounding mode RND_CONV of .* is not supported by da4ml; use TRN or RND"
    ):
        ptq_trace(model, Precision.uniform("ap_fixed<12,4,RND_CONV>"))
    with pytest.raises(ConversionError, match=r"overflow mode SAT_ZERO .* not supported by da4ml; use WRAP or SAT"):
        ptq_trace(model, Precision(default="ap_fixed<12,4,TRN,SAT_ZERO>"))


def test_verilog_of_a_ptq_design(tmp_path):
    """A PTQ design written as Verilog simulates like its logic; one with outputs wider than 32 bits is refused."""
    model = build_deepsets(ModelConfig(phi=(2,), f=(2,), max_cells=4), N_FEATURES, seed=1, output_mean=0.1)
    narrow = ptq_trace(model, Precision.uniform("ap_fixed<10,4>"))
    design = write_logic(narrow.comb, tmp_path / "narrow")
    x = _inputs(500, 4, seed=5)
    assert np.array_equal(rtl_predict(design, x), narrow.predict(x))
    wide = write_logic(ptq_trace(model, Precision(default="ap_fixed<32,12>")).comb, tmp_path / "wide")
    assert wide.estimate.output_bits > 32
    with pytest.raises(
        ConversionError, match="32-bit inputs and 42-bit outputs; the RTL simulation carries at most 32"
    ):
        rtl_predict(wide, x)
