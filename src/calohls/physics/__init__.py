"""Physics performance: energy response and resolution with bootstrap intervals, and the reference calibrations
to compare with (:mod:`calohls.physics.methods`)."""

from __future__ import annotations

from calohls.physics.response import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_QUANTILES,
    INTERVAL,
    QUANTILE_PAIRS,
    ResponseTable,
    binned_response,
    log_bins,
    resolution_label,
    summarize_response,
)

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_QUANTILES",
    "INTERVAL",
    "QUANTILE_PAIRS",
    "ResponseTable",
    "binned_response",
    "log_bins",
    "resolution_label",
    "summarize_response",
]
