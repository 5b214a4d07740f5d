"""``pi2sim validate``: the paper's measurements as an error table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import paths
from ..engine import tiers


def register(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("validate", help="reproduce the paper's evaluation points; print simulated vs paper with errors")
    v.add_argument("--set", dest="which", default="calibration", choices=("calibration", "unfitted", "energy", "baselines", "micro", "external", "external-memory", "phones", "all"),
                   help="which points (default calibration; external: other engines on today's phones; phones: llama.cpp 2026 on phones written from their spec sheets; experiments/external)")
    v.add_argument("--only", default=None, metavar="GLOBS", help="only scenario ids matching these comma-separated globs (e.g. 'T8*,T9')")
    v.add_argument("--scenarios", default=None, metavar="DIR", type=paths.input_dir_arg("--scenarios"), help="scenario tree to run instead of the bundled experiments/paper (your own measurements; use with --set all)")
    v.add_argument("--out", default=None, type=paths.output_dir_arg("--out"), help="write validate.csv, validate.json and plots here")
    v.add_argument("--fast", action="store_true", help="256 decode tokens instead of 1024 (changes results by < 1%%, see docs/validation.md)")
    v.add_argument("--fidelity", choices=tiers.NAMES, default=None, help=f"timing tier (default: each scenario's, i.e. {tiers.DEFAULT} unless the scenario names one)")
    v.add_argument("--fitted", action="store_true", help="list every constant fitted to an end-to-end point, and the free set with the fold-to-fold spread --cross --record stored; exit")
    v.add_argument("--cross", action="store_true",
                   help="leave-one-group-out cross-validation: refit the free constants without each figure's points, predict them; "
                   "prints the fitted and the predictive error side by side (analytic tier, --fast lengths unless --full)")
    v.add_argument("--by", choices=("figure", "device"), default="figure",
                   help="--cross: leave out one figure of the paper at a time (default), or one phone: every point measured on it "
                   "(with --set all by default: every phone's points)")
    v.add_argument("--full", action="store_true", help="--cross: full-length runs")
    v.add_argument("--record", action="store_true",
                   help=f"--cross: record the spreads in experiments/paper/{CROSS_RECORD}, where --fitted reads them")
    v.add_argument("--calibration", default=None, metavar="OVERLAY.yaml", type=paths.input_file_arg("--calibration"), help="apply constants fitted by `pi2sim calibrate --out` to every point")
    v.add_argument("--allow-stale-calibration", action="store_true", help="apply a --calibration overlay fitted to a device file that has changed since")
    v.add_argument("--no-sweep", action="store_true", help="skip the Mixtral memory sweep plot")
    v.add_argument("--report", default=None, type=paths.output_file_arg("--report"), metavar="FILE.html",
                   help="also write one self-contained HTML page: the figures, every point, the fitted constants, each point's configuration, the version and this command")
    v.add_argument("--quiet", action="store_true")
    v.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    from ..workflows import validate as V

    if args.cross:
        return cmd_cross(args)
    if args.fitted:
        rows = V.fitted_constants()
        for r in rows:
            print(f"{r['where']:40s} {r['key']:28s} {r['value']:>14s}  {r['note']}")
        print(f"\n{len(rows)} fitted constants")
        print(render_free_set())
        return 0
    if args.report:
        from ..report.html import check_path

        check_path(args.report)
    root = None
    if args.scenarios:
        from ..errors import InputError

        root = Path(args.scenarios)
        if not root.is_dir():
            raise InputError(None, "--scenarios", "a directory of scenario YAML files", args.scenarios)
    prepare = None
    if args.calibration:
        from ..workflows.calibrate import apply_overlay, check_overlay, load_overlay

        overlay = load_overlay(args.calibration)
        check_overlay(overlay, allow_stale=args.allow_stale_calibration)

        def prepare(cfg):  # points on other phones keep their own constants
            return apply_overlay(cfg, overlay, strict=False)
    outcomes = V.validate(args.which, fast=args.fast, fidelity=args.fidelity, progress=not args.quiet, only=args.only, root=root, prepare=prepare)
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
    if args.report:
        from ..report import html
        from ..schema import to_dict
        from ..workflows.reports import validate_sections

        configs = {o.scenario.id: (to_dict(V.run_config(o.scenario, args.fast)) if o.scenario.kind == "run" else dict(o.scenario.bench or {}))
                   for o in outcomes}
        sections = validate_sections(df, configs, args.which, args.fast, args.fidelity, V.fitted_constants())
        html.write(args.report, f"pi2sim validate: set {args.which}", sections, getattr(args, "argv", None))
        print(f"wrote {args.report}", file=sys.stderr)
    return 0


CROSS_RECORD = "cross-validation.json"  # experiments/paper/<this>: the last `validate --cross --record`


def render_free_set() -> str:
    """The free set with each constant's fold-to-fold spread, from the recorded cross-validation
    (marked stale where the constant's value has changed since it was recorded)."""
    from ..workflows import calibrate as C
    from .. import resources

    path = resources.data_dir("experiments") / "paper" / CROSS_RECORD
    rec = json.loads(path.read_text()) if path.is_file() else {}
    lines = ["", "free set (pi2sim calibrate refits these; spread: (max - min) / median over the folds of the last pi2sim validate --cross --record)"]
    for c in C.free_constants("oneplus12"):
        spread = rec.get("spreads", {}).get(c.name)
        at = rec.get("values", {}).get(c.name)
        if spread is None:
            note = "not recorded"
        elif at is None or abs(at - c.value) > 1e-6 * max(1.0, abs(c.value)):
            note = f"stale (recorded at {at}): rerun pi2sim validate --cross --record"
        else:
            note = f"spread {100 * spread:.1f}%"
        lines.append(f"  {c.name:32s} {str(c.as_setting(c.value)):>12s}  bounds {c.as_setting(c.lo)}..{c.as_setting(c.hi)}  {note}")
    return "\n".join(lines)


def cmd_cross(args: argparse.Namespace) -> int:
    import statistics

    from ..workflows import calibrate as C
    from .calibrate import scenarios_for

    root = Path(args.scenarios) if args.scenarios else None
    which = "fit" if args.which == "calibration" and root is None else args.which
    if args.by == "device" and args.which == "calibration" and root is None:
        which = "all"  # a phone's points are spread over every set
    scenarios = scenarios_for(which, root, args.only)
    res = C.cross_validate(scenarios, fast=not args.full, fidelity=args.fidelity or "analytic", progress=not args.quiet, by=args.by)
    lines = [f"{'group left out':20s} {'id':24s} {'fitted':>8s} {'predicted':>10s}  note"]
    for r in res.rows:
        note = f"constant seen only by this group: {r['unidentified']}" if r["unidentified"] else ""
        lines.append(f"{r['group']:20s} {r['id']:24s} {r['fitted_error_pct']:+7.1f}% {r['predictive_error_pct']:+9.1f}%  {note}")
    from ..workflows import validate as V

    def stats(label: str, rows: list[dict]) -> str:
        f_ = [abs(r["fitted_error_pct"]) for r in rows]
        p_ = [abs(r["predictive_error_pct"]) for r in rows]
        return (f"{label:12s} n={len(rows)}  fitted median |error| {statistics.median(f_):.1f}% max {max(f_):.1f}%   "
                f"predictive median |error| {statistics.median(p_):.1f}% max {max(p_):.1f}%")

    lines += ["", stats("all points", res.rows)]
    if args.by == "device":
        lines.append("")
        lines.append(f"{'phone left out':16s} {'n':>3s} {'fitted median':>14s} {'fitted max':>11s} {'predicted median':>17s} {'predicted max':>14s}  constants only its points identify")
        for g in res.groups:
            sub = [r for r in res.rows if r["group"] == g]
            if not sub:
                continue
            f_ = [abs(r["fitted_error_pct"]) for r in sub]
            p_ = [abs(r["predictive_error_pct"]) for r in sub]
            lines.append(f"{g:16s} {len(sub):3d} {statistics.median(f_):13.1f}% {max(f_):10.1f}% {statistics.median(p_):16.1f}% {max(p_):13.1f}%  {sub[0]['unidentified'] or '-'}")
    for name in ("calibration", "baselines") if args.by == "figure" else ():
        sub = [r for r in res.rows if r["group"] in V.SETS[name]]
        if sub:
            lines.append(stats(name, sub))
    lines.append("")
    lines.append(f"{'constant':32s} {'all points':>12s} {'fold min':>12s} {'fold max':>12s} {'spread':>8s}")
    for c, x in zip(res.full.free, res.full.x):
        vals = [res.folds[g][c.name] for g in res.folds if c.name in res.folds[g]]
        if not vals:
            continue
        lines.append(f"{c.name:32s} {str(c.as_setting(x)):>12s} {str(c.as_setting(min(vals))):>12s} {str(c.as_setting(max(vals))):>12s} "
                     f"{100 * res.spreads.get(c.name, 0.0):7.1f}%")
    print("\n".join(lines))
    if args.record:
        from .. import resources
        from ..atomic import write_text

        from ..version import __version__

        rec = {"pi2sim_version": __version__, "spreads": res.spreads,
               "values": {c.name: c.value for c in res.full.free}, "fitted_at_all_points": res.full.values(), "folds": res.folds}
        write_text(resources.data_dir("experiments") / "paper" / CROSS_RECORD, json.dumps(rec, indent=2, sort_keys=True) + "\n")
    if args.out:
        import pandas as pd

        from ..atomic import write_text

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "cross.csv", pd.DataFrame(res.rows).to_csv(index=False, float_format="%.6g", lineterminator="\n"))
        write_text(out / "cross.json", json.dumps({"rows": res.rows, "folds": res.folds, "spreads": res.spreads,
                                                   "full_fit": res.full.values()}, indent=2, sort_keys=True, default=float) + "\n")
    return 0
