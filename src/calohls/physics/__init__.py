"""Physics performance: energy response and resolution, and the baseline calibrations to compare with."""

from __future__ import annotations

from calohls.physics.response import (
    DEFAULT_QUANTILES,
    QUANTILE_PAIRS,
    ResponseTable,
    binned_response,
    log_bins,
    resolution_label,
    summarize_response,
)

__all__ = [
    "DEFAULT_QUANTILES",
    "QUANTILE_PAIRS",
    "ResponseTable",
    "binned_response",
    "log_bins",
    "resolution_label",
    "summarize_response",
]
