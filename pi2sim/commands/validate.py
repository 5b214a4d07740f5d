"""``pi2sim validate``: the paper's measurements as an error table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("validate", help="reproduce the paper's evaluation points; print simulated vs paper with errors")
    v.add_argument("--set", dest="which", default="calibration", choices=("calibration", "calibration-2", "baselines", "micro", "all"), help="which points (default calibration)")
    v.add_argument("--only", default=None, metavar="GLOBS", help="only scenario ids matching these comma-separated globs (e.g. 'T8*,T9')")
    v.add_argument("--scenarios", default=None, metavar="DIR", help="scenario tree to run instead of the bundled experiments/paper (your own measurements; use with --set all)")
    v.add_argument("--out", default=None, help="write validate.csv, validate.json and plots here")
    v.add_argument("--fast", action="store_true", help="256 decode tokens instead of 1024 (changes results by < 1%%, see docs/validation.md)")
    v.add_argument("--fidelity", choices=("analytic", "layer", "cluster"), default=None, help="timing tier (default: each scenario's, i.e. layer)")
    v.add_argument("--fitted", action="store_true", help="list every constant fitted to an end-to-end point, and exit")
    v.add_argument("--no-sweep", action="store_true", help="skip the Mixtral memory sweep plot")
    v.add_argument("--quiet", action="store_true")
    v.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    from .. import validate as V

    if args.fitted:
        rows = V.fitted_constants()
        for r in rows:
            print(f"{r['where']:40s} {r['key']:28s} {r['value']:>14s}  {r['note']}")
        print(f"\n{len(rows)} fitted constants")
        return 0
    root = None
    if args.scenarios:
        from ..errors import InputError

        root = Path(args.scenarios)
        if not root.is_dir():
            raise InputError(None, "--scenarios", "a directory of scenario YAML files", args.scenarios)
    outcomes = V.validate(args.which, fast=args.fast, fidelity=args.fidelity, progress=not args.quiet, only=args.only, root=root)
    df = V.table(outcomes)
    print(V.render(df))
    if args.out:
        from ..atomic import write_text

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "validate.csv", df.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
        write_text(out / "validate.json", json.dumps({"points": json.loads(df.to_json(orient="records")), "summary": V.summary_stats(df)}, indent=2, sort_keys=True) + "\n")
        sweep = None
        if not args.no_sweep and args.which in ("calibration", "all") and not args.only and root is None:
            sweep = V.mixtral_memory_sweep(args.fast, args.fidelity)
            write_text(out / "mixtral-memory-sweep.csv", sweep.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
        for p in V.plot(df, out, sweep):
            print(f"wrote {p}", file=sys.stderr)
    return 0
