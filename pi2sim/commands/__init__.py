"""Subcommands of the ``pi2sim`` CLI; each module exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse


def register_all(sub: argparse._SubParsersAction) -> None:
    from . import compare, run, trace

    for module in (run, compare, trace):
        module.register(sub)
