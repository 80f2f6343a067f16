"""The fixed-point emulator against the real hls4ml C simulation (hls4ml and g++), bit for bit, and its own checks.

The compiled grid (two model sizes, nine precision configurations, one compilation each) compares every traced
layer and the predictions with ``np.array_equal``. The other tests need no compiler.
"""

from __future__ import annotations

import hls4ml
import keras
import numpy as np
import pytest

from calohls.config import ModelConfig
from calohls.errors import ConversionError, DataError, NonFiniteError
from calohls.model.deepsets import build_deepsets
from calohls.quant import _kernels
from calohls.quant.emulate import LAYER_KINDS, EmulatedLayer, Emulator, _cast_kernel, _Format
from calohls.quant.fixed import FixedType, parse_fixed, quantize, quantize_int

N_FEATURES = 17
N_SAMPLES = 300

#: name -> (phi widths, f widths, max_cells)
MODELS = {"tiny": ((8, 8), (8,), 8), "small": ((16, 16), (16, 8), 16)}

_WEIGHTS_8_2 = {name: {"weight": "ap_fixed<8,2>"} for name in ("phi_1", "phi_2", "f_1", "output")}
_RND_SAT = "ap_fixed<12,4,AP_RND,AP_SAT>"
#: Many quantisation and overflow modes at once: rounded products, saturating and wrapping accumulators (one that
#: cannot overflow), per-term rounding in the pooling sum, unsigned activations, an integer bias and ternary
#: (ap_int<2>) weights.
_MODES = {
    "phi_1": {"accum": "ap_fixed<18,7,AP_RND_ZERO,AP_WRAP>", "result": "ap_fixed<16,6,AP_RND_INF,AP_SAT>"},
    "phi_1_relu": {"result": "ap_ufixed<10,4,AP_RND_MIN_INF,AP_SAT>"},
    "phi_2": {"accum": "ap_fixed<16,6,AP_TRN_ZERO,AP_SAT_ZERO>", "result": "ap_fixed<14,6,AP_RND,AP_WRAP>"},
    "phi_2_relu": {"result": "ap_ufixed<12,5,AP_TRN,AP_SAT>"},
    "ksum": {"accum": "ap_fixed<12,6,AP_RND_CONV,AP_SAT>", "result": "ap_fixed<10,4,AP_RND_ZERO,AP_SAT_SYM>"},
    "f_1": {"accum": "ap_fixed<20,8,AP_TRN,AP_WRAP>", "result": "ap_fixed<12,5,AP_RND_INF,AP_WRAP>"},
    "f_2": {"weight": "ap_int<2>", "bias": "ap_int<3>", "accum": "ap_fixed<24,12,AP_RND,AP_SAT>"},
    "output": {"result": "ap_fixed<16,6,AP_RND_CONV,AP_SAT>"},
}

#: name -> (model, default precision, per-layer precision overrides; "*" applies to every layer with an accum_t)
CONFIGS = {
    "tiny-16.6": ("tiny", "ap_fixed<16,6>", {}),
    # phi_2 sums exact products in an accumulator with 3 integer bits that wraps.
    "tiny-8.3-overflow": ("tiny", "ap_fixed<8,3>", {"phi_2": {"accum": "ap_fixed<16,3>"}}),
    "tiny-32.14": ("tiny", "ap_fixed<32,14>", {}),
    "tiny-rnd-sat-accum": ("tiny", _RND_SAT, {"*": {"accum": _RND_SAT}}),
    "tiny-split": ("tiny", "ap_fixed<32,14>", _WEIGHTS_8_2),
    "small-16.6": ("small", "ap_fixed<16,6>", {}),
    "small-8.3-overflow": ("small", "ap_fixed<8,3>", {}),
    "small-rnd-sat": ("small", _RND_SAT, {}),
    "small-modes": ("small", "ap_fixed<14,5,AP_RND_CONV,AP_SAT_SYM>", _MODES),
    # Sums of products beyond 2**53 (accumulated in int64, not float64) in ~70-bit accumulators.
    "small-32.14-fine-weights": ("small", "ap_fixed<32,14>", {"*": {"weight": "ap_fixed<32,4>"}}),
}


def _model(name: str) -> keras.Model:
    """A DeepSets with weights scaled up and random biases, so that narrow precisions overflow."""
    phi, f, cells = MODELS[name]
    model = build_deepsets(ModelConfig(phi=phi, f=f, max_cells=cells), N_FEATURES, seed=11)
    rng = np.random.default_rng(5)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            kernel = rng.normal(0.0, 1.2 / np.sqrt(weights[0].shape[-2]), weights[0].shape)
            layer.set_weights([kernel.astype(np.float32)] + [rng.normal(0.0, 0.5, b.shape) for b in weights[1:]])
    return model


def _inputs(n: int, cells: int, seed: int = 0) -> np.ndarray:
    """Random float64 inputs with all-zero padded cells, some large (overflowing) values, ties and tiny values."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 2.0, (n, cells, N_FEATURES))
    x[..., 0] = 1.0
    n_real = rng.integers(1, cells + 1, n)
    x[:, :, 1] = rng.choice([-40.0, 40.0, 3.0], n)[:, None]  # beyond ap_fixed<8,3> and ap_fixed<16,6>
    x[:, :, 2] = rng.integers(-4000, 4000, (n, cells)) / 2.0**11  # exact ties for up to 10 fractional bits
    x[:, :, 3] = rng.choice([1e-7, -1e-7, 0.0], (n, cells))
    x[np.arange(cells)[None, :] >= n_real[:, None]] = 0.0
    return x


def _hls_config(model: keras.Model, default: str, overrides: dict) -> dict:
    config = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis", default_precision=default)
    for name, layer in config["LayerName"].items():
        layer["Trace"] = True
        if "accum" in layer["Precision"]:
            layer["Precision"].update(overrides.get("*", {}))
        layer["Precision"].update(overrides.get(name, {}))
    return config


def _convert(model: keras.Model, config: dict, out_dir, io_type: str = "io_parallel"):
    return hls4ml.converters.convert_from_keras_model(
        model, hls_config=config, backend="Vitis", io_type=io_type, output_dir=str(out_dir)
    )


@pytest.fixture(scope="session")
def models() -> dict[str, keras.Model]:
    return {name: _model(name) for name in MODELS}


@pytest.fixture(scope="session", params=sorted(CONFIGS))
def csim(request, models, tmp_path_factory) -> dict:
    """One compiled configuration: its emulator (built before compiling), inputs, C-simulation traces and outputs."""
    model_name, default, overrides = CONFIGS[request.param]
    model = models[model_name]
    hls_model = _convert(model, _hls_config(model, default, overrides), tmp_path_factory.mktemp(request.param))
    emulator = Emulator.from_hls(hls_model)  # from the converted, not yet compiled, model
    x = _inputs(N_SAMPLES, MODELS[model_name][2])
    _, trace = hls_model.trace(x)  # compiles (with tracing) once
    return {
        "name": request.param,
        "emulator": emulator,
        "x": x,
        "trace": trace,
        "predict": np.asarray(hls_model.predict(x)),
    }


# -- bit-exactness against the C simulation -------------------------------------------------------------------


def test_predictions_are_bit_exact(csim):
    got = csim["emulator"].predict(csim["x"])
    assert got.dtype == np.float64
    assert got.shape == (N_SAMPLES,)
    assert np.array_equal(got, csim["predict"].reshape(-1))


def test_every_layer_is_bit_exact(csim):
    got = csim["emulator"].trace(csim["x"])
    assert set(got) == set(csim["trace"])
    for name, expected in csim["trace"].items():
        assert got[name].shape == expected.shape, name
        assert np.array_equal(got[name], expected), f"{csim['name']}: layer {name} differs"


def test_the_grid_exercises_overflow_and_saturation(csim):
    """Guard the grid's purpose: the narrow configurations do wrap or saturate somewhere."""
    trace = csim["trace"]
    if csim["name"] in ("tiny-8.3-overflow", "small-8.3-overflow"):
        pre, post = trace["phi_1"], trace["phi_1_relu"]
        top = parse_fixed("ap_fixed<8,3>").max
        wrapped = (pre > top + 0.5) & (post < top - 0.5)
        assert wrapped.any()
    if csim["name"] in ("small-rnd-sat", "tiny-rnd-sat-accum"):
        assert (trace["phi_1_relu"] == parse_fixed(_RND_SAT).max).any()


# -- emulator checks without a compiler ------------------------------------------------------------------------

ROUNDINGS = ("TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_INF", "RND_MIN_INF", "RND_CONV")
OVERFLOWS = ("WRAP", "SAT", "SAT_ZERO", "SAT_SYM")


@pytest.mark.parametrize("overflow", OVERFLOWS)
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_integer_casts_match_the_double_conversion(rounding, overflow):
    """Casting an exact mantissa equals converting the same (exactly representable) value from a double."""
    rng = np.random.default_rng(ROUNDINGS.index(rounding) * 7 + OVERFLOWS.index(overflow))
    for width, integer, signed in (
        (1, 1, True),
        (1, 0, False),
        (6, 2, True),
        (8, 3, False),
        (13, -2, True),
        (24, 12, True),
        (40, 20, False),
        (52, 40, True),
    ):
        t = FixedType(width, integer, signed, rounding, overflow)
        fmt = _Format.of(t, "test")
        frac = int(rng.integers(-3, 40))
        m = rng.integers(-(2**52), 2**52, 400) >> rng.integers(0, 52, 400)
        m[:8] = [0, 1, -1, 2**51, -(2**51), 3, -3, 5]
        expected = quantize_int(np.ldexp(m.astype(np.float64), -frac), t)
        exact = np.array([fmt.cast_exact(int(v), frac) for v in m])
        assert np.array_equal(exact, expected), t
        s = frac - t.fractional
        if s >= 0 or int(np.abs(m).max()) << -s < 2**62:  # the compiled kernel's domain
            out = np.empty_like(m)
            _cast_kernel(m, s, fmt.params(), False, out)
            assert np.array_equal(out, expected), t


@pytest.mark.parametrize("overflow", OVERFLOWS)
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_float_casts_match_the_integer_casts(rounding, overflow):
    """The float64 kernels (mantissas below 2**52) cast exactly as the int64 reference, relu included."""
    rng = np.random.default_rng(ROUNDINGS.index(rounding) * 5 + OVERFLOWS.index(overflow))
    for width, integer, signed in ((1, 1, True), (1, 0, False), (6, 2, True), (8, 3, False), (13, -2, True),
                                   (24, 12, True), (40, 20, False), (52, 40, True), (60, 30, True)):  # fmt: skip
        fmt = _Format.of(FixedType(width, integer, signed, rounding, overflow), "test")
        m = rng.integers(-(2**51), 2**51, 600) >> rng.integers(0, 51, 600)
        m[:10] = [0, 1, -1, 2**51 - 1, -(2**51) + 1, 3, -3, 5, -5, 2]
        for s in (int(rng.integers(1, 45)), 0, -int(rng.integers(1, 4)), 0 if width > 50 else 50):
            m_s = m >> max(-s, 0) + 1 if s < 0 else m  # keep |m << -s| below 2**52
            for relu in (False, True):
                expected = np.empty_like(m_s)
                _cast_kernel(m_s, s, fmt.params(), relu, expected)
                got = np.empty(m_s.shape)
                _kernels.fcast_kernel(m_s.astype(np.float64), 2.0**-s, fmt.fparams(), relu, got)
                assert np.array_equal(got, expected.astype(np.float64)), (fmt, s, relu)


@pytest.mark.parametrize("overflow", ["WRAP", "SAT", "SAT_SYM"])
@pytest.mark.parametrize("rounding", ["TRN", "RND"])
def test_one_loop_casts_match_the_general_kernels(rounding, overflow):
    """The one-loop product cast (bias, relu or not, one TRN/RND cast) equals the general post kernel, for
    float32 and float64 sums and outputs, and in float32 arithmetic for values below 2**23."""
    rng = np.random.default_rng(ROUNDINGS.index(rounding) * 3 + OVERFLOWS.index(overflow))
    for width, integer, signed in ((1, 1, True), (6, 2, True), (8, 3, False), (18, 10, True), (24, 4, True),
                                   (26, 10, False), (40, 20, True)):  # fmt: skip
        fmt = _Format.of(FixedType(width, integer, signed, rounding, overflow), "test")
        wide = _Format.of(FixedType(60, 40, True), "accumulator")
        sums = (rng.integers(-(2**23), 2**23, (70, 9)) >> rng.integers(0, 23, (70, 9))).astype(np.float64)
        sums[0, :6] = [0, 1, -1, 2, 2**23 - 1001, -(2**23) + 1001]
        bias = rng.integers(-1000, 1000, 9).astype(np.float64)
        for s, relu, dtype in ((0, False, np.float64), (3, True, np.float32), (9, False, np.float32), (20, True, None)):
            dtype = dtype if dtype is not None and fmt.magnitude < 2**24 else np.float64  # outputs held exactly
            expected = np.empty(sums.shape)
            how = np.array([1, 1, 1 if relu else 2, 0], np.int64)
            _kernels.fpost_kernel(sums, 1.0, bias, how, wide.fparams(), 1.0, wide.fparams(), 2.0**-s,
                                  fmt.fparams(), expected, expected)  # fmt: skip
            half = 0.5 if rounding == "RND" else 0.0
            c = np.array([1.0, 0.0 if relu else -np.inf, 2.0**-s, half, *fmt.fparams()[:4]])
            for arithmetic in {np.float64, dtype}:  # float32 arithmetic for float32 sums (all below 2**23 here)
                got = np.empty(sums.shape, dtype)
                _kernels.fpost_simple_kernel(sums.astype(dtype), bias.astype(arithmetic), c.astype(arithmetic),
                                             overflow == "WRAP", got)  # fmt: skip
                assert np.array_equal(got, expected), (fmt, s, relu, dtype, arithmetic)


@pytest.mark.parametrize(
    "spelling", ["ap_fixed<18,10>", "ap_fixed<8,3,AP_RND_CONV,AP_SAT_SYM>", "ap_ufixed<10,2,AP_RND,AP_SAT>"]
)
def test_one_pass_input_conversion_matches_quantize(spelling):
    """The one-pass conversion of finite inputs (float32 and float64; padded cells dropped or not) agrees with
    ``quantize``."""
    t = parse_fixed(spelling)
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 4.0, (40, 6, 3))
    x[::3] = np.ldexp(rng.integers(-1000, 1000, x[::3].shape).astype(np.float64), -int(t.fractional) - 1)  # ties
    x[:, 4:] = 0.0
    for dtype in (np.float64, np.float32):
        values = x.astype(dtype)
        expected = quantize(values.astype(np.float64), t).reshape(-1, 3)
        emulator = Emulator([EmulatedLayer("in", "input", (6, 3), t)])
        for compact in (False, True):
            converted = emulator._converted_input(values, compact)
            assert converted is not None
            rows, top, _, keep = converted
            if compact:
                assert np.array_equal(rows * 2.0**-t.fractional, expected[keep]), (dtype, compact)
                assert np.array_equal(keep, (expected != 0).any(axis=1))
            else:
                assert np.array_equal(rows.reshape(-1, 3) * 2.0**-t.fractional, expected), (dtype, compact)
            assert top == np.abs(expected).max() * 2.0**t.fractional


def test_layer_kinds_are_declared_once():
    """Every kind names its hls4ml class, runner and (for layers after the input) a da4ml cost tracer."""
    assert next(iter(LAYER_KINDS)) == "input"
    for key, kind in LAYER_KINDS.items():
        assert kind.key == key
        if key != "input":
            assert callable(kind.run)
            assert callable(kind.takes)
            assert kind.cost.startswith("calohls.firmware.ptq_rtl:")


@pytest.mark.parametrize(
    "spelling",
    [
        "ap_fixed<16,6>",
        "ap_fixed<8,3,AP_RND_CONV,AP_SAT_SYM>",
        "ap_ufixed<10,2,AP_RND_INF,AP_SAT>",
        "ap_int<5>",
        "ap_fixed<40,-4,AP_RND_ZERO,AP_WRAP>",
        "ap_fixed<53,30,AP_TRN_ZERO,AP_SAT_ZERO>",
    ],
)
def test_input_conversion_matches_quantize(spelling):
    """The input conversion agrees with ``quantize`` on ordinary, huge, tiny, subnormal and tie values."""
    t = parse_fixed(spelling)
    rng = np.random.default_rng(1)
    x = np.concatenate(
        [
            rng.normal(0.0, 10.0, 500),
            np.ldexp(rng.integers(-1000, 1000, 300).astype(np.float64), -int(t.fractional) - 1),  # ties
            np.ldexp(rng.normal(0.0, 1.0, 200), rng.integers(-1080, 100, 200)),  # subnormal to huge
            [0.0, -0.0, 1e300, -1e300, 5e-324, -5e-324, 2.0**60, -(2.0**60)],
        ]
    )
    emulator = Emulator([EmulatedLayer("in", "input", (1,), t)])
    assert np.array_equal(emulator.predict(x[:, None]), quantize(x, t))


def test_float32_inputs_are_read_as_the_doubles_they_equal(models, tmp_path):
    """float32 inputs (the project's features) give what their float64 copies give, as the C simulation reads
    each float32 as the double it equals; also float32 subnormals, which are normal doubles."""
    model = models["small"]
    hls_model = _convert(model, _hls_config(model, "ap_fixed<12,5,AP_RND,AP_SAT>", _MODES), tmp_path / "prj")
    emulator = Emulator.from_hls(hls_model)
    x = _inputs(50, 16, seed=5).astype(np.float32)
    traced32, traced64 = emulator.trace(x), emulator.trace(x.astype(np.float64))
    assert traced32.keys() == traced64.keys()
    for name in traced32:
        assert np.array_equal(traced32[name], traced64[name]), name
    t = parse_fixed("ap_fixed<40,-4,AP_RND_CONV,AP_SAT>")
    rng = np.random.default_rng(2)
    values = np.concatenate(
        [rng.normal(0.0, 1e-3, 300), np.ldexp(rng.normal(0.0, 1.0, 100), rng.integers(-149, -120, 100)), [0.0, -0.0]]
    ).astype(np.float32)
    single = Emulator([EmulatedLayer("in", "input", (1,), t)])
    assert np.array_equal(single.predict(values[:, None]), quantize(values.astype(np.float64), t))


def test_predict_is_the_traced_output_for_any_batch_size(models, tmp_path):
    model = models["small"]
    hls_model = _convert(model, _hls_config(model, "ap_fixed<12,5,AP_RND,AP_SAT>", _MODES), tmp_path / "prj")
    emulator = Emulator.from_hls(hls_model)
    x = _inputs(50, 16, seed=3).astype(np.float32)
    expected = emulator.trace(x)["output"].reshape(-1)
    for batch_size in (None, 1, 7, 50):
        assert np.array_equal(emulator.predict(x, batch_size=batch_size), expected)


def test_unsupported_layers_and_options_are_refused(tmp_path):
    cells = keras.Input((4, 3), name="cells")
    h = keras.layers.Dense(4, use_bias=False, activation="relu", name="phi")(cells)
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    leaky = keras.layers.LeakyReLU(name="leak")(pooled)
    model = keras.Model(cells, keras.layers.Dense(1, name="out")(leaky))
    config = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis")
    with pytest.raises(ConversionError, match=r"layer 'leak' of kind ParametrizedActivation is not supported"):
        Emulator.from_hls(_convert(model, config, tmp_path / "leaky"))

    model = keras.Model(cells, keras.layers.Dense(1, activation="tanh", name="out")(pooled))
    config = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis")
    with pytest.raises(ConversionError, match=r"layer 'out_tanh' of kind Activation: activation 'tanh'"):
        Emulator.from_hls(_convert(model, config, tmp_path / "tanh"))

    model = build_deepsets(ModelConfig(phi=(4,), f=(4,), max_cells=4), 3)
    config = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis")
    with pytest.raises(ConversionError, match="io_stream is not emulated"):
        Emulator.from_hls(_convert(model, config, tmp_path / "stream", io_type="io_stream"))


def test_values_beyond_int64_are_refused_not_rounded():
    wide = FixedType(60, 40)  # 20 fractional bits
    layers = [
        EmulatedLayer("in", "input", (2,), wide),
        EmulatedLayer(
            "d",
            "dense",
            (1,),
            FixedType(62, 62),
            accum=FixedType(62, 62),
            weight=wide,
            bias=wide,
            weights=np.array([[2**30], [2**30]]),
            biases=np.array([0]),
        ),
    ]
    emulator = Emulator(layers)
    assert emulator.predict(np.array([[1.0, 2.0]]))[0] == 3.0 * 2**10  # mantissa products of 2**50 and 2**51
    with pytest.raises(ConversionError, match=r"layer 'd' \(dense\).*exceed the int64 emulation"):
        emulator.predict(np.array([[2.0**30, 1.0]]))  # a mantissa product of 2**80


def test_inputs_are_checked(models, tmp_path):
    model = models["tiny"]
    emulator = Emulator.from_hls(_convert(model, _hls_config(model, "ap_fixed<16,6>", {}), tmp_path / "prj"))
    assert emulator.input_shape == (8, N_FEATURES)
    assert emulator.output_shape == (1,)
    assert emulator.input_type == parse_fixed("ap_fixed<16,6>")
    assert emulator.predict(np.zeros((0, 8, N_FEATURES))).shape == (0,)
    with pytest.raises(DataError, match="do not match the network input"):
        emulator.predict(np.zeros((3, 8, N_FEATURES - 1)))
    x = _inputs(4, 8)
    x[2, 0, 5] = np.nan
    with pytest.raises(NonFiniteError):
        emulator.predict(x)


@pytest.mark.parametrize("pooling", ["average", "max"])
def test_skipping_padded_cells_changes_nothing(pooling, tmp_path, monkeypatch):
    """Leading per-cell layers run on the non-zero cells alone; outputs and traces equal those over all cells."""
    from calohls.quant import emulate

    cells = keras.Input((12, 5), name="cells")
    h = keras.layers.Dense(8, use_bias=False, activation="relu", name="phi_1")(cells)
    h = keras.layers.Dense(6, use_bias=False, name="phi_2")(h)  # linear: negative values reach the pooling
    pool = keras.layers.GlobalMaxPooling1D if pooling == "max" else keras.layers.GlobalAveragePooling1D
    model = keras.Model(cells, keras.layers.Dense(1, name="output")(pool(name="ksum")(h)))
    rng = np.random.default_rng(4)
    x = rng.normal(0.0, 2.0, (200, 12, 5))
    x[np.arange(12)[None, :] >= rng.integers(1, 13, 200)[:, None]] = 0.0
    x[:5] = rng.normal(0.0, 2.0, (5, 12, 5))  # some clusters without padding
    for precision in ("ap_fixed<10,3,RND_CONV,WRAP>", "ap_fixed<9,3,RND,SAT>"):
        config = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vitis",
                                                      default_precision=precision)  # fmt: skip
        emulator = Emulator.from_hls(_convert(model, config, tmp_path / f"{pooling}-{precision[9:13]}"))
        assert emulator._cell_ops == 2  # phi_1 with its relu, phi_2
        results = {}
        for share in (1.0, -1.0):  # always and never skip
            monkeypatch.setattr(emulate, "_COMPACT_SHARE", share)
            results[share] = emulator.predict_and_trace(x, 150, batch_size=16)
        assert np.array_equal(results[1.0][0], results[-1.0][0])
        for name, values in results[-1.0][1].items():
            assert np.array_equal(results[1.0][1][name], values), name
