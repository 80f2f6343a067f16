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
* ``130``: interrupted with Ctrl-C.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import sys
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


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {_one_line(message)}", err=True)
    sys.exit(code)


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


class _Group(click.Group):
    """A click group that reports every error as a single ``error: ...`` line (see the module docstring)."""

    #: Set by the group's callback from ``--verbose``: show tracebacks of unexpected exceptions.
    show_traceback = False

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:  # type: ignore[override]
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        self.show_traceback = False
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
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
        except (click.Abort, KeyboardInterrupt):
            _fail("interrupted", 130)
        except BrokenPipeError:
            _silence_stdout()  # the reader went away (e.g. `| head`); nothing more to say
            sys.exit(1)
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
        sys.exit(rv if isinstance(rv, int) else 0)


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
