"""The `jaxcult` command line: train, eval, export, convert, generate, eval-survey, sweep, vqa,
data, plot, assets, and one command per recipe (clca, narratives, ...).

Argument parsing only: each command calls one use case in `jaxcult.run` (or a recipe) and
prints what it returns; library code reports progress and notes through the `jaxcult` logger,
which the command line sends to stderr. A `UserError` becomes one line on stderr and exit
code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

from jaxcult.cli.parsers import build_parser, overrides_field
from jaxcult.errors import Interrupted, UserError
from jaxcult.run.compile_cache import enable_compilation_cache

LIGHT_COMMANDS = ("assets", "plot", "vqa", "data")  # commands that compile no program
# commands that start JAX themselves, without the compilation cache: `plan` first sets how
# many CPU devices it simulates, and reports its compile time
OWN_JAX_START = ("plan",)


class _Stderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record comes (a test may swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        del value


def configure_logging(debug: bool = False) -> None:
    """The `jaxcult` logger's records as plain lines on stderr (info and up; debug with
    `--debug`); configured once."""
    logger = logging.getLogger("jaxcult")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False
    absl = logging.getLogger("absl")
    if not debug and _orbax_thread_failure not in absl.filters:
        absl.addFilter(_orbax_thread_failure)
        logging.getLogger("asyncio").addFilter(_orbax_thread_failure)
        _quiet_closed_loop_callbacks()


def _quiet_closed_loop_callbacks() -> None:
    """After a failed checkpoint write, tensorstore keeps calling back into the event loop Orbax
    has closed, and each call prints an unraisable 'Event loop is closed' traceback (hundreds);
    the failure itself is reported in one line."""
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        value = unraisable.exc_value
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            previous(unraisable)
    sys.unraisablehook = hook


def _orbax_thread_failure(record: logging.LogRecord) -> bool:
    """Orbax logs each of its writer threads' failures with a traceback, and asyncio the
    futures of the same failed write it never collected; the checkpointer reports the failed
    write in one line (all of them with `--debug`)."""
    message = record.getMessage()
    return not ("_SignalingThread.run() raised an exception" in message
                or ("exception was never retrieved" in message and "orbax" in message))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"jaxcult {version('jaxcult')}"
    except PackageNotFoundError:
        return "jaxcult (not installed)"


def main(argv: list[str] | None = None) -> int:
    # transformers' notice that PyTorch is absent is noise: jaxcult never needs torch to run
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    parser = build_parser("jaxcult: adapt pretrained transformers across languages and cultures "
                          "(JAX/Flax).", _version())
    args, extra = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging(args.debug)
    if extra:  # overrides may follow options: `train cfg.yaml --run-dir d a.b=1`
        field = overrides_field(args)
        if field is None or any(item.startswith("-") for item in extra):
            args.command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
        setattr(args, field, [*getattr(args, field), *extra])
    try:
        if args.command not in (*LIGHT_COMMANDS, *OWN_JAX_START):
            enable_compilation_cache()
        return args.func(args)
    except UserError as err:
        if args.debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except Interrupted as stop:
        print(str(stop), file=sys.stderr)
        return stop.exit_code
    except OSError as err:  # a user path that cannot be read or written: one line, exit 2
        if err.filename is None or args.debug:
            raise
        print(f"error: {err.filename}: {err.strerror or type(err).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
