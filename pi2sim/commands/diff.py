"""``pi2sim diff A B``: two runs side by side, metric by metric: where the time, memory and energy moved."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser(
        "diff",
        help="compare two runs (their --json output or --out directories): headline metrics, critical path and stage ms, "
        "utilization, cache, memory and energy, each with its delta and % change",
        description="Compare two runs of pi2sim run (a --json file each, or two --out directories): the headline metrics, "
        "the critical path and every stage in ms per token, utilization per resource, the cache (hit rate, flash bytes and reads), "
        "memory and energy by component, each with its delta and percent change.",
    )
    d.add_argument("a", help="the base run: a file written from pi2sim run --json, or an --out directory")
    d.add_argument("b", help="the run to compare with it")
    fmt = d.add_mutually_exclusive_group()
    fmt.add_argument("--md", action="store_true", help="a Markdown table (for a pull request)")
    fmt.add_argument("--json", action="store_true", help="the rows as JSON")
    d.add_argument("--changed", action="store_true", help="only the metrics that moved (past --threshold)")
    d.add_argument("--threshold", type=float, default=0.0, metavar="PCT", help="with --changed: smallest change to show, in percent (default 0)")
    d.set_defaults(func=cmd_diff)


def cmd_diff(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..workflows import diff as D

    if not 0 <= args.threshold < 1e6:
        raise InputError(None, "--threshold", "a percentage of 0 or more", args.threshold)
    rows = D.diff(D.load_summary(args.a), D.load_summary(args.b))
    if args.changed:
        rows = D.moved(rows, args.threshold)
    if args.json:
        print(json.dumps({"a": str(args.a), "b": str(args.b), "rows": rows}, indent=1))
    elif args.md:
        print(D.render_markdown(rows, "A", "B"))
    else:
        print(f"A: {args.a}\nB: {args.b}\n")
        print(D.render_text(rows))
    return 0
