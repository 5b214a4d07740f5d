"""Errors that reach the user.

Every problem with what the user gave us (a YAML file, a trace, a command-line flag) is an
:class:`InputError`. Its text is one line naming the file, the key path inside it, and what was
expected; the CLI prints that line and exits with status 2. Anything else escaping is a bug in
pi2sim, not in the input, and is allowed to show a traceback.
"""

from __future__ import annotations

from pathlib import Path

EXIT_BAD_INPUT = 2
EXIT_SIMULATION_ERROR = 3


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InputError(Exception):
    """Bad user input: ``<file>: <key path>: expected <what>[, got <value>]``."""

    _NO_VALUE = object()

    def __init__(self, source: str | Path | None, key: str | None, expected: str, got: object = _NO_VALUE):
        self.source = str(source) if source is not None else None
        self.key = key or None
        self.expected = expected
        self.got = got
        super().__init__(self.line())

    def line(self) -> str:
        parts = []
        if self.source:
            parts.append(self.source)
        if self.key:
            parts.append(self.key)
        msg = self.expected if self.expected.startswith(("expected", "cannot", "no ", "unknown", "missing")) else f"expected {self.expected}"
        if self.got is not InputError._NO_VALUE:
            msg += f", got {_short(self.got)}"
        parts.append(msg)
        # One line, always: collapse any newline a message might carry.
        return ": ".join(parts).replace("\n", " ")

    def with_prefix(self, key_prefix: str) -> "InputError":
        key = f"{key_prefix}.{self.key}" if self.key else key_prefix
        return InputError(self.source, key, self.expected, self.got)


class ConfigurationRefused(InputError):
    """A well-formed configuration the simulated engine cannot run (it does not fit the memory
    budget, an allocation limit, ...): the real engine would refuse or fail to start."""


class SimulationError(RuntimeError):
    """The simulation itself went wrong (an invariant broke, the watchdog fired).

    Not the user's fault; reported with the state that explains it.
    """
