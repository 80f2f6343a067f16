"""calohls: DeepSets calorimeter calibration for the ATLAS L0 trigger, from simulation to FPGA firmware."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

# Keras reads its backend once, at import: calohls runs on JAX unless the user chose otherwise.
os.environ.setdefault("KERAS_BACKEND", "jax")

try:
    __version__ = version("calohls")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
