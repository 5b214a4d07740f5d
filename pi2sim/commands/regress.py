"""``pi2sim regress``: rerun the golden scenarios and fail on any headline metric that moved."""

from __future__ import annotations

import argparse
import sys

from .. import paths


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "regress",
        help="rerun the regression goldens (experiments/regression); exit 1 with a diff if a metric moved",
        description="Rerun experiments/regression/scenarios.yaml and compare with golden.json. Rates, times, bytes "
        "and memory fail on a relative change above --threshold; shares (hit rate, critical-path split) on an "
        "absolute change of the same size. After an intended change, --accept rewrites the goldens and the "
        "commit shows the diff.",
    )
    r.add_argument("--suite", default=None, metavar="DIR", type=paths.input_dir_arg("--suite"),
                   help="your own suite instead of experiments/regression: DIR/scenarios.yaml (same format) and its "
                   "DIR/golden.json (written by --accept)")
    r.add_argument("--threshold", type=float, default=0.02, help="largest accepted change (default 0.02: 2%% / 2 points)")
    r.add_argument("--accept", action="store_true", help="rewrite golden.json with the current results")
    r.add_argument("--only", default=None, metavar="IDS", help="comma-separated scenario ids")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="try a change without editing code: applied to every scenario whose policy has the option "
                   "(or a run/device.*/model.* key to all), e.g. --set io_core=eff0")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=cmd_regress)


def cmd_regress(args: argparse.Namespace) -> int:
    from ..workflows import regress as R
    from ..config import parse_value
    from ..errors import InputError

    if not 0 < args.threshold < 1:
        raise InputError(None, "--threshold", "a fraction between 0 and 1", args.threshold)
    changes = {}
    for item in args.sets:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise InputError(None, "--set", "key=value", item)
        changes[key.strip()] = parse_value(raw)
    if args.accept and changes:
        raise InputError(None, "--accept", "no --set: goldens record the scenarios as written")
    root = args.suite
    if root is not None and not (root / "scenarios.yaml").is_file():
        raise InputError(None, "--suite", "a directory with a scenarios.yaml (see experiments/regression/scenarios.yaml)", str(root))
    where = str(root) if root is not None else "experiments/regression"
    scenarios = R.load_scenarios(root)
    if args.only:
        ids = {s.strip() for s in args.only.split(",") if s.strip()}
        unknown = ids - {s.id for s in scenarios}
        if unknown:
            raise InputError(None, "--only", f"scenario ids of {where} ({', '.join(s.id for s in scenarios)})", sorted(unknown))
        scenarios = [s for s in scenarios if s.id in ids]
    now = R.run_all(scenarios, changes, progress=not args.quiet)
    golden = R.load_golden(root)
    if args.accept:
        merged = golden if args.only else {}
        merged.update(now)
        diff = R.compare(golden, now, args.threshold)
        path = R.write_golden(merged, root)
        print(f"wrote {path} ({len(now)} scenarios; {len(diff)} metrics had moved past {args.threshold:g})")
        return 0
    diff = R.compare({k: v for k, v in golden.items() if k in now}, now, args.threshold)
    if diff.empty:
        print(f"regress: {len(now)} scenarios, every headline metric within {args.threshold:g} of its golden")
        return 0
    print(f"regress: {diff['scenario'].nunique()} of {len(now)} scenarios moved past {args.threshold:g}:")
    print(diff.to_string(index=False))
    again = f"pi2sim regress --suite {root} --accept" if root is not None else "pi2sim regress --accept"
    print(f"if the change is intended: {again}, and commit golden.json with the change", file=sys.stderr)
    return 1
