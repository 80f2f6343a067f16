"""hls4ml conversion, C simulation, traces, types and reports (real hls4ml and g++; one compiled model)."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import keras
import numpy as np
import pytest

from calohls.config import ModelConfig
from calohls.data.features import FEATURES
from calohls.errors import ConfigError, ConversionError, DataError, HLSError, InputFileError, PrecisionError
from calohls.firmware.hls import (
    ALL_LAYERS,
    Precision,
    compile_model,
    convert,
    csim_predict,
    hls_config,
    keras_trace,
    layer_types,
    parse_report,
    trace,
    write_project,
)
from calohls.model.deepsets import build_deepsets

N_CELLS = 8
N_FEATURES = len(FEATURES)
HLS_LAYERS = ["phi_1", "phi_1_relu", "phi_2", "phi_2_relu", "ksum", "f_1", "f_1_relu", "output"]


def _inputs(n: int, seed: int = 0) -> np.ndarray:
    """Random scaled inputs, real flag first, a varying number of real cells and all-zero padding."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_CELLS, N_FEATURES)).astype(np.float32)
    x[..., 0] = 1.0
    n_real = rng.integers(1, N_CELLS + 1, n)
    x[np.arange(N_CELLS)[None, :] >= n_real[:, None]] = 0.0
    return x


@pytest.fixture(scope="module")
def model() -> keras.Model:
    """The tiny DeepSets, with output weights large enough that the output depends visibly on the inputs."""
    m = build_deepsets(ModelConfig(preset="tiny", max_cells=N_CELLS), N_FEATURES, seed=7, output_mean=0.15)
    out = m.get_layer("output")
    out.kernel.assign(np.random.default_rng(3).normal(0.0, 0.4, out.kernel.shape).astype(np.float32))
    return m


@pytest.fixture(scope="module")
def compiled(model, tmp_path_factory):
    """The one compiled model of this file: hls4ml's default precision ap_fixed<24,12>."""
    hls_model = convert(model, Precision(default="ap_fixed<24,12>"), tmp_path_factory.mktemp("hls") / "prj")
    compile_model(hls_model)
    return hls_model


# -- precision configs ---------------------------------------------------------------------------------------------


def test_precision_checks_types_and_keys():
    with pytest.raises(PrecisionError, match="the default precision: integer bits 8 exceed total bits 4"):
        Precision(default="ap_fixed<4,8>")
    with pytest.raises(PrecisionError, match="the weight precision of layer 'phi_1': integer bits 8"):
        Precision(layers={"phi_1": {"weight": "ap_fixed<4,8>"}})
    with pytest.raises(PrecisionError, match="cannot parse precision 'float'"):
        Precision(default="float")
    with pytest.raises(PrecisionError, match="unknown rounding mode 'RNDX'"):
        Precision(default="ap_fixed<16,6,RNDX,SAT>")
    with pytest.raises(PrecisionError, match="cannot be 'auto'"):
        Precision(default="auto")
    with pytest.raises(ConfigError, match="unknown precision key 'weights' for layer 'phi_1'; use weight, bias"):
        Precision(layers={"phi_1": {"weights": "ap_fixed<8,3>"}})
    ok = Precision(default="fixed<16,6,RND,SAT,0>", layers={"ksum": {"accum": "ap_fixed<20, 9>", "result": "auto"}})
    assert pickle.loads(pickle.dumps(ok)) == ok
    assert hash(ok) == hash(Precision(**ok.as_dict()))
    with pytest.raises(TypeError):
        ok.layers["ksum"]["accum"] = "ap_fixed<8,3>"  # read-only


def test_hls_config_applies_overrides_and_keeps_auto(model):
    precision = Precision(
        default="ap_fixed<16,6>",
        layers={ALL_LAYERS: {"weight": "ap_fixed<10,3>"}, "f_1": {"weight": "ap_fixed<12,4>", "accum": "auto"}},
    )
    config = hls_config(model, precision)
    layers = config["LayerName"]
    assert list(layers) == ["cells", *HLS_LAYERS]
    assert config["Model"]["Strategy"] == "Latency"
    assert config["Model"]["ReuseFactor"] == 1
    assert config["Model"]["Precision"]["default"] == "fixed<16,6,TRN,WRAP,0>"
    assert all(entry["Trace"] is True for entry in layers.values())
    assert layers["phi_1"]["Precision"]["weight"] == "fixed<10,3,TRN,WRAP,0>"  # "*"
    assert layers["f_1"]["Precision"]["weight"] == "fixed<12,4,TRN,WRAP,0>"  # the layer's own entry wins
    assert layers["phi_1"]["Precision"]["accum"] == "auto"
    assert "weight" not in layers["ksum"]["Precision"]  # "*" only sets variables a layer has


def test_precision_names_are_checked_against_the_model(model, tmp_path):
    with pytest.raises(
        ConversionError, match=r"unknown layer 'phi_9' in the precision config; layers are: cells, phi_1"
    ):
        convert(model, Precision(layers={"phi_9": {"weight": "ap_fixed<8,3>"}}), tmp_path)
    with pytest.raises(
        ConversionError, match="layer 'ksum' has no 'weight' precision; set one of: result, accum for this layer"
    ):
        convert(model, Precision(layers={"ksum": {"weight": "ap_fixed<8,3>"}}), tmp_path)
    with pytest.raises(ConfigError, match="project_name '1x'"):
        convert(model, None, tmp_path, project_name="1x")


def test_default_precision_types_what_auto_becomes(model, tmp_path):
    """hls4ml's inference: lossless Dense/pointwise accumulators; ReLU outputs and the pooling sum at the default."""
    types = layer_types(convert(model, "ap_fixed<16,6>", tmp_path))
    assert list(types) == ["cells", *HLS_LAYERS]
    # 16+16 bits, 6+6 integer bits, + ceil(log2 17) = 5 for the sum, + 1 integer bit for the (zero uint<1>) bias
    assert types["phi_1"] == {
        "accum_t": "fixed<38,18,TRN,WRAP,0>",
        "result_t": "fixed<38,18,TRN,WRAP,0>",
        "weight_t": "fixed<16,6,TRN,WRAP,0>",
        "bias_t": "uint<1>",
    }
    assert types["phi_1_relu"]["result_t"] == "fixed<16,6,TRN,WRAP,0>"
    assert types["ksum"] == {"accum_t": "fixed<16,6,TRN,WRAP,0>", "result_t": "fixed<16,6,TRN,WRAP,0>"}
    assert types["f_1"]["bias_t"] == "fixed<16,6,TRN,WRAP,0>"


def test_split_puts_weight_and_data_types_on_the_right_variables(model, tmp_path):
    hls_model = convert(model, Precision.split(weights="ap_fixed<8,3>", data="ap_fixed<32,14>"), tmp_path)
    types = layer_types(hls_model)
    w, d = "fixed<8,3,TRN,WRAP,0>", "fixed<32,14,TRN,WRAP,0>"
    for name in ("phi_1", "phi_2", "f_1", "output"):
        assert types[name]["weight_t"] == w
        assert types[name]["accum_t"] == types[name]["result_t"] == d
    assert types["f_1"]["bias_t"] == types["output"]["bias_t"] == w
    assert types["phi_1"]["bias_t"] == "uint<1>"  # bias-free Φ: hls4ml's zero bias
    for name in ("cells", "phi_1_relu", "phi_2_relu", "ksum", "f_1_relu"):
        assert types[name]["result_t"] == d
    assert types["ksum"]["accum_t"] == d
    # the emulator reads the converted graph: weights and their types are attached without compiling
    phi_1 = next(layer for layer in hls_model.get_layers() if layer.name == "phi_1")
    assert phi_1.weights["weight"].data.size == N_FEATURES * 8
    assert str(phi_1.weights["weight"].type.precision) == w

    uniform = layer_types(convert(model, Precision.uniform("ap_fixed<12,4>"), tmp_path))
    assert {t for name, layer in uniform.items() for k, t in layer.items() if k not in ("table_t", "index_t")} == {
        "fixed<12,4,TRN,WRAP,0>",
        "uint<1>",
    }


def test_unconvertible_models_raise_conversion_error(tmp_path):
    cells = keras.Input((N_CELLS, N_FEATURES), name="cells")
    h = keras.layers.Dense(4, activation="relu", use_bias=False, name="phi_1")(cells)
    h = keras.layers.Lambda(lambda t: keras.ops.sum(t, axis=1), name="ksum")(h)
    lambda_model = keras.Model(cells, keras.layers.Dense(1, name="output")(h), name="with_lambda")
    with pytest.raises(ConversionError, match=r"cannot convert layer 'ksum' \(Lambda\) of model 'with_lambda'") as err:
        convert(lambda_model, None, tmp_path)
    assert "\n" not in str(err.value)


# -- C simulation and traces ---------------------------------------------------------------------------------------


def test_csim_is_close_to_keras(compiled, model):
    x = _inputs(200)
    y = csim_predict(compiled, x)
    assert y.shape == (200,)
    assert y.dtype == np.float64
    y_keras = model.predict(x, verbose=0)[:, 0]
    assert np.std(y_keras) > 0.05  # the check below is not trivially met
    assert np.max(np.abs(y - y_keras)) < 1e-2
    assert (Path(compiled.config.get_output_dir()) / "build.log").is_file()
    with pytest.raises(
        DataError, match=rf"x has shape \(3, 8\); the model takes arrays of shape \(n, 8, {len(FEATURES)}\)"
    ):
        csim_predict(compiled, np.zeros((3, 8)))


def test_trace_matches_keras_trace_per_layer(compiled, model, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("trace rebuilt the library")

    monkeypatch.setattr(compiled.config.backend, "compile", no_build)
    x = _inputs(64, seed=1)
    hls_layers = trace(compiled, x)
    ref = keras_trace(model, x)
    assert list(hls_layers) == list(ref) == HLS_LAYERS
    # ap_fixed<24,12> has 12 fractional bits; the truncations of inputs, weights and layer outputs add up to a few
    # LSB per layer (measured up to 18 LSB), whereas a wrong mapping (pre- vs post-activation) differs by O(1).
    lsb = 2.0**-12
    for name in HLS_LAYERS:
        shape = (64, *model.get_layer(name.removesuffix("_relu")).output.shape[1:])
        assert hls_layers[name].shape == ref[name].shape == shape
        assert np.max(np.abs(ref[name])) > 0.3, name
        assert np.max(np.abs(hls_layers[name] - ref[name])) < 32 * lsb, name
    np.testing.assert_allclose(hls_layers["output"][:, 0], csim_predict(compiled, x))


def test_keras_trace_splits_activations(model):
    x = _inputs(16, seed=2)
    ref = keras_trace(model, x)
    assert (ref["phi_1"] < 0).any()  # pre-activation
    np.testing.assert_allclose(ref["phi_1_relu"], np.maximum(ref["phi_1"], 0.0), atol=1e-6)
    np.testing.assert_allclose(ref["output"], model.predict(x, verbose=0), rtol=1e-6)


def test_compile_failure_names_the_log(model, tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "g++").write_text('#!/bin/sh\necho "g++: error: simulated compiler failure" >&2\nexit 1\n')
    (fake / "g++").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    hls_model = convert(model, None, tmp_path / "prj")
    log = tmp_path / "prj" / "build.log"
    with pytest.raises(HLSError, match="see the compiler output in " + str(log)):
        compile_model(hls_model)
    assert "simulated compiler failure" in log.read_text()


# -- HLS project and synthesis reports -----------------------------------------------------------------------------


def test_write_project_for_synthesis(model, tmp_path):
    folder = write_project(convert(model, None, tmp_path / "prj", project_name="ds"), vsynth=True)
    assert folder == tmp_path / "prj"
    assert (folder / "build_prj.tcl").is_file()
    assert (folder / "firmware" / "ds.cpp").is_file()
    opts = (folder / "build_opt.tcl").read_text()
    for line in ("csim       0", "synth      1", "cosim      0", "vsynth     1"):
        assert line in opts


_CSYNTH = """<profile>
<ReportVersion>
<Version>2023.2</Version>
</ReportVersion>
<UserAssignments>
<unit>ns</unit>
<ProductFamily>virtexuplus</ProductFamily>
<Part>xcvu13p-flga2577-2-e</Part>
<TopModelName>ds</TopModelName>
<TargetClockPeriod>5.00</TargetClockPeriod>
<ClockUncertainty>1.35</ClockUncertainty>
<FlowTarget>vivado</FlowTarget>
</UserAssignments>
<PerformanceEstimates>
<PipelineType>dataflow</PipelineType>
<SummaryOfTimingAnalysis>
<unit>ns</unit>
<EstimatedClockPeriod>3.649</EstimatedClockPeriod>
</SummaryOfTimingAnalysis>
<SummaryOfOverallLatency>
<unit>clock cycles</unit>
<Best-caseLatency>17</Best-caseLatency>
<Average-caseLatency>17</Average-caseLatency>
<Worst-caseLatency>19</Worst-caseLatency>
<Best-caseRealTimeLatency>85.000 ns</Best-caseRealTimeLatency>
<Average-caseRealTimeLatency>85.000 ns</Average-caseRealTimeLatency>
<Worst-caseRealTimeLatency>95.000 ns</Worst-caseRealTimeLatency>
<Interval-min>1</Interval-min>
<Interval-max>1</Interval-max>
</SummaryOfOverallLatency>
</PerformanceEstimates>
<AreaEstimates>
<Resources>
<BRAM_18K>0</BRAM_18K>
<DSP>212</DSP>
<FF>10533</FF>
<LUT>40210</LUT>
<URAM>0</URAM>
</Resources>
<AvailableResources>
<BRAM_18K>5376</BRAM_18K>
<DSP>12288</DSP>
<FF>3456000</FF>
<LUT>1728000</LUT>
<URAM>1280</URAM>
</AvailableResources>
</AreaEstimates>
</profile>
"""

_HLS_APP = """\
<AutoPilot:project xmlns:AutoPilot="com.autoesl.autopilot.project" projectType="C/C++"
    name="ds_prj" top="ds">
    <files>
        <file name="../../ds_test.cpp" sc="0" tb="1" cflags=""/>
        <file name="firmware/ds.cpp" sc="0" tb="false" cflags=""/>
    </files>
    <solutions>
        <solution name="solution1" status=""/>
    </solutions>
</AutoPilot:project>
"""

_VIVADO = """1. CLB Logic
------------

+----------------------------+-------+-------+------------+-----------+-------+
|          Site Type         |  Used | Fixed | Prohibited | Available | Util% |
+----------------------------+-------+-------+------------+-----------+-------+
| CLB LUTs*                  | 31250 |     0 |          0 |   1728000 |  1.81 |
|   LUT as Logic             | 31250 |     0 |          0 |   1728000 |  1.81 |
| CLB Registers              |  9876 |     0 |          0 |   3456000 |  0.29 |
+----------------------------+-------+-------+------------+-----------+-------+


2. BLOCKRAM
-----------

+-------------------+------+-------+------------+-----------+-------+
|     Site Type     | Used | Fixed | Prohibited | Available | Util% |
+-------------------+------+-------+------------+-----------+-------+
| Block RAM Tile    |  0.5 |     0 |          0 |      2688 |  0.02 |
| URAM              |    0 |     0 |          0 |      1280 |  0.00 |
+-------------------+------+-------+------------+-----------+-------+


3. ARITHMETIC
-------------

+----------------+------+-------+------------+-----------+-------+
|    Site Type   | Used | Fixed | Prohibited | Available | Util% |
+----------------+------+-------+------------+-----------+-------+
| DSPs           |  198 |     0 |          0 |     12288 |  1.61 |
|   DSP48E2 only |  198 |       |            |           |       |
+----------------+------+-------+------------+-----------+-------+
"""


def _synthesised_project(folder: Path) -> Path:
    """The files a Vitis HLS C synthesis and Vivado synthesis leave in an hls4ml project of top function ``ds``."""
    (folder / "project.tcl").parent.mkdir(parents=True, exist_ok=True)
    (folder / "project.tcl").write_text('variable project_name\nset project_name "ds"\nset backend "vitis"\n')
    report = folder / "ds_prj" / "solution1" / "syn" / "report"
    report.mkdir(parents=True)
    (folder / "ds_prj" / "hls.app").write_text(_HLS_APP)
    (report / "ds_csynth.xml").write_text(_CSYNTH)
    (folder / "vivado_synth.rpt").write_text(_VIVADO)
    return report / "ds_csynth.xml"


def test_parse_report_of_a_project_and_of_an_xml(tmp_path):
    xml = _synthesised_project(tmp_path / "prj")
    report = parse_report(tmp_path / "prj")
    assert report.latency_best_cycles == 17
    assert report.latency_worst_cycles == 19
    assert report.interval_min_cycles == report.interval_max_cycles == 1
    assert report.clock_target_ns == 5.0
    assert report.clock_estimated_ns == pytest.approx(3.649)
    assert report.resources == {"BRAM_18K": 0, "DSP": 212, "FF": 10533, "LUT": 40210, "URAM": 0}
    assert report.available["DSP"] == 12288
    assert report.vivado == {"LUT": 31250, "FF": 9876, "BRAM_TILE": 0.5, "URAM": 0, "DSP": 198}
    assert report.report == str(xml)
    alone = parse_report(xml)
    assert alone == dataclasses.replace(report, vivado=None)


def test_parse_report_errors_name_the_path(tmp_path):
    with pytest.raises(InputFileError, match=f"synthesis report {tmp_path / 'none.xml'} not found"):
        parse_report(tmp_path / "none.xml")
    with pytest.raises(InputFileError, match="no hls4ml project folder"):
        parse_report(tmp_path)
    xml = _synthesised_project(tmp_path / "prj")
    xml.write_text(_CSYNTH[: len(_CSYNTH) // 2])
    with pytest.raises(InputFileError, match=f"{xml} is not a readable HLS csynth XML report"):
        parse_report(xml)
    with pytest.raises(InputFileError, match="cannot read the synthesis report of"):
        parse_report(tmp_path / "prj")
    xml.unlink()
    with pytest.raises(InputFileError, match=f"synthesis report {xml} not found; run C synthesis"):
        parse_report(tmp_path / "prj")
