"""Named exceptions. Every message says what was received and how to fix it, on one line."""

from __future__ import annotations

__all__ = [
    "BusyError",
    "CalohlsError",
    "ConfigError",
    "ConversionError",
    "DataError",
    "FileExistsRefusedError",
    "HLSError",
    "InputFileError",
    "NonFiniteError",
    "OutputError",
    "PrecisionError",
    "SchemaError",
    "SchemaVersionError",
    "ToolMissingError",
]


class CalohlsError(Exception):
    """Base of every error calohls raises on purpose; the CLI prints it as one line and exits non-zero."""


class ConfigError(CalohlsError, ValueError):
    """An option or configuration value is out of range or unknown."""


class PrecisionError(ConfigError):
    """A fixed-point precision is malformed, impossible or unsupported (bad width, integer bits or mode)."""


class FileExistsRefusedError(CalohlsError, FileExistsError):
    """An output path exists and overwriting was not asked for."""

    def __init__(self, path: object, flag: str = "--overwrite") -> None:
        super().__init__(f"output {path} exists; choose another path or pass {flag} to replace it")
        self.path = path


class DataError(CalohlsError, ValueError):
    """Data content is unusable (empty, inconsistent shapes, ...)."""


class NonFiniteError(DataError):
    """NaN or inf where a finite number is needed."""


class InputFileError(CalohlsError, OSError):
    """An input file is missing, unreadable, truncated or not of the expected format."""


class SchemaError(InputFileError):
    """An input file lacks fields calohls needs, or has them with the wrong shape or type."""


class SchemaVersionError(SchemaError):
    """An input file was written with a schema version this calohls cannot read."""


class ConversionError(CalohlsError, ValueError):
    """A model or precision configuration that hls4ml cannot convert (unsupported layer, unknown layer name, ...)."""


class HLSError(CalohlsError, RuntimeError):
    """Building or running the generated HLS code failed (compiler error, missing library, ...)."""


class ToolMissingError(CalohlsError, RuntimeError):
    """An external tool a firmware step needs (Verilator, Yosys) is not installed."""


class BusyError(CalohlsError, RuntimeError):
    """An output folder is in use by another calohls process (its lock is held); ``pid`` is that process."""

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class OutputError(CalohlsError, OSError):
    """An output cannot be written: its file system is full or read-only, permission is denied, or a parent of
    the output path is not a folder. ``path`` is the output, ``cause`` the operating-system error, if any."""

    def __init__(self, message: str, *, path: object = None, cause: OSError | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.cause = cause
