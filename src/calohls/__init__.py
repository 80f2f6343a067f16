"""calohls: DeepSets calorimeter calibration for the ATLAS L0 trigger, from simulation to FPGA firmware."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("calohls")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
