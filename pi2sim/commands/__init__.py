"""Subcommands of the ``pi2sim`` CLI; each module exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse


def register_all(sub: argparse._SubParsersAction) -> None:
    from . import calibrate, compare, plan, regress, run, sweep, trace, validate

    for module in (run, compare, sweep, plan, validate, calibrate, regress, trace):
        module.register(sub)
