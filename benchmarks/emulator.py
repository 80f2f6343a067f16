"""Benchmark of the bit-exact emulator: hls4ml C simulation, emulation and float Keras inference, side by side.

The network is built from an architecture and a seed, not read from a training run, so the benchmark runs on any
DeepSets, also one the project never saw::

    python -m benchmarks.emulator --phi 32,32 --f 32,16 --cells 32 --features 12 --seed 3 \\
        --precision 'ap_fixed<18,10>' --clusters 20000

(``benchmarks/run.py --only emulator_speed`` runs the reference case below and records it.) Its weights are the
builder's initialisation with the output layer re-drawn at a visible scale, and biases drawn at random, so that
every layer matters; the inputs are synthetic clusters of 1 to ``cells`` real cells (the rest zero padding, as
:mod:`calohls.data.features` pads), whose first feature is the constant 1 of real cells and the others normal. They
are float32, as the project's scaled features (``FeatureScaler.transform``), and the one array goes to all three
(the C simulation reads each float32 as the double it equals).

Timed, each on the same clusters:

* ``csim``: hls4ml conversion, C++ build (``compile_model``) and C-simulation predict — once (it takes ~30 s);
* ``emulate``: hls4ml conversion, :meth:`Emulator.from_hls` and :meth:`Emulator.predict`, with the three parts
  also timed alone;
* ``float``: Keras ``model.predict`` of the float network, after a warm-up call, at 4096 (the batch size the
  project predicts with: ``model.run_folder.predict``, the PTQ inputs, QAT validation) and at Keras' default (32).

Emulation and float inference alternate, round by round (5 rounds), so that both see the same load; each figure
is the best of its rounds. Each timed call starts after a 0.2 s pause: XLA's worker threads keep spinning for a
while after a Keras predict, and would otherwise take cores from whatever is timed next.

Recorded: the times, ``csim_over_emulate`` (goal ≥ 300), ``emulate_over_float`` (goal ≤ 1, against the faster
of the two float figures) and the ratio to each (``emulate_over_float_4096``, ``emulate_over_float_default``), the
emulator's ``predict`` alone over the float predict at 4096 (``predict_over_float_4096``: the conversion is paid
once per network), and the number of outputs, and of traced layer values, that differ from the C simulation (goal
0). The standalone run adds the load average at its end (``run.py`` records it at the start and the end).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import Options, benchmark, load_average


@dataclass(frozen=True)
class Case:
    """The network, precision and clusters of one comparison."""

    phi: tuple[int, ...] = (32, 32)
    f: tuple[int, ...] = (32, 16)
    cells: int = 32
    features: int = 12
    seed: int = 3
    precision: str = "ap_fixed<18,10>"
    clusters: int = 20_000
    repeats: int = 5
    trace_clusters: int = 1_000


#: Pause before each timed call, so that every call starts with the cores free.
_PAUSE_S = 0.2


def build_model(case: Case) -> Any:
    """The float DeepSets of ``case``: the builder's weights, output layer and biases re-drawn from the seed."""
    from calohls.config import ModelConfig
    from calohls.model.deepsets import build_deepsets

    model = build_deepsets(ModelConfig(phi=case.phi, f=case.f, max_cells=case.cells), case.features, seed=case.seed)
    rng = np.random.default_rng(case.seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if len(weights) == 2:  # F layers and the output: biases matter, the output is not ~0
            kernel = weights[0]
            if layer.name == "output":
                kernel = rng.normal(0.0, 1.0 / np.sqrt(kernel.shape[0]), kernel.shape).astype(np.float32)
            layer.set_weights([kernel, rng.normal(0.0, 0.1, weights[1].shape).astype(np.float32)])
    return model


def make_inputs(case: Case) -> np.ndarray:
    """Synthetic clusters ``[clusters, cells, features]`` (float32): zero-padded, feature 0 the real-cell flag."""
    rng = np.random.default_rng(case.seed + 1)
    x = rng.normal(0.0, 1.0, (case.clusters, case.cells, case.features))
    x[..., 0] = 1.0
    real = rng.integers(1, case.cells + 1, case.clusters)
    x[np.arange(case.cells)[None, :] >= real[:, None]] = 0.0
    return x.astype(np.float32)


def _timings(model: Any, precision: str, x: np.ndarray, work: Path, repeats: int) -> dict[str, Any]:
    """Emulation (convert + from_hls + predict, and each part alone) and float predict, interleaved round by round
    so that both see the same load; the best of ``repeats`` rounds of each."""
    from calohls.firmware.hls import convert
    from calohls.quant.emulate import Emulator

    Emulator.from_hls(convert(model, precision, work / "warm")).predict(x[:10])  # numba's cache loaded
    for batch_size in (None, 4096):
        model.predict(x[: batch_size or 32], batch_size=batch_size, verbose=0)  # traced and compiled
    times: dict[str, list[float]] = {}

    def timed(key: str, fn: Any) -> Any:
        time.sleep(_PAUSE_S)  # the threads of the call before (XLA's spin after a predict) let go of the cores
        start = time.perf_counter()
        result = fn()
        times.setdefault(key, []).append(time.perf_counter() - start)
        return result

    for i in range(max(1, repeats)):
        timed("float_default_batch_s", lambda: model.predict(x, verbose=0))
        timed("float_batch_4096_s", lambda: model.predict(x, batch_size=4096, verbose=0))
        y = timed("emulate_s", lambda i=i: Emulator.from_hls(convert(model, precision, work / f"e{i}")).predict(x))
        hls_model = timed("convert_s", lambda i=i: convert(model, precision, work / f"c{i}"))
        emulator = timed("from_hls_s", lambda h=hls_model: Emulator.from_hls(h))
        timed("predict_s", lambda e=emulator: e.predict(x))
    return {**{key: min(values) for key, values in times.items()}, "y": y, "emulator": emulator}


def _csim(model: Any, precision: str, x: np.ndarray, work: Path, trace_clusters: int) -> dict[str, Any]:
    from calohls.firmware.hls import compile_model, convert, csim_predict, trace

    start = time.perf_counter()
    hls_model = convert(model, precision, work / "csim")
    compile_model(hls_model)
    y = csim_predict(hls_model, x)
    seconds = time.perf_counter() - start
    return {"csim_s": seconds, "y": y, "trace": trace(hls_model, x[:trace_clusters])}


def compare(case: Case, work: Path) -> dict[str, Any]:
    """Time C simulation, emulation and float inference of ``case`` side by side; count differing outputs."""
    model = build_model(case)
    x = make_inputs(case)
    emu = _timings(model, case.precision, x, work, case.repeats)
    csim = _csim(model, case.precision, x, work, case.trace_clusters)
    traced = emu.pop("emulator").trace(x[: case.trace_clusters])
    differing_layers = {name: int(np.sum(traced[name] != ref)) for name, ref in csim["trace"].items()}
    fastest_float = min(emu["float_default_batch_s"], emu["float_batch_4096_s"])
    return {
        "case": asdict(case),
        "csim_s": csim["csim_s"],
        **{k: v for k, v in emu.items() if k != "y"},
        "csim_over_emulate": csim["csim_s"] / emu["emulate_s"],
        "emulate_over_float": emu["emulate_s"] / fastest_float,
        "emulate_over_float_4096": emu["emulate_s"] / emu["float_batch_4096_s"],
        "emulate_over_float_default": emu["emulate_s"] / emu["float_default_batch_s"],
        "predict_over_float_4096": emu["predict_s"] / emu["float_batch_4096_s"],
        "differing_outputs": int(np.sum(emu["y"] != csim["y"])),
        "differing_traced_values": differing_layers,
        "goals": {"csim_over_emulate": 300, "emulate_over_float": 1.0, "differing_outputs": 0},
    }


def _summary(r: dict[str, Any]) -> list[str]:
    c = r["case"]
    return [
        f"DeepSets phi {c['phi']} F {c['f']}, {c['cells']} cells x {c['features']} features, seed {c['seed']}, "
        f"{c['precision']}, {c['clusters']:,} clusters",
        f"C-sim (convert + build + predict) {r['csim_s']:.1f} s; emulate {r['emulate_s']:.3f} s (convert "
        f"{r['convert_s']:.3f} + from_hls {r['from_hls_s']:.3f} + predict {r['predict_s']:.3f}); float predict "
        f"{r['float_default_batch_s']:.3f} s (default batch), {r['float_batch_4096_s']:.3f} s (batch 4096)",
        f"C-sim / emulate x{r['csim_over_emulate']:.0f} (goal >= 300); emulate / float {r['emulate_over_float']:.2f} "
        f"(goal <= 1; batch 4096 {r['emulate_over_float_4096']:.2f}, default batch "
        f"{r['emulate_over_float_default']:.2f}; predict alone / batch 4096 {r['predict_over_float_4096']:.2f}); "
        f"differing outputs {r['differing_outputs']}, traced values {sum(r['differing_traced_values'].values())} "
        "(goal 0)",
    ]


@benchmark()
def emulator_speed(opts: Options) -> dict[str, Any]:
    """C-simulation, emulation and float predict of the reference DeepSets (32 cells x 12 features, Phi 32,32,
    F 32,16, ap_fixed<18,10>, 20k clusters) side by side; ratios and differing outputs."""
    case = Case(clusters=2_000 if opts.quick else 20_000)
    result = compare(case, opts.scratch)
    return {**result, "summary": _summary(result)}


def _widths(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.emulator", description=__doc__.split("\n\n")[0])
    default = Case()
    parser.add_argument("--phi", type=_widths, default=default.phi, help="Phi widths, e.g. 32,32")
    parser.add_argument("--f", type=_widths, default=default.f, help="F widths, e.g. 32,16")
    for name in ("cells", "features", "seed", "clusters", "repeats", "trace_clusters"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(default, name))
    parser.add_argument("--precision", default=default.precision, help="hls4ml default precision")
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    case = Case(**args)
    with tempfile.TemporaryDirectory(prefix="calohls-bench-emulator-") as work:
        result = {**compare(case, Path(work)), "load_average": load_average()}
    print("\n".join(_summary(result)))
    if out is not None:
        out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
