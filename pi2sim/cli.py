"""The ``pi2sim`` command line.

Every subcommand lives in :mod:`pi2sim.commands`; this module builds the parser and turns every
bad input into one line on stderr with exit status 2 (argparse's own errors included).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import EXIT_BAD_INPUT, EXIT_SIMULATION_ERROR, InputError, SimulationError


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line and exits with status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # the CLI prints "pi2sim: " before every message: name the subcommand only ("run"), once
        where = self.prog.removeprefix("pi2sim").strip() or None
        raise InputError(None, where, message if message.startswith("expected") else f"cannot parse arguments: {message}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``command`` alone (what ``main`` parses with when the
    first argument names one)."""
    from .commands import register_all

    parser = OneLineParser(
        prog="pi2sim",
        description="Discrete-event simulator of LLM inference on smartphones (PowerInfer-2 and its competitors).",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    register_all(sub, command)
    return parser


def _version() -> str:
    from .version import __version__

    return f"pi2sim {__version__}"


def _terminate(signum, frame) -> None:
    """SIGTERM ends a command as Ctrl-C does: its workers are stopped, its partial output never
    written (every file is written atomically), its journal left for the rerun to resume."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    parser = build_parser(argv[0] if argv else None)
    try:
        args = parser.parse_args(argv)
        args.argv = argv  # the command as typed (reports embed it)
        result = args.func(args)
        return int(result or 0)
    except InputError as exc:
        print(f"pi2sim: {exc.line()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SimulationError as exc:
        print(f"pi2sim: simulation error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_SIMULATION_ERROR
    except BrokenPipeError:  # output piped into head & co.
        return 0
    except OSError as exc:  # the file system refused something the checks could not foresee (disk full, a race)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"pi2sim: {where}{exc.strerror or exc}".replace("\n", " "), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("pi2sim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
