"""hls4ml conversion of the DeepSets networks: precision configs, C simulation, per-layer traces, HLS projects and
synthesis reports.

Backend Vitis, ``io_parallel``, Latency strategy, ReuseFactor 1 (every multiplication in parallel, II = 1).

Layer names
-----------
hls4ml names its layers after the Keras layers and splits every layer that has an activation into two: for a Keras
``Dense(..., activation="relu", name="phi_1")`` on the ``(N, F)`` cells it makes ``phi_1`` (a PointwiseConv1D for
the Φ layers, a Dense for the F layers) whose output is the **pre-activation** ``x @ W + b``, followed by
``phi_1_relu`` (an Activation) whose output is the Keras layer's output. ``ksum`` (GlobalAveragePooling1D → hls4ml
GlobalPooling1D) and ``output`` (linear) keep one name each; the input layer is ``cells``. :func:`trace` returns
every layer but the input, and :func:`keras_trace` the Keras values under the same names.

What hls4ml's ``'auto'`` types become (hls4ml 1.3.0)
----------------------------------------------------
:class:`Precision` gives a default type ``T`` and per-layer overrides. Every weight, bias, result and accumulator
not overridden stays ``'auto'`` as ``config_from_keras_model`` wrote it, and hls4ml's own type inference resolves it
— calohls keeps that behaviour (override a variable to pin it; :func:`layer_types` shows what each became):

* weights and biases: ``T``. A bias-free Φ layer gets a zero bias of type ``uint<1>`` whatever the config says.
* Dense / PointwiseConv1D ``accum`` and ``result``: lossless for the sum of products — ``W_in + W_w + ⌈log2 n_in⌉``
  bits with ``I_in + I_w + ⌈log2 n_in⌉`` integer bits, plus one integer bit for the bias addition (also for the
  zero ``uint<1>`` bias). The pre-activation is therefore never rounded; with ``T = ap_fixed<16,6>`` and 17 input
  features it is ``fixed<38,18>``.
* Activation (ReLU) ``result``: ``T``, not inferred — every ReLU output is re-quantized to ``T`` (truncation,
  wrap-around overflow unless ``T`` says ``SAT``).
* ``ksum`` (GlobalPooling1D) ``accum`` and ``result``: ``T``. hls4ml infers lossless accumulators for Pooling1D/2D
  but not for GlobalPooling1D, so the sum over the N cells is accumulated in ``T`` before the division by N and
  wraps around as soon as it leaves ``T``'s range. Override ``ksum``'s ``accum`` (e.g. ``T`` with ``log2 N`` more
  integer bits) to avoid it.
* the input ``cells``: ``T``; ReLU ``table`` types are unused (ReLU needs no lookup table).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from calohls.errors import (
    ConfigError,
    ConversionError,
    DataError,
    HLSError,
    InputFileError,
    NonFiniteError,
    PrecisionError,
)
from calohls.quant.fixed import parse_fixed

if TYPE_CHECKING:
    import keras
    from hls4ml.model import ModelGraph

__all__ = [
    "ALL_LAYERS",
    "PRECISION_KEYS",
    "HLSReport",
    "Precision",
    "compile_model",
    "convert",
    "convert_quantized",
    "csim_predict",
    "hls_config",
    "keras_trace",
    "layer_types",
    "parse_report",
    "relative_project_paths",
    "trace",
    "write_project",
]

#: Variables whose type a :class:`Precision` can set, as hls4ml names them in its per-layer ``Precision`` config.
PRECISION_KEYS: tuple[str, ...] = ("weight", "bias", "result", "accum", "table")

#: Layer key of :attr:`Precision.layers` that applies to every layer having the variable (layer entries win).
ALL_LAYERS = "*"

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _hls_type(text: object, where: str, *, allow_auto: bool = False) -> str:
    """The hls4ml spelling of a fixed-point or integer type (``ap_fixed<16,6>`` → ``fixed<16,6,TRN,WRAP,0>``).

    Raises:
        PrecisionError: ``text`` is no such type, or an impossible or unsupported one (``ap_fixed<4,8>``).
    """
    if isinstance(text, str) and text.strip().lower() == "auto":
        if allow_auto:
            return "auto"
        raise PrecisionError(f"{where} cannot be 'auto'; give a type such as ap_fixed<16,6>")
    try:
        return parse_fixed(text).hls4ml()
    except PrecisionError as exc:
        raise PrecisionError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class Precision:
    """Fixed-point types of a conversion: a default and per-layer overrides.

    Attributes:
        default: hls4ml's default precision: every variable left ``'auto'`` that hls4ml does not infer takes it (see
            the module notes for what is and is not inferred).
        layers: hls4ml layer name (``phi_1``, ``phi_1_relu``, ``ksum``, ``f_1``, ``output``, ``cells``; or
            :data:`ALL_LAYERS` for every layer) → variable (``weight``, ``bias``, ``result``, ``accum``; ``result``
            and ``table`` for activations) → type, e.g. ``{"ksum": {"accum": "ap_fixed<20,9>"}}``. ``'auto'``
            hands a variable back to hls4ml's inference. A layer's own entry wins over ``"*"``; ``"*"`` sets a
            variable only on layers that have it.

    Every type is checked when the object is made (:class:`PrecisionError`); layer names and whether a layer has
    the variable are checked against the model by :func:`hls_config` (:class:`ConversionError`).
    """

    default: str = "ap_fixed<16,6>"
    layers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _hls_type(self.default, "the default precision")
        if not isinstance(self.layers, Mapping):
            raise ConfigError(
                f"precision layers must map layer names to {{variable: type}}; got {type(self.layers).__name__}"
            )
        frozen: dict[str, Mapping[str, str]] = {}
        for name, entry in self.layers.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"precision layer name {name!r} must be a non-empty string such as 'phi_1'")
            if not isinstance(entry, Mapping):
                raise ConfigError(
                    f"precision of layer {name!r} must map {', '.join(PRECISION_KEYS)} to types; "
                    f"got {type(entry).__name__}"
                )
            for key, value in entry.items():
                if key not in PRECISION_KEYS:
                    raise ConfigError(
                        f"unknown precision key {key!r} for layer {name!r}; use {', '.join(PRECISION_KEYS)}"
                    )
                _hls_type(value, f"the {key} precision of layer {name!r}", allow_auto=True)
            frozen[name] = MappingProxyType(dict(entry))
        object.__setattr__(self, "layers", MappingProxyType(frozen))

    @classmethod
    def uniform(cls, text: str) -> Precision:
        """Every weight, bias, result and accumulator of every layer at ``text`` — no lossless ``'auto'`` types.

        (``Precision(default=text)`` is hls4ml's "default precision ``text``", which keeps the lossless Dense
        accumulators and pre-activation results.)
        """
        return cls(default=text, layers={ALL_LAYERS: dict.fromkeys(("weight", "bias", "result", "accum"), text)})

    @classmethod
    def split(cls, *, weights: str, data: str) -> Precision:
        """Weights and biases at ``weights``; every result and accumulator (and the input) at ``data``."""
        return cls(
            default=data,
            layers={ALL_LAYERS: {"weight": weights, "bias": weights, "result": data, "accum": data}},
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain ``{"default": ..., "layers": {...}}`` (for YAML/JSON output; ``Precision(**d)`` rebuilds it)."""
        return {"default": self.default, "layers": {name: dict(entry) for name, entry in self.layers.items()}}

    def __hash__(self) -> int:
        return hash((self.default, tuple(sorted((k, tuple(sorted(v.items()))) for k, v in self.layers.items()))))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_precision_from_dict, (self.as_dict(),))


def _precision_from_dict(data: dict[str, Any]) -> Precision:
    return Precision(**data)


# -- conversion ----------------------------------------------------------------------------------------------------


def _hls4ml() -> Any:
    import hls4ml

    return hls4ml


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _conversion_error(model: keras.Model, exc: Exception) -> ConversionError:
    """One-line error for a model hls4ml refuses, naming the offending layer when hls4ml's message allows."""
    text = _one_line(str(exc)) or type(exc).__name__
    match = re.search(r"Layer <class '([\w.]+)'> not found in registry", text)
    if match:
        cls = match.group(1).rsplit(".", 1)[-1]
        names = [layer.name for layer in model.layers if type(layer).__name__ == cls] or ["?"]
        return ConversionError(
            f"hls4ml cannot convert layer {names[0]!r} ({cls}) of model {model.name!r}; build the model from layers "
            "hls4ml supports (Dense, GlobalAveragePooling1D, Activation), without Lambda or custom layers"
        )
    return ConversionError(
        f"hls4ml cannot convert model {model.name!r} ({type(exc).__name__}: {text[:300]}); build it from layers "
        "hls4ml supports, without Lambda layers, custom layers or keras.ops calls between layers"
    )


def hls_config(model: keras.Model, precision: Precision | str | None = None) -> dict[str, Any]:
    """hls4ml's per-layer (``granularity='name'``) config of ``model`` with ``precision`` applied.

    ``Trace: True`` on every layer, Strategy Latency, ReuseFactor 1. Variables not overridden stay ``'auto'``
    (resolved by hls4ml as the module notes describe).

    Raises:
        ConversionError: hls4ml cannot convert the model, ``precision`` names a layer the model lacks, or sets a
            variable a layer does not have (e.g. a ``weight`` for ``ksum``).
    """
    precision = _as_precision(precision)
    try:
        config = _hls4ml().utils.config_from_keras_model(
            model, granularity="name", backend="Vitis", default_precision=_hls_type(precision.default, "default")
        )
    except Exception as exc:
        raise _conversion_error(model, exc) from None
    layers: dict[str, dict[str, Any]] = config["LayerName"]
    for name in precision.layers:
        if name != ALL_LAYERS and name not in layers:
            raise ConversionError(
                f"unknown layer {name!r} in the precision config; layers are: {', '.join(layers)} (or {ALL_LAYERS!r})"
            )
    config["Model"]["Strategy"] = "Latency"
    config["Model"]["ReuseFactor"] = 1
    everywhere = precision.layers.get(ALL_LAYERS, {})
    for name, entry in layers.items():
        entry["Trace"] = True
        if "ReuseFactor" in entry:
            entry["ReuseFactor"] = 1
        types = entry.setdefault("Precision", {})
        for key, value in everywhere.items():
            if key in types:
                types[key] = _hls_type(value, key, allow_auto=True)
        for key, value in precision.layers.get(name, {}).items():
            if key not in types:
                raise ConversionError(
                    f"layer {name!r} has no {key!r} precision; set one of: {', '.join(types)} for this layer"
                )
            types[key] = _hls_type(value, key, allow_auto=True)
    return config


def _as_precision(precision: Precision | str | None) -> Precision:
    if precision is None:
        return Precision()
    if isinstance(precision, str):
        return Precision(default=precision)
    if not isinstance(precision, Precision):
        raise ConfigError(f"precision must be a Precision or a type string; got {type(precision).__name__}")
    return precision


def _check_project(project_name: object, clock_period: object) -> None:
    """One-line errors for an HLS project name that is no C identifier, or a clock period that is no time."""
    if not isinstance(project_name, str) or not _NAME_RE.fullmatch(project_name):
        raise ConfigError(f"project_name {project_name!r} must be a C identifier (letters, digits, _), e.g. calohls")
    if not (isinstance(clock_period, int | float) and math.isfinite(clock_period) and clock_period > 0):
        raise ConfigError(f"clock_period={clock_period!r} must be a positive number of ns, e.g. 5.0")


def convert(
    model: keras.Model,
    precision: Precision | str | None,
    output_dir: str | Path,
    *,
    project_name: str = "calohls_deepsets",
    part: str = "xcvu13p-flga2577-2-e",
    clock_period: float = 5.0,
) -> ModelGraph:
    """Convert a Keras model with hls4ml (Vitis, io_parallel) — no compilation, no files written yet.

    The returned graph has its types resolved and its weights attached: ``layer.types["accum_t"].precision``,
    ``layer.weights["weight"].data`` / ``.type.precision`` for every layer of ``graph.get_layers()``.

    Args:
        model: A Keras model built from layers hls4ml supports (e.g. :func:`calohls.model.deepsets.build_deepsets`).
        precision: The types (:class:`Precision`; a string is taken as the default precision; None:
            ``ap_fixed<16,6>``).
        output_dir: Folder of the HLS project (written by :func:`compile_model` or :func:`write_project`).
        project_name: Name of the top function (a C identifier).
        part: FPGA part number (default: the VU13P of the ATLAS L0 trigger studies).
        clock_period: Target clock period in ns.

    Raises:
        ConversionError: hls4ml cannot convert the model, or the precision config does not fit it.
        ConfigError: ``project_name`` or ``clock_period`` is invalid.
    """
    _check_project(project_name, clock_period)
    return _from_keras(model, output_dir, project_name, part, clock_period, hls_config=hls_config(model, precision))


def convert_quantized(
    model: keras.Model,
    output_dir: str | Path,
    *,
    project_name: str = "calohls_deepsets",
    part: str = "xcvu13p-flga2577-2-e",
    clock_period: float = 5.0,
) -> ModelGraph:
    """Convert an HGQ2 (quantization-aware trained) model with hls4ml, with no precision config.

    hls4ml reads every type from the model's quantizers, so the C simulation is bit-exact to the Keras model.
    Backend Vitis, ``io_parallel``; compile and predict as for :func:`convert`.

    Raises:
        ConversionError: hls4ml cannot convert the model.
        ConfigError: ``project_name`` or ``clock_period`` is invalid.
    """
    _check_project(project_name, clock_period)
    with contextlib.redirect_stdout(io.StringIO()):
        return _from_keras(model, output_dir, project_name, part, clock_period)


def _from_keras(
    model: keras.Model, output_dir: str | Path, project_name: str, part: str, clock_period: float, **config: Any
) -> ModelGraph:
    """hls4ml's conversion (Vitis, io_parallel), its failures as one-line ConversionErrors."""
    try:
        return _hls4ml().converters.convert_from_keras_model(
            model,
            output_dir=str(Path(output_dir).absolute()),  # hls4ml changes into it to trace
            project_name=project_name,
            backend="Vitis",
            io_type="io_parallel",
            part=part,
            clock_period=clock_period,
            **config,
        )
    except Exception as exc:
        raise _conversion_error(model, exc) from None


# -- C simulation --------------------------------------------------------------------------------------------------

#: Graphs built by :func:`compile_model` (with tracing compiled in): :func:`trace` needs no rebuild for them.
_BUILT: weakref.WeakSet[Any] = weakref.WeakSet()


def _output_dir(hls_model: ModelGraph) -> Path:
    return Path(hls_model.config.get_output_dir())


def compile_model(hls_model: ModelGraph) -> None:
    """Write the project and build its C-simulation library with g++ (``hls_model.compile()``), tracing included.

    The build output goes to ``<output_dir>/build.log`` (hls4ml reports the compiler's output only when the build
    fails, so after a success the log holds hls4ml's messages alone).

    Raises:
        HLSError: the build failed; the message names the log.
    """
    out = _output_dir(hls_model)
    log = out / "build.log"
    # Tracing is compiled in from the start, so trace() needs no second build (its code is not synthesised).
    hls_model.config.trace_output = True
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            hls_model.compile()
    except Exception as exc:
        out.mkdir(parents=True, exist_ok=True)
        log.write_text(f"{captured.getvalue()}\n{type(exc).__name__}: {exc}\n")
        raise HLSError(
            f"building the C simulation of {hls_model.config.get_project_name()!r} failed "
            f"({_one_line(str(exc))[:200]}); see the compiler output in {log}"
        ) from None
    log.write_text(captured.getvalue() + "build succeeded\n")
    _BUILT.add(hls_model)


def _as_input(hls_model: ModelGraph, x: np.ndarray) -> np.ndarray:
    """``x`` as a C-contiguous float64 array ``[n, *input shape]``, checked."""
    shape = tuple(int(s) for s in hls_model.get_input_variables()[0].shape)
    x = np.asarray(x)
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise DataError(f"x has shape {x.shape}; the model takes arrays of shape (n, {', '.join(map(str, shape))})")
    if x.shape[0] == 0:
        raise DataError("x holds no clusters; give at least one")
    x = np.ascontiguousarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise NonFiniteError("x holds NaN or inf; give finite inputs (padded cells are zeros)")
    return x


def _ensure_built(hls_model: ModelGraph) -> None:
    if hls_model not in _BUILT:
        compile_model(hls_model)


def csim_predict(hls_model: ModelGraph, x: np.ndarray) -> np.ndarray:
    """Outputs of the C simulation (the bit-accurate C++ of the firmware) for inputs ``x`` ``[n, N, F]``.

    Builds the library first if :func:`compile_model` has not. Returns float64 ``[n]`` (``[n, k]`` for a model
    with k > 1 outputs).
    """
    x = _as_input(hls_model, x)
    _ensure_built(hls_model)
    y = np.asarray(hls_model.predict(x), np.float64).reshape(x.shape[0], -1)
    return y[:, 0] if y.shape[1] == 1 else y


@contextlib.contextmanager
def _no_rebuild(hls_model: ModelGraph) -> Iterator[None]:
    """hls4ml's ``trace`` always rebuilds the library; skip that for a library built with tracing."""
    hls_model.compile = lambda: None
    try:
        yield
    finally:
        del hls_model.compile


def trace(hls_model: ModelGraph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every layer's output in the C simulation (hls4ml's ``trace``): name → float64 ``[n, *layer shape]``.

    All layers but the input (see the module notes for the names). Builds the library first if
    :func:`compile_model` has not; a library built by :func:`compile_model` is not rebuilt.
    """
    x = _as_input(hls_model, x)
    _ensure_built(hls_model)
    with _no_rebuild(hls_model), contextlib.redirect_stdout(io.StringIO()):
        _, layers = hls_model.trace(x)
    return {name: np.asarray(values, np.float64) for name, values in layers.items()}


def keras_trace(model: keras.Model, x: np.ndarray, *, batch_size: int = 4096) -> dict[str, np.ndarray]:
    """The Keras (float) values of the layers :func:`trace` returns, under the same names: float64 arrays.

    For a layer with an activation (``phi_1``, ``f_1``) the plain name is the pre-activation ``x @ W + b`` —
    computed by a linear copy of the layer with the same weights — and ``<name>_<activation>`` (``phi_1_relu``)
    the Keras layer's output; other layers (``ksum``, ``output``) map one to one.
    """
    import keras

    x = np.asarray(x, np.float32)
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    probes: dict[str, Any] = {}
    activated = []
    for layer in layers:
        probes[layer.name] = layer.output
        activation = getattr(layer, "activation", None)
        if activation is not None and activation is not keras.activations.linear:
            activated.append(layer)
            probes[f"{layer.name}:input"] = layer.input
    values = keras.Model(model.inputs, probes).predict(x, batch_size=batch_size, verbose=0)
    out: dict[str, np.ndarray] = {}
    for layer in layers:
        if layer in activated:
            linear = type(layer).from_config({**layer.get_config(), "activation": "linear"})
            linear.build(tuple(layer.input.shape))
            for target, source in zip(linear.weights, layer.weights, strict=True):
                target.assign(source.value)
            inputs = values[f"{layer.name}:input"]
            pre = np.concatenate(
                [np.asarray(linear(inputs[i : i + batch_size])) for i in range(0, len(inputs), batch_size)]
            )
            out[layer.name] = pre.astype(np.float64)
            out[f"{layer.name}_{layer.activation.__name__}"] = np.asarray(values[layer.name], np.float64)
        else:
            out[layer.name] = np.asarray(values[layer.name], np.float64)
    return out


def layer_types(hls_model: ModelGraph) -> dict[str, dict[str, str]]:
    """Resolved type of every variable of every layer after conversion, in hls4ml's spelling.

    ``{"phi_1": {"accum_t": "fixed<36,16,TRN,WRAP,0>", "result_t": ..., "weight_t": ..., "bias_t": "uint<1>"},
    "ksum": {"accum_t": ..., "result_t": ...}, "phi_1_relu": {"result_t": ..., "table_t": ...}, ...}`` — what
    every ``'auto'`` became.
    """
    return {
        layer.name: {name: str(named.precision) for name, named in layer.types.items()}
        for layer in hls_model.get_layers()
    }


# -- HLS project and reports ---------------------------------------------------------------------------------------


def write_project(
    hls_model: ModelGraph, *, csim: bool = False, synth: bool = True, cosim: bool = False, vsynth: bool = False
) -> Path:
    """Write the HLS project for synthesis; returns its folder.

    In that folder, ``vitis_hls -f build_prj.tcl`` (Vitis HLS up to 2023.2) or
    ``vitis-run --mode hls --tcl build_prj.tcl`` (2024.1 on) runs the steps chosen here (written to
    ``build_opt.tcl``): C simulation, C synthesis (the ``*_csynth.xml`` report that :func:`parse_report` reads),
    co-simulation and Vivado out-of-context synthesis (``vivado_synth.rpt``).
    """
    with contextlib.redirect_stdout(io.StringIO()):
        hls_model.write()
    out = _output_dir(hls_model)
    options = {"reset": False, "csim": csim, "synth": synth, "cosim": cosim, "validation": False}
    options |= {"export": False, "vsynth": vsynth, "fifo_opt": False}
    lines = "".join(f"    {key:<10} {int(value)}\n" for key, value in options.items())
    (out / "build_opt.tcl").write_text(f"array set opt {{\n{lines}}}\n")
    return out


def _number(text: str | None, kind: type) -> Any:
    """``int``/``float`` of a report value; None for a missing or undefined ('undef', '-') one."""
    try:
        return kind(text.strip()) if text is not None else None
    except ValueError:
        return None


def _csynth_from_xml(path: Path) -> dict[str, str]:
    """The C-synthesis summary of a ``*_csynth.xml``, keyed as hls4ml's report reader keys it."""
    root = ET.parse(path).getroot()
    perf = root.find("./PerformanceEstimates")
    out = {
        "TargetClockPeriod": root.findtext("./UserAssignments/TargetClockPeriod"),
        "EstimatedClockPeriod": perf.findtext("./SummaryOfTimingAnalysis/EstimatedClockPeriod"),
        "BestLatency": perf.findtext("./SummaryOfOverallLatency/Best-caseLatency"),
        "WorstLatency": perf.findtext("./SummaryOfOverallLatency/Worst-caseLatency"),
        "IntervalMin": perf.findtext("./SummaryOfOverallLatency/Interval-min"),
        "IntervalMax": perf.findtext("./SummaryOfOverallLatency/Interval-max"),
    }
    area = root.find("./AreaEstimates")
    for group, prefix in (("Resources", ""), ("AvailableResources", "Available")):
        for child in area.find(group):
            out[prefix + ("DSP" if child.tag == "DSP48E" else child.tag)] = child.text
    return out


def _project_name(folder: Path) -> str | None:
    tcl = folder / "project.tcl"
    if not tcl.is_file():
        return None
    match = re.search(r'set project_name "([^"]+)"', tcl.read_text(errors="replace"))
    return match.group(1) if match else None


_RESOURCES = ("BRAM_18K", "DSP", "FF", "LUT", "URAM")
#: Vivado's counts: our name → (hls4ml's report key, type). hls4ml files Vivado's "Block RAM Tile" (36 Kb tiles)
#: under BRAM_18K and DSPs under DSP48E.
_VIVADO = {"LUT": ("LUT", int), "FF": ("FF", int), "BRAM_TILE": ("BRAM_18K", float), "URAM": ("URAM", int),
           "DSP": ("DSP48E", int)}  # fmt: skip


@dataclass(frozen=True)
class HLSReport:
    """What a Vivado/Vitis HLS synthesis report says (:func:`parse_report`).

    Attributes:
        latency_best_cycles, latency_worst_cycles, interval_min_cycles, interval_max_cycles: In clock cycles (None
            where the report says undefined).
        clock_target_ns, clock_estimated_ns: The target and the estimated clock period.
        resources, available: ``BRAM_18K``, ``DSP``, ``FF``, ``LUT``, ``URAM`` estimates of HLS, and the device's.
        vivado: ``LUT``, ``FF``, ``BRAM_TILE`` (36 Kb Block RAM tiles), ``URAM``, ``DSP`` after Vivado synthesis;
            None without that report.
        report: The XML file read.
    """

    latency_best_cycles: int | None
    latency_worst_cycles: int | None
    interval_min_cycles: int | None
    interval_max_cycles: int | None
    clock_target_ns: float | None
    clock_estimated_ns: float | None
    resources: dict[str, int | None]
    available: dict[str, int | None]
    vivado: dict[str, float | None] | None
    report: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_report(path: str | Path) -> HLSReport:
    """Latency, interval, clock and resources from a Vivado/Vitis HLS synthesis report.

    Args:
        path: The project folder (:func:`write_project`'s, after ``vitis_hls``): read with hls4ml's report reader
            (``<project>_prj/solution1/syn/report/<project>_csynth.xml``, and ``vivado_synth.rpt`` when Vivado
            synthesis ran); or one ``*_csynth.xml`` file.

    Returns:
        The :class:`HLSReport`: latency, interval, clock and resources (and Vivado's counts when it ran).

    Raises:
        InputFileError: the report is missing, unreadable or not of the expected format.
    """
    path = Path(path)
    vivado_raw: dict[str, str] | None = None
    if path.is_dir():
        name = _project_name(path)
        if name is None:
            raise InputFileError(
                f"{path} is no hls4ml project folder (no project.tcl with a project name); give the folder that "
                "write_project returned, or a *_csynth.xml file"
            )
        xml = path / f"{name}_prj" / "solution1" / "syn" / "report" / f"{name}_csynth.xml"
        if not xml.is_file():
            raise InputFileError(
                f"synthesis report {xml} not found; run C synthesis (vitis_hls -f build_prj.tcl) first"
            )
        from hls4ml.report import parse_vivado_report

        try:
            with contextlib.redirect_stdout(io.StringIO()):
                raw = parse_vivado_report(str(path))
            csynth = raw["CSynthesisReport"]
        except Exception as exc:
            raise InputFileError(
                f"cannot read the synthesis report of {path} ({type(exc).__name__}: {_one_line(str(exc))[:200]}); "
                f"check that {xml} and {path / f'{name}_prj'}/hls.app are complete HLS outputs"
            ) from None
        vivado_raw = raw.get("VivadoSynthReport")
    elif path.is_file():
        xml = path
        try:
            csynth = _csynth_from_xml(path)
        except (ET.ParseError, AttributeError, TypeError) as exc:
            raise InputFileError(
                f"{path} is not a readable HLS csynth XML report ({type(exc).__name__}); give a *_csynth.xml file"
            ) from None
    else:
        raise InputFileError(f"synthesis report {path} not found; give an HLS project folder or a *_csynth.xml file")
    report = HLSReport(
        latency_best_cycles=_number(csynth.get("BestLatency"), int),
        latency_worst_cycles=_number(csynth.get("WorstLatency"), int),
        interval_min_cycles=_number(csynth.get("IntervalMin"), int),
        interval_max_cycles=_number(csynth.get("IntervalMax"), int),
        clock_target_ns=_number(csynth.get("TargetClockPeriod"), float),
        clock_estimated_ns=_number(csynth.get("EstimatedClockPeriod"), float),
        resources={key: _number(csynth.get(key), int) for key in _RESOURCES},
        available={key: _number(csynth.get("Available" + key), int) for key in _RESOURCES},
        vivado={k: _number(vivado_raw.get(raw), kind) for k, (raw, kind) in _VIVADO.items()} if vivado_raw else None,
        report=str(xml),
    )
    if report.clock_estimated_ns is None or report.resources["LUT"] is None:
        raise InputFileError(f"{xml} lacks the clock or resource estimates of a csynth report; is it complete?")
    return report


def relative_project_paths(folder: str | os.PathLike[str], built_in: str | os.PathLike[str]) -> None:
    """Make the hls4ml project in ``folder``, written in ``built_in`` (e.g. a temporary folder), name its own files
    relative to itself: ``hls4ml_config.yml`` records the Keras model and output folder with absolute paths.
    (``build_lib.sh`` and ``build_prj.tcl`` already find their files from their own folder.)"""
    config = Path(folder) / "hls4ml_config.yml"
    if not config.is_file():
        return
    built = str(Path(built_in).absolute())
    text = config.read_text()
    text = text.replace(f"'{built}/keras_model.keras'", "'keras_model.keras'").replace(
        f"OutputDir: {built}\n", "OutputDir: .\n"
    )
    config.write_text(text)
