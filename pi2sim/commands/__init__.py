"""Subcommands of the ``pi2sim`` CLI; each module exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib

MODULES = ("run", "compare", "sweep", "plan", "validate", "calibrate", "regress", "diff", "trace", "device")  # in help order
# the module that registers each command (a test checks this against the parser)
COMMANDS = {"run": "run", "policies": "run", "compare": "compare", "ablate": "compare", "sweep": "sweep", "plan": "plan",
            "validate": "validate", "calibrate": "calibrate", "regress": "regress", "trace": "trace", "device": "device", "diff": "diff"}


def register_all(sub: argparse._SubParsersAction, only: str | None = None) -> None:
    """Every command, or (``only``: a command's name) just the module of that command: a run
    then does not import the modules of the other nine."""
    names = (COMMANDS[only],) if only in COMMANDS else MODULES
    for name in names:
        importlib.import_module(f"{__name__}.{name}").register(sub)
