"""``pi2sim calibrate``: fit the free constants to measured scenarios and write an overlay."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .. import paths
from ..engine import tiers


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "calibrate",
        help="fit the declared free constants (fitted to ..., bounds: LO..HI) to measured scenarios; write an overlay for run --calibration",
        description="Fit every constant of the device file and the policies that is marked 'fitted to' with 'bounds: LO..HI' "
        "to a scenario set (relative error, scipy least_squares; integers searched over their bounds). "
        "Your own phone: pi2sim calibrate --device myphone.yaml --scenarios mymeasurements/ --out myphone-cal.yaml",
    )
    c.add_argument("--device", default="oneplus12", help="device whose constants are fitted (bundled name or YAML path)")
    c.add_argument("--scenarios", default=None, metavar="DIR", type=paths.input_dir_arg("--scenarios"), help="scenario tree (default: the bundled paper points)")
    c.add_argument("--set", dest="which", default="fit", choices=("fit", "calibration", "baselines", "all"),
                   help="which bundled points: fit = calibration + baselines (default); ignored with --scenarios")
    c.add_argument("--only", default=None, metavar="GLOBS", help="only scenario ids matching these globs")
    c.add_argument("--free", default=None, metavar="NAMES", help="fit only these constants (comma-separated names as listed by --list)")
    c.add_argument("--list", action="store_true", help="list the free constants with their bounds, and exit")
    c.add_argument("--full", action="store_true", help="full-length runs instead of validate --fast lengths (slower)")
    c.add_argument("--fidelity", choices=tiers.NAMES, default="analytic", help="timing tier (default analytic)")
    c.add_argument("--max-evals", type=int, default=60, help="evaluations per least-squares fit (default 60)")
    c.add_argument("--out", default=None, metavar="OVERLAY.yaml", type=paths.output_file_arg("--out"), help="write the fitted constants with their provenance here")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_calibrate)


def scenarios_for(which: str, root: Path | None, only: str | None):
    from ..workflows import validate as V

    if root is not None:
        return V.load_scenarios("all", root, only)
    if which == "fit":
        return [s for s in V.load_scenarios("all", None, only) if s.figure in V.SETS["calibration"] + V.SETS["baselines"]]
    return V.load_scenarios(which, None, only)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ..workflows import calibrate as C
    from ..errors import InputError

    if args.max_evals < 1:
        raise InputError(None, "--max-evals", "a positive number of evaluations", args.max_evals)
    free = C.free_constants(args.device)
    if args.list:
        for c in free:
            print(f"{c.name:32s} {str(c.as_setting(c.value)):>12s}  bounds {c.as_setting(c.lo)}..{c.as_setting(c.hi)}  ({c.where})")
        return 0
    if args.free:
        wanted = [n.strip() for n in args.free.split(",") if n.strip()]
        names = {c.name for c in free}
        for n in wanted:
            if n not in names:
                raise InputError(None, "--free", f"names of free constants ({', '.join(sorted(names))})", n)
        free = [c for c in free if c.name in wanted]
    root = None
    if args.scenarios:
        root = Path(args.scenarios)
        if not root.is_dir():
            raise InputError(None, "--scenarios", "a directory of scenario YAML files", args.scenarios)
    scenarios = scenarios_for(args.which, root, args.only)
    f = C.fit(scenarios, args.device, free=free, fast=not args.full, fidelity=args.fidelity, max_evals=args.max_evals, progress=not args.quiet)
    print(f"fitted {len(f.free)} constants to {len(f.scenario_ids)} points in {f.evaluations} evaluations ({f.message})")
    for c, s, x in zip(f.free, f.start, f.x):
        print(f"  {c.name:32s} {str(c.as_setting(s)):>12s} -> {str(c.as_setting(x)):>12s}")
    print(f"\n{'id':24s} {'before':>8s} {'after':>8s}")
    for sid, b, a in zip(f.scenario_ids, f.before.residuals, f.after.residuals):
        print(f"{sid:24s} {100 * (math.exp(b) - 1):+7.1f}% {100 * (math.exp(a) - 1):+7.1f}%")
    print(f"\nmedian |error| {100 * C.median_abs_error(f.before.residuals):.1f}% -> {100 * C.median_abs_error(f.after.residuals):.1f}%")
    if args.out:
        C.write_overlay(args.out, C.overlay_dict(f, args.device, str(root) if root else f"bundled experiments/paper ({args.which})"))
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
