"""The ``calohls`` command line.

Each command parses its options, builds the stage's config, calls one library function and prints the result.
Logging is configured here and nowhere else: library modules only log through ``logging.getLogger(__name__)``.
Commands import their library modules only when they run, so that ``calohls --help`` answers at once.

Errors and exit codes:

* ``0``: success (also ``--help`` and ``--version``);
* ``1``: an error calohls raises on purpose (:class:`~calohls.errors.CalohlsError`: a bad config value, a
  missing or corrupt input file, an output that exists, ...), printed as one line ``error: <message>`` on
  stderr;
* ``2``: a command-line usage error (unknown option, missing argument, value of the wrong type), also one
  line;
* ``1`` as well for an operating-system error calohls did not turn into one of its own (a full disk, a denied
  permission): one line with the file, the system's reason and its errno name (``ENOSPC``);
* ``1`` as well for an unexpected exception (a bug): one line naming the exception, and the full traceback
  when ``--verbose`` is given, to attach to a bug report;
* ``130``: interrupted with Ctrl-C (``error: interrupted``, nothing else; the process then ends with ``os._exit``
  once its output is flushed, since finalizing an interpreter with JAX/XLA threads or killed worker processes could
  crash or hang).
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import signal
import sys
import threading
from typing import Any, NoReturn

import click

from calohls import __version__
from calohls.cli.convert import convert_command
from calohls.cli.evaluate import evaluate_command
from calohls.cli.firmware import firmware_command
from calohls.cli.inspect import inspect_command
from calohls.cli.ptq import ptq_command
from calohls.cli.qat import qat_command
from calohls.cli.report import report_command
from calohls.cli.run import run_command
from calohls.cli.scan import scan_command
from calohls.cli.simulate import simulate_command
from calohls.cli.train import train_command
from calohls.errors import CalohlsError

__all__ = ["main"]

_LEVELS = {0: logging.WARNING, 1: logging.INFO}


class _StderrHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record comes (so it survives redirection)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging(verbosity: int) -> None:
    """Send the ``calohls`` loggers to stderr: warnings by default, info with ``-v``, debug with ``-vv``."""
    logger = logging.getLogger("calohls")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(_LEVELS.get(verbosity, logging.DEBUG))


#: Longest error line: whatever a message quotes (a config value, a library's reason), the line stays readable.
MAX_ERROR_CHARS = 1000


def _one_line(text: str) -> str:
    line = " ".join(line.strip() for line in text.splitlines() if line.strip())
    if len(line) > MAX_ERROR_CHARS:  # keep the start (what) and the end (the fix)
        half = MAX_ERROR_CHARS // 2
        line = f"{line[:half]} … {line[-half:]}"
    return line


def _must_end_hard(code: int) -> bool:
    """Whether this process must end without finalizing the interpreter (``os._exit``): a real process (not a test
    harness, which replaces sys.stderr) that was interrupted (JAX/XLA threads crashed the finalization with SIGSEGV,
    and helper threads of a stopped process pool can wait forever for workers that were killed), or that holds
    HDF5 files whose writing failed (closing them crashes the HDF5 library)."""
    if sys.stderr is not sys.__stderr__:
        return False
    hdf5 = sys.modules.get("calohls.data.hdf5")
    return code == 130 or (hdf5 is not None and hdf5.abandoned_files() > 0)


def _exit(code: int) -> NoReturn:
    """End with ``code``: normally, or with ``os._exit`` after flushing (see :func:`_must_end_hard`)."""
    if _must_end_hard(code):
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {_one_line(message)}", err=True)
    _exit(code)


def _os_message(err: OSError) -> str:
    """``<file>: <reason> (<errno name>); <what to check>`` for an operating-system error."""
    code = errno.errorcode.get(err.errno) if isinstance(err.errno, int) else None
    where = f"{err.filename}: " if err.filename else ""
    reason = err.strerror or str(err) or type(err).__name__
    return f"{where}{reason}{f' ({code})' if code else ''}; check the path, its permissions and the free space"


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the flush at exit cannot fail again on a closed pipe."""
    with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


class _SigintHandler:
    """The SIGINT handler of the command line: a ``KeyboardInterrupt`` as usual, and ``interrupted`` set for good.

    Python loses a ``KeyboardInterrupt`` raised while a garbage-collector callback runs ("Exception ignored in
    ..."); the flag still tells that Ctrl-C was pressed, to the command at its end and to long loops that look at
    ``signal.getsignal(signal.SIGINT).interrupted`` between steps.
    """

    def __init__(self) -> None:
        self.interrupted = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.interrupted = True
        if frame is not None and (frame.f_code.co_name == "__del__" or frame.f_code.co_filename.endswith("weakref.py")):
            # the interpreter would print and drop an exception raised here: signal again a moment later instead
            threading.Timer(0.01, signal.pthread_kill, (threading.main_thread().ident, signum)).start()
            return
        raise KeyboardInterrupt

    @classmethod
    def install(cls) -> _SigintHandler | None:
        """Install a fresh handler where Ctrl-C has Python's default one (the main thread of a real process)."""
        if threading.current_thread() is not threading.main_thread():
            return None
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return None
        handler = cls()
        signal.signal(signal.SIGINT, handler)
        return handler


class _Interrupted(Exception):
    """Ctrl-C, carried past click (which would print a blank line for a ``KeyboardInterrupt``)."""


class _Group(click.Group):
    """A click group that reports every error as a single ``error: ...`` line (see the module docstring)."""

    #: Set by the group's callback from ``--verbose``: show tracebacks of unexpected exceptions.
    show_traceback = False

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _Interrupted from None

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:  # type: ignore[override]
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        self.show_traceback = False
        sigint = _SigintHandler.install()
        try:
            self._standalone(sigint, *args, **kwargs)
        finally:  # in a test harness, the next command (or the harness) gets Python's handler back
            if sigint is not None and signal.getsignal(signal.SIGINT) is sigint:
                signal.signal(signal.SIGINT, signal.default_int_handler)

    def _standalone(self, sigint: _SigintHandler | None, *args: Any, **kwargs: Any) -> NoReturn:
        """Run the command line; every outcome ends the process (see the module docstring)."""
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
            if sigint is not None and sigint.interrupted:  # a Ctrl-C the interpreter lost on the way
                raise _Interrupted
        except click.exceptions.NoArgsIsHelpError as err:
            err.show()
            sys.exit(err.exit_code)
        except click.UsageError as err:
            hint = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
            _fail(err.format_message() + hint, err.exit_code)
        except click.ClickException as err:
            _fail(err.format_message(), err.exit_code)
        except CalohlsError as err:
            _fail(str(err), 1)
        except (click.Abort, KeyboardInterrupt, _Interrupted):
            _fail("interrupted", 130)
        except BrokenPipeError:
            _silence_stdout()  # the reader went away (e.g. `| head`); nothing more to say
            _exit(1)
        except OSError as err:  # the system refused an operation calohls did not wrap: still one line
            if self.show_traceback:
                raise
            _fail(_os_message(err), 1)
        except Exception as err:
            if self.show_traceback:
                raise
            _fail(
                f"unexpected {type(err).__name__}: {err}; rerun with --verbose for the traceback and report it",
                1,
            )
        _exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="calohls", message="%(prog)s %(version)s")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="More log messages on stderr (-v info, -vv debug); also show tracebacks of unexpected errors.",
)
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Design DeepSets networks that calibrate calorimeter cluster energies in the ATLAS L0 trigger."""
    setup_logging(verbose)
    root = ctx.find_root().command
    if isinstance(root, _Group):
        root.show_traceback = verbose > 0


main.add_command(simulate_command)
main.add_command(inspect_command)
main.add_command(convert_command)
main.add_command(train_command)
main.add_command(evaluate_command)
main.add_command(ptq_command)
main.add_command(qat_command)
main.add_command(report_command)
main.add_command(scan_command)
main.add_command(run_command)
main.add_command(firmware_command)
