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
    r.add_argument("--against", default=None, metavar="REV",
                   help="instead of the goldens, compare with the same scenarios run on another git revision of pi2sim (in a temporary "
                   "worktree; e.g. main, HEAD~1): the gate for a scheduling change before its goldens exist")
    fmt = r.add_mutually_exclusive_group()
    fmt.add_argument("--md", action="store_true", help="the moved metrics, and where each moved scenario's time went, as Markdown (for a pull request)")
    fmt.add_argument("--json", action="store_true", help="the same as JSON")
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
    if args.against is not None and args.accept:
        raise InputError(None, "--accept", "no --against: goldens record this revision")
    base = None
    if args.against is not None:
        base = R.golden_at(args.against, (root or R.regression_dir()) / "scenarios.yaml", {s.id for s in scenarios}, progress=not args.quiet)
        base = {k: v for k, v in base.items() if k in {s.id for s in scenarios}}
    golden = R.load_golden(root) if base is None else base  # checked before anything runs
    now = R.run_all(scenarios, changes, progress=not args.quiet)
    if args.accept:
        merged = golden if args.only else {}
        merged.update(now)
        diff = R.compare(golden, now, args.threshold)
        path = R.write_golden(merged, root)
        print(f"wrote {path} ({len(now)} scenarios; {len(diff)} metrics had moved past {args.threshold:g})")
        return 0
    against = f"{args.against}" if base is not None else "its golden"
    diff = R.compare({k: v for k, v in golden.items() if k in now}, now, args.threshold, check_config=base is None)
    why = {sid: R.explain(golden.get(sid, {}), now[sid], 100 * args.threshold) for sid in dict.fromkeys(diff["scenario"]) if sid in now}
    print(_render(diff, why, len(now), args, against))
    if diff.empty:
        return 0
    if base is None and not (args.md or args.json):
        again = f"pi2sim regress --suite {root} --accept" if root is not None else "pi2sim regress --accept"
        print(f"if the change is intended: {again}, and commit golden.json with the change", file=sys.stderr)
    return 1


def _render(diff, why: dict, n: int, args, against: str) -> str:
    import json

    from ..workflows.diff import _num, render_markdown, render_text

    rows = [{"scenario": r.scenario, "metric": r.metric, "golden": None if r.golden != r.golden else r.golden,
             "now": None if r.now != r.now else r.now, "change": r.change} for r in diff.itertuples()]
    if args.json:
        return json.dumps({"against": against, "threshold": args.threshold, "scenarios": n, "moved": rows,
                           "where": {k: v for k, v in why.items() if v}}, indent=1)
    if not rows:
        head = f"regress: {n} scenarios, every headline metric within {args.threshold:g} of {against}"
        return head if not args.md else f"**pi2sim regress**: {n} scenarios, every headline metric within {args.threshold:g} of {against}."
    moved_n = len({r['scenario'] for r in rows})
    if args.md:
        out = [f"**pi2sim regress**: {moved_n} of {n} scenarios moved past {args.threshold:g} against {against}.", "",
               "| scenario | metric | before | now | change |", "|---|---|---:|---:|---:|"]
        out += [f"| {r['scenario']} | {r['metric']} | {_num(r['golden'])} | {_num(r['now'])} | {r['change']} |" for r in rows]
        for sid, w in why.items():
            if w:
                out += ["", f"Where the time went in `{sid}`:", "", render_markdown(w, "before", "now")]
        return "\n".join(out)
    width = max(len(r["scenario"]) for r in rows)
    out = [f"regress: {moved_n} of {n} scenarios moved past {args.threshold:g} against {against}:",
           f"{'scenario':{width}s} {'metric':24s} {'before':>14s} {'now':>14s}  change"]
    out += [f"{r['scenario']:{width}s} {r['metric']:24s} {_num(r['golden']):>14s} {_num(r['now']):>14s}  {r['change']}" for r in rows]
    for sid, w in why.items():
        if w:
            out += ["", f"where the time went in {sid}:", render_text(w, "before", "now")]
    return "\n".join(out)
