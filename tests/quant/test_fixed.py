"""Fixed-point types: spellings, validation, and bit-exactness against the C++ ap_fixed headers compiled with g++."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from calohls.errors import ConfigError, PrecisionError
from calohls.quant.fixed import (
    OVERFLOW_MODES,
    ROUNDING_MODES,
    FixedType,
    _mantissa_exact,
    int_type,
    parse_fixed,
    quantize,
    quantize_int,
)

# -- spellings ----------------------------------------------------------------------------------------------------

RND_SAT = FixedType(16, 6, rounding="RND", overflow="SAT")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ap_fixed<16,6>", FixedType(16, 6)),
        ("ap_fixed<16, 6>", FixedType(16, 6)),
        ("  ap_fixed < 16 ,6 >  ", FixedType(16, 6)),
        ("ap_fixed<16,6,AP_RND,AP_SAT>", RND_SAT),
        ("ap_fixed<16,6,AP_RND,AP_SAT,0>", RND_SAT),
        ("ap_fixed<16, 6, AP_RND, AP_SAT, 0>", RND_SAT),
        ("fixed<16,6,RND,SAT,0>", RND_SAT),
        ("fixed<16,6,RND,SAT>", RND_SAT),
        ("fixed<16,6,rnd,sat>", RND_SAT),
        ("fixed<16,6,AP_RND,SAT>", RND_SAT),
        ("ap_fixed<16,6,AP_RND>", FixedType(16, 6, rounding="RND")),
        ("fixed<16,6>", FixedType(16, 6)),
        ("fixed<16,6,TRN,WRAP,0>", FixedType(16, 6)),
        ("ap_ufixed<8,3>", FixedType(8, 3, signed=False)),
        ("ufixed<8,3,RND_CONV,SAT_SYM,0>", FixedType(8, 3, False, "RND_CONV", "SAT_SYM")),
        ("ap_fixed<8,-2,AP_TRN_ZERO,AP_SAT_ZERO>", FixedType(8, -2, True, "TRN_ZERO", "SAT_ZERO")),
        ("ap_fixed<10,+3,AP_RND_MIN_INF>", FixedType(10, 3, rounding="RND_MIN_INF")),
        ("fixed<24,24,RND_INF,WRAP,0>", FixedType(24, 24, rounding="RND_INF")),
        ("ap_fixed<1,1>", FixedType(1, 1)),
        ("ap_int<8>", int_type(8)),
        ("int<8>", int_type(8)),
        ("ap_uint<8>", int_type(8, signed=False)),
        ("uint<1>", int_type(1, signed=False)),
        ("int < 64 >", int_type(64)),
    ],
)
def test_parse_spellings(text, expected):
    assert parse_fixed(text) == expected


@pytest.mark.parametrize(
    ("t", "ap", "hls"),
    [
        (FixedType(16, 6), "ap_fixed<16,6>", "fixed<16,6,TRN,WRAP,0>"),
        (FixedType(16, 6, rounding="RND"), "ap_fixed<16,6,AP_RND>", "fixed<16,6,RND,WRAP,0>"),
        (FixedType(16, 6, overflow="SAT"), "ap_fixed<16,6,AP_TRN,AP_SAT>", "fixed<16,6,TRN,SAT,0>"),
        (RND_SAT, "ap_fixed<16,6,AP_RND,AP_SAT>", "fixed<16,6,RND,SAT,0>"),
        (FixedType(8, 3, signed=False), "ap_ufixed<8,3>", "ufixed<8,3,TRN,WRAP,0>"),
        (FixedType(8, -2, False, "RND_CONV", "SAT_SYM"), "ap_ufixed<8,-2,AP_RND_CONV,AP_SAT_SYM>", None),
        (FixedType(8, 8), "ap_fixed<8,8>", "fixed<8,8,TRN,WRAP,0>"),  # floors: not an ap_int
        (int_type(8), "ap_int<8>", "int<8>"),
        (int_type(1, signed=False), "ap_uint<1>", "uint<1>"),
        (FixedType(12, 12, rounding="TRN_ZERO"), "ap_int<12>", "int<12>"),
    ],
)
def test_formatting(t, ap, hls):
    assert t.ap() == ap
    assert str(t) == ap
    if hls is not None:
        assert t.hls4ml() == hls
    assert parse_fixed(t.ap()) == t
    assert parse_fixed(t.hls4ml()) == t


def _spelling_types() -> list[FixedType]:
    shapes = [(1, 1), (1, 0), (4, 2), (8, -3), (16, 6), (24, 24), (40, 17), (64, 64), (1024, 512)]
    types = [
        FixedType(w, i, signed, q, o)
        for w, i in shapes
        for signed in (True, False)
        for q in ROUNDING_MODES
        for o in OVERFLOW_MODES
    ]
    return types + [int_type(w, s) for w in (1, 8, 33, 1024) for s in (True, False)]


def test_spellings_round_trip_through_calohls_and_hls4ml():
    fpga_types = importlib.import_module("hls4ml.backends.fpga.fpga_types")
    from hls4ml.backends.fpga.fpga_backend import FPGABackend

    converter = fpga_types.APTypeConverter()
    for t in _spelling_types():
        assert parse_fixed(t.ap()) == t, t
        assert parse_fixed(t.hls4ml()) == t, t
        assert parse_fixed(f" {t.ap().replace(',', ' , ')} ") == t, t
        for spelling in (t.ap(), t.hls4ml()):  # hls4ml reads both spellings as the same type
            precision = FPGABackend.convert_precision_string(spelling)
            assert FixedType.from_hls4ml(precision) == t, spelling
            assert str(precision) == t.hls4ml(), spelling
            # and writes C++ that reads back as the same type; its backend-wrapped types convert too
            wrapped = converter.convert(precision)
            assert parse_fixed(wrapped.definition_cpp()) == t, spelling
            assert FixedType.from_hls4ml(wrapped) == t, spelling


def test_from_hls4ml():
    types = importlib.import_module("hls4ml.model.types")
    assert FixedType.from_hls4ml(types.FixedPrecisionType(16, 6, True, "RND", "SAT")) == RND_SAT
    assert FixedType.from_hls4ml(types.FixedPrecisionType(8, 3, False)) == FixedType(8, 3, signed=False)
    enums = types.FixedPrecisionType(18, 8, True, types.RoundingMode.RND_CONV, types.SaturationMode.SAT_SYM, 0)
    assert FixedType.from_hls4ml(enums) == FixedType(18, 8, True, "RND_CONV", "SAT_SYM")
    assert FixedType.from_hls4ml(types.IntegerPrecisionType(8)) == int_type(8)
    assert FixedType.from_hls4ml(types.IntegerPrecisionType(3, signed=False)) == int_type(3, signed=False)
    assert FixedType.from_hls4ml(types.XnorPrecisionType()) == int_type(1, signed=False)
    with pytest.raises(PrecisionError, match=r"hls4ml precision int<8> \(ExponentPrecisionType\)"):
        FixedType.from_hls4ml(types.ExponentPrecisionType(8))
    with pytest.raises(PrecisionError, match="FloatPrecisionType"):
        FixedType.from_hls4ml(types.FloatPrecisionType())
    with pytest.raises(PrecisionError, match="saturation bits 2"):
        FixedType.from_hls4ml(types.FixedPrecisionType(16, 6, True, "TRN", "WRAP", 2))


def test_normalisation_equality_and_with():
    assert FixedType(16, 6, rounding="AP_RND", overflow="sat") == RND_SAT
    assert FixedType(np.int64(16), np.int32(6), np.bool_(True), " rnd ", "AP_SAT") == RND_SAT
    assert type(FixedType(np.int64(16), 6).width) is int
    assert len({RND_SAT, parse_fixed("fixed<16,6,RND,SAT,0>"), FixedType(16, 6)}) == 2
    assert RND_SAT.with_(width=18, integer=8) == FixedType(18, 8, rounding="RND", overflow="SAT")
    assert RND_SAT.with_(signed=False).ap() == "ap_ufixed<16,6,AP_RND,AP_SAT>"
    with pytest.raises(PrecisionError, match="integer bits 20 exceed total bits 16"):
        RND_SAT.with_(integer=20)


def test_properties():
    t = FixedType(16, 6)
    assert (t.fractional, t.lsb, t.min, t.max) == (10, 2.0**-10, -32.0, 32.0 - 2.0**-10)
    assert (t.min_int, t.max_int) == (-(2**15), 2**15 - 1)
    u = FixedType(8, 3, signed=False)
    assert (u.fractional, u.lsb, u.min, u.max, u.max_int) == (5, 2.0**-5, 0.0, 8.0 - 2.0**-5, 255)
    frac = FixedType(8, -2)  # multiples of 2^-10 in [-2^-3, 2^-3)
    assert (frac.fractional, frac.lsb, frac.min, frac.max) == (10, 2.0**-10, -(2.0**-3), 2.0**-3 - 2.0**-10)
    assert FixedType(8, 4, overflow="SAT_SYM").min == -FixedType(8, 4).max
    assert FixedType(1, 1, overflow="SAT_SYM").min == -1.0  # the header cannot lift the only negative pattern
    assert int_type(8).is_int
    assert not FixedType(8, 8).is_int
    wide = FixedType(100, 40)
    assert wide.max == float(Fraction(2**99 - 1, 2**60))
    assert FixedType(1024, 1024, signed=False).max == np.inf


def test_properties_agree_with_hls4ml():
    types = importlib.import_module("hls4ml.model.types")
    for w, i in [(2, 1), (8, 3), (16, 6), (18, -2), (24, 24)]:
        for signed in (True, False):
            for o in OVERFLOW_MODES:
                precision = types.FixedPrecisionType(w, i, signed, "RND", o)
                t = FixedType.from_hls4ml(precision)
                assert (t.min, t.max, t.fractional) == (precision.min, precision.max, precision.fractional), t


# -- validation ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FixedType(4, 8), "integer bits 8 exceed total bits 4 in ap_fixed<4,8>; use at most 4 integer bits"),
        (lambda: parse_fixed("ap_fixed<4,8>"), "integer bits 8 exceed total bits 4 in ap_fixed<4,8>"),
        (lambda: parse_fixed("ufixed<4,5,RND,SAT,0>"), "integer bits 5 exceed total bits 4 in ap_ufixed<4,5,AP_RND"),
        (lambda: FixedType(0, 0), "total bits 0 out of range in ap_fixed<0,0>; use 1 to 1024 total bits"),
        (lambda: FixedType(-3, -5), "total bits -3 out of range"),
        (lambda: FixedType(1025, 8), "total bits 1025 out of range"),
        (lambda: parse_fixed("int<0>"), "total bits 0 out of range in ap_int<0>"),
        (lambda: parse_fixed("ap_uint<2000>"), "total bits 2000 out of range in ap_uint<2000>"),
        (lambda: FixedType(16, -1010), "fractional bits 1026 exceed 1024 in ap_fixed<16,-1010>; use at least -1008"),
        (lambda: FixedType(16.0, 6), "total bits 16.0 in ap_fixed<16.0,6> is not an integer"),
        (lambda: FixedType(16, True), "integer bits True in ap_fixed<16,True> is not an integer"),
        (lambda: FixedType(16, 6, signed="yes"), "signed='yes' in ap_fixed<16,6> is not a bool"),
        (lambda: FixedType(16, 6, rounding="RNDX"), "unknown rounding mode 'RNDX' in ap_fixed<16,6>; use one of TRN,"),
        (lambda: FixedType(16, 6, overflow="WRAP_SM"), "unknown overflow mode 'WRAP_SM' in ap_fixed<16,6>"),
        (lambda: FixedType(16, 6, overflow=None), "unknown overflow mode None"),
        (lambda: parse_fixed("fixed<16,6,FOO,SAT>"), "unknown rounding mode 'FOO'"),
        (lambda: parse_fixed("fixed<16,6,RND,SATT>"), "unknown overflow mode 'SATT'"),
        (lambda: parse_fixed("fixed<16,6,SAT>"), "unknown rounding mode 'SAT'"),
        (lambda: FixedType(16, 6, sat_bits=2), "saturation bits 2 in ap_fixed<16,6> are not supported; use 0"),
        (lambda: parse_fixed("ap_fixed<16,6,AP_TRN,AP_WRAP,3>"), "saturation bits 3 in ap_fixed<16,6> are not"),
        (lambda: quantize(1.0, 16), "precision 16 is neither a FixedType nor a spelling"),
    ],
)
def test_validation_errors_name_the_value(make, message):
    with pytest.raises(PrecisionError, match=re.escape(message)):
        make()


@pytest.mark.parametrize(
    "text",
    [
        "ap_fixd<16,6>",
        "",
        "float",
        "ap_fixed",
        "ap_fixed<16>",
        "ap_fixed<16,6,RND,SAT,0,1>",
        "ap_fixed<16,,RND>",
        "ap_fixed<16,6,>",
        "ap_fixed<16,6.5>",
        "fixed<a,b>",
        "ap_fixed<16,6>>",
        "ap_int<8,4>",
        "ap_int<>",
        "ac_fixed<16,6,true>",
        "AP_FIXED<16,6>",
        "ap_fixed<16,6,RND,SAT,x>",
    ],
)
def test_garbage_text_is_refused(text):
    expected = f"cannot parse precision {text!r}; write it as ap_fixed<W,I> or fixed<W,I,RND,SAT>"
    with pytest.raises(PrecisionError, match=re.escape(expected)):
        parse_fixed(text)


def test_precision_error_is_a_config_error():
    assert issubclass(PrecisionError, ConfigError)
    assert issubclass(PrecisionError, ValueError)
    with pytest.raises(PrecisionError, match="cannot parse precision None"):
        parse_fixed(None)


# -- quantization by hand -----------------------------------------------------------------------------------------

# ap_fixed<8,4>: LSB 1/16. Ties at ±1/32 and ±3/32, and a value just above a tie.
TIES = [1 / 32, -1 / 32, 3 / 32, -3 / 32, 1 / 32 + 2**-30]


@pytest.mark.parametrize(
    ("rounding", "lsbs"),
    [
        ("TRN", [0, -1, 1, -2, 0]),
        ("TRN_ZERO", [0, 0, 1, -1, 0]),
        ("RND", [1, 0, 2, -1, 1]),
        ("RND_ZERO", [0, 0, 1, -1, 1]),
        ("RND_INF", [1, -1, 2, -2, 1]),
        ("RND_MIN_INF", [0, -1, 1, -2, 1]),
        ("RND_CONV", [0, 0, 2, -2, 1]),
    ],
)
def test_rounding_modes_by_hand(rounding, lsbs):
    t = FixedType(8, 4, rounding=rounding)
    np.testing.assert_array_equal(quantize_int(TIES, t), lsbs)
    np.testing.assert_array_equal(quantize(TIES, t), np.array(lsbs) / 16)


@pytest.mark.parametrize(
    ("overflow", "values"),
    [
        ("WRAP", [-8.0, 7.5, 4.0, -8.0, 7.9375]),
        ("SAT", [7.9375, -8.0, 7.9375, -8.0, 7.9375]),
        ("SAT_ZERO", [0.0, 0.0, 0.0, -8.0, 7.9375]),
        ("SAT_SYM", [7.9375, -7.9375, 7.9375, -7.9375, 7.9375]),
    ],
)
def test_overflow_modes_by_hand(overflow, values):
    np.testing.assert_array_equal(quantize([8.0, -8.5, 20.0, -8.0, 7.9375], FixedType(8, 4, overflow=overflow)), values)


def test_unsigned_and_integer_types_by_hand():
    x = [-0.25, 3.9, 4.0, -2.7, 2.7]
    np.testing.assert_array_equal(quantize(x, "ap_ufixed<4,2>"), [3.75, 3.75, 0.0, 1.25, 2.5])
    np.testing.assert_array_equal(quantize(x, "ap_ufixed<4,2,AP_TRN,AP_SAT>"), [0.0, 3.75, 3.75, 0.0, 2.5])
    np.testing.assert_array_equal(quantize(x, "ap_int<3>"), [0, 3, -4, -2, 2])  # towards zero, then wrap
    np.testing.assert_array_equal(quantize(x, "ap_fixed<3,3>"), [-1, 3, -4, -3, 2])  # towards -inf
    np.testing.assert_array_equal(quantize(x, "ap_uint<2>"), [0, 3, 0, 2, 2])


def test_shapes_dtypes_and_special_values():
    t = FixedType(16, 6, rounding="RND", overflow="SAT")
    scalar = quantize(0.1, t)
    assert isinstance(scalar, np.ndarray)
    assert scalar.shape == ()
    assert scalar == 0.099609375
    grid = np.linspace(-40, 40, 24, dtype=np.float32).reshape(2, 3, 4)
    assert quantize(grid, t).shape == (2, 3, 4)
    assert quantize(grid, t).dtype == np.float64
    assert quantize_int(grid, t).dtype == np.int64
    np.testing.assert_array_equal(quantize(grid, t), quantize(grid.astype(np.float64), t))
    assert quantize_int([1.0], "ap_fixed<64,32>").dtype == np.int64
    assert quantize_int([1.0], "ap_ufixed<64,32>").dtype == object
    assert quantize_int([1.0], "ap_fixed<100,50>").tolist() == [2**50]
    assert quantize([], t).shape == (0,)
    special = [np.inf, -np.inf, np.nan, -np.nan, -0.0, 5e-324]
    np.testing.assert_array_equal(quantize(special, t), [t.max, t.min, t.max, t.min, 0.0, 0.0])
    np.testing.assert_array_equal(quantize(special, FixedType(16, 6)), 0.0)
    assert not np.signbit(quantize([-0.0, -1e-9], "ap_fixed<8,4,AP_RND>")).any()


def test_wide_types_are_exact_beyond_the_float_mantissa():
    x = np.array([2.0**40 + 0.75, -(2.0**40) - 0.5, 1.0 + 2**-52, -3.0 * 2**-60, 2.0**62 + 2**10])
    for t in ("ap_fixed<64,42,AP_RND_CONV>", "ap_fixed<64,32,AP_RND,AP_SAT>", "ap_ufixed<96,64,AP_TRN_ZERO>"):
        fractional = parse_fixed(t).fractional
        exact = [int(q) for q in _mantissa_exact(x, parse_fixed(t))]
        assert [int(q) for q in quantize_int(x, t)] == exact, t
        assert quantize(x, t).tolist() == [float(Fraction(q, 2**fractional)) for q in exact], t
    # one fractional bit: ties to even at 2^41 + 1.5 and 2^41 + 0.5
    assert quantize_int([2.0**40 + 0.75, 2.0**40 + 0.25], "ap_fixed<64,63,AP_RND_CONV>").tolist() == [2**41 + 2, 2**41]


# -- bit-exactness against the C++ headers ------------------------------------------------------------------------

# Shapes (W, I) checked with all 28 rounding x overflow combinations, signed and unsigned: 1 bit (integer only),
# purely fractional, small, and wide enough for the rounding carry to run far from the LSB.
_FULL_SHAPES = [(1, 1), (3, -2), (6, 2), (40, 17)]
# Further shapes with 4 combinations each, rotating so that every rounding and every overflow mode meets every kind
# of shape: the float path limit (53), the int64 path (54..64), the exact path (above 64, and ap_ufixed<64,I>),
# I <= 0, I = W, and 1024 fractional bits, where the header's reading of subnormals shows.
_MORE_SHAPES = [
    (1, 0),
    (2, -7),
    (4, 4),
    (5, 1),
    (8, 3),
    (12, 12),
    (16, 6),
    (18, 8),
    (24, -3),
    (32, 16),
    (33, 33),
    (48, 20),
    (48, 48),
    (53, 21),
    (53, 53),
    (16, -1008),
    (54, 20),
    (60, -4),
    (64, 32),
    (64, 64),
    (80, 31),
    (100, 100),
]
_INT_WIDTHS = [1, 2, 8, 16, 33, 53, 64, 70]


def _cpp_types() -> list[FixedType]:
    types = []
    for w, i in _FULL_SHAPES:
        for signed in (True, False):
            types += [FixedType(w, i, signed, q, o) for q in ROUNDING_MODES for o in OVERFLOW_MODES]
    n_q, n_o = len(ROUNDING_MODES), len(OVERFLOW_MODES)
    for k, (w, i) in enumerate(_MORE_SHAPES):
        for s, signed in enumerate((True, False)):
            for j in range(4):
                q, o = ROUNDING_MODES[(4 * k + j + s) % n_q], OVERFLOW_MODES[(k + j + s) % n_o]
                types.append(FixedType(w, i, signed, q, o))
    return types


CPP_TYPES = _cpp_types()
CPP_INT_TYPES = [int_type(w, s) for w in _INT_WIDTHS for s in (True, False)]


def _test_values() -> np.ndarray:
    """About 5000 doubles: per shape exact mantissas, ties (half an LSB) and generic values spread log-uniformly
    from one LSB to four times the range, the range limits with their neighbours, random doubles of all scales and
    the specials (zeros, subnormals, extremes, inf, NaN)."""
    rng = np.random.default_rng(20241125)
    parts = []
    shapes = sorted({(w, i) for w, i in _FULL_SHAPES + _MORE_SHAPES} | {(w, w) for w in _INT_WIDTHS})
    for w, i in shapes:
        f = w - i
        n = 20
        k = np.floor(np.exp2(rng.uniform(0, w + 2, 3 * n))) * rng.choice([-1.0, 1.0], 3 * n)
        frac = np.concatenate([np.zeros(n), np.full(n, 0.5), rng.uniform(0, 1, n)])
        edges = np.array([0, 1, 2, 2 ** (w - 1) - 1, 2 ** (w - 1), 2**w - 1, 2**w], dtype=np.float64)
        edges = np.concatenate([edges, -edges, -edges - 1])
        near = np.array([0.0, 0.5, -0.5, 0.25])
        k = np.concatenate([k, np.repeat(edges, len(near))])
        frac = np.concatenate([frac, np.tile(near, len(edges))])
        parts.append(np.ldexp(k + frac, -f))
    parts.append(rng.choice([-1.0, 1.0], 500) * np.exp2(rng.uniform(-70, 70, 500)))
    parts.append(rng.normal(0, 30, 200))
    tiny, big = np.finfo(np.float64).tiny, np.finfo(np.float64).max
    special = [0.0, 5e-324, 1e-310, 3e-320, tiny, 1e-300, 0.5, 0.25, 0.3, 0.75, 1.5, 2.5, 1e15, 1e300, big, np.inf]
    parts.append(np.array(special + [-s for s in special] + [np.nan, -np.nan]))
    return np.concatenate(parts)


def _ap_types_dir() -> Path:
    spec = importlib.util.find_spec("hls4ml")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("hls4ml (the [hls] extra) is not installed: no ap_fixed headers; install calohls[all]")
    path = Path(spec.submodule_search_locations[0]) / "templates" / "vivado" / "ap_types"
    if not (path / "ap_fixed.h").is_file():
        pytest.fail(f"no ap_fixed.h under {path}; reinstall hls4ml")
    return path


def _type_line(t: FixedType) -> str:
    return f"FIXED({t.width}, {t.integer}, {str(t.signed).lower()}, AP_{t.rounding}, AP_{t.overflow})"


@pytest.fixture(scope="module")
def cpp_reference(tmp_path_factory) -> dict:
    """Compile the reference program (two binaries in parallel, half of the types each), run it on the test values
    and read back the held mantissas: ``{"x": values, FixedType: [int, ...], ("int", FixedType): [...],
    ("int via fixed", FixedType): [...]}``."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.fail("g++ is not installed; install it (apt-get install g++), as .ci/run does")
    ap_dir = _ap_types_dir()
    work = tmp_path_factory.mktemp("ap_cast")
    x = _test_values()
    stdin = "\n".join(f"{b:016x}" for b in x.view(np.uint64).tolist()) + "\n"
    entries = [(t, "fixed") for t in CPP_TYPES] + [(t, "int") for t in CPP_INT_TYPES]
    halves = [entries[0::2], entries[1::2]]
    builds = []
    for n, half in enumerate(halves):
        lines = [_type_line(t) if kind == "fixed" else f"INT({t.width}, {str(t.signed).lower()})" for t, kind in half]
        (work / f"types{n}.inc").write_text("\n".join(lines) + "\n")
        command = [compiler, "-O1", "-std=c++14", f"-I{ap_dir}", f'-DTYPE_LIST="{work / f"types{n}.inc"}"']
        command += [str(Path(__file__).with_name("ap_cast.cpp")), "-o", str(work / f"ap_cast{n}")]
        builds.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for build in builds:
        log = build.communicate()[0]
        assert build.returncode == 0, f"g++ failed:\n{log}"

    reference: dict = {"x": x}
    for n, half in enumerate(halves):
        run = subprocess.run([work / f"ap_cast{n}"], input=stdin, capture_output=True, text=True, check=True)
        out = run.stdout.split()
        start = 0
        for t, kind in half:
            blocks = ["fixed"] if kind == "fixed" else ["int", "int via fixed"]
            for block in blocks:
                raw = [int(word, 16) for word in out[start : start + len(x)]]
                start += len(x)
                if t.signed:
                    raw = [r - (1 << t.width) if r >> (t.width - 1) else r for r in raw]
                reference[t if block == "fixed" else (block, t)] = raw
        assert start == len(out), "the reference program printed an unexpected number of lines"
    return reference


def _assert_same(x: np.ndarray, got, expected: list[int], what: str) -> None:
    got = [int(q) for q in np.asarray(got).tolist()]
    bad = [n for n, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b]
    shown = ", ".join(f"x={x[n]!r}: {got[n]} vs C++ {expected[n]}" for n in bad[:5])
    assert not bad, f"{what}: {len(bad)} of {len(x)} mantissas differ from C++ ({shown})"


@pytest.mark.parametrize("t", CPP_TYPES, ids=str)
def test_bit_exact_against_cpp(cpp_reference, t):
    x, expected = cpp_reference["x"], cpp_reference[t]
    _assert_same(x, quantize_int(x, t), expected, f"quantize_int {t}")
    _assert_same(x, _mantissa_exact(x, t), expected, f"exact path {t}")
    values = quantize(x, t)
    if t.width <= 53:  # the held value itself
        np.testing.assert_array_equal(values, np.ldexp(np.array(expected, dtype=np.float64), -t.fractional))
    else:  # the nearest double
        np.testing.assert_array_equal(values, [float(Fraction(q, 1 << t.fractional)) for q in expected])
    assert not np.signbit(values[values == 0]).any()


@pytest.mark.parametrize("t", CPP_INT_TYPES, ids=str)
def test_integer_types_against_cpp(cpp_reference, t):
    x = cpp_reference["x"]
    got = quantize_int(x, t)
    # From fixed point (what hls4ml's casts do): towards zero, then wrap, exactly.
    held = np.isfinite(x) & (np.abs(x) < 2.0**63)
    held[held] = np.floor(np.ldexp(x[held], 64)) == np.ldexp(x[held], 64)
    index = np.flatnonzero(held)
    via_fixed = cpp_reference[("int via fixed", t)]
    _assert_same(x[index], got[index], [via_fixed[n] for n in index], f"{t} from ap_fixed<128,64>")
    # From a double: the same, except the header defect on (-0.5, 0), where the ap_int constructor gives bits ...01.
    direct = cpp_reference[("int", t)]
    defect = (x < 0) & (x > -0.5)
    normal = np.flatnonzero(~defect)
    _assert_same(x[normal], got[normal], [direct[n] for n in normal], f"{t} from double")
    one = -1 if t.signed and t.width == 1 else 1
    assert all(direct[n] == one for n in np.flatnonzero(defect))
    assert defect.sum() > 10
    assert len(index) > len(x) // 2


def test_cpp_grid_covers_every_mode():
    narrow = {(t.signed, t.rounding, t.overflow) for t in CPP_TYPES if t.width <= 53}
    assert len(narrow) == 2 * len(ROUNDING_MODES) * len(OVERFLOW_MODES)
    for signed in (True, False):  # wider than the float path: every mode, each with several partners
        wide = [t for t in CPP_TYPES if t.width > 53 and t.signed == signed]
        assert {t.rounding for t in wide} == set(ROUNDING_MODES)
        assert {t.overflow for t in wide} == set(OVERFLOW_MODES)
    assert {t.width for t in CPP_TYPES} >= {1, 48, 53, 54, 64, 100}
    assert min(t.integer for t in CPP_TYPES) < 0
