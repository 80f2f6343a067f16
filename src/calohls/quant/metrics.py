"""How far a quantized network is from its float version: MPE, signed difference, per-layer differences."""

from __future__ import annotations

import numpy as np

__all__ = ["layer_differences", "mean_percent_error"]


def mean_percent_error(e_quantized: np.ndarray, e_float: np.ndarray) -> tuple[float, float]:
    """MPE = mean(|E_q − E_f| / |E_f|) × 100, and the mean signed difference mean((E_q − E_f) / |E_f|) × 100.

    Both on the network output in energy units (GeV), over all clusters. A non-finite quantized output counts as
    a 1e6 % error, so that broken configurations stay visible.
    """
    e_quantized, e_float = np.asarray(e_quantized, np.float64), np.asarray(e_float, np.float64)
    rel = (e_quantized - e_float) / np.maximum(np.abs(e_float), 1e-12)
    rel = np.where(np.isfinite(rel), rel, 1e4)
    return float(np.mean(np.abs(rel)) * 100.0), float(np.mean(rel) * 100.0)


def layer_differences(
    quantized: dict[str, np.ndarray], reference: dict[str, np.ndarray], real: np.ndarray | None = None
) -> dict[str, dict[str, float]]:
    """Per layer: mean, standard deviation and mean absolute value of (quantized − reference), and the reference's
    mean absolute value (to judge the size of a difference).

    Args:
        quantized: layer name → outputs of the quantized model (e.g. the hls4ml trace).
        reference: layer name → float outputs of the same layers.
        real: ``[n, N]`` mask of real cells: per-cell layers (``[n, N, k]``) are compared on real cells only.
    """
    out = {}
    for name, q in quantized.items():
        if name not in reference:
            continue
        ref = np.asarray(reference[name], np.float64)
        q = np.asarray(q, np.float64).reshape(ref.shape)
        diff = q - ref
        if real is not None and diff.ndim == 3 and diff.shape[:2] == real.shape:
            diff, ref = diff[real], ref[real]
        out[name] = {
            "mean": float(diff.mean()),
            "std": float(diff.std()),
            "mean_abs": float(np.abs(diff).mean()),
            "reference_mean_abs": float(np.abs(ref).mean()),
        }
    return out
