"""``pi2sim plan``: the planner's best PowerInfer-2 configuration for a phone, model and budget."""

from __future__ import annotations

import argparse
import sys

from .. import paths


def register(sub: argparse._SubParsersAction) -> None:
    from .run import add_run_arguments

    p = sub.add_parser(
        "plan",
        help="search PowerInfer-2's configuration space (cache split, threads, cores, cluster size, CPU/NPU split) for the fastest decode",
        description="The simulator is the cost model; Optuna's seeded TPE sampler searches. Trial 0 is the default "
        "configuration, so the plan is never slower than it. Runs use --decode-tokens (default 64) on the "
        "--fidelity tier (default analytic); check a plan at full length with `pi2sim run --plan FILE`. Exit status 1 when no "
        "configuration tried meets --min-tok-s / --max-power-w (the closest is still printed and written).",
    )
    add_run_arguments(p)
    # a plan's trials are short runs on the fast tier: say so where the run arguments' help gives a run's defaults
    p._option_string_actions["--decode-tokens"].help = "tokens to decode in each trial (default 64)"
    p._option_string_actions["--fidelity"].help = "timing tier of the trials (default analytic)"
    p.add_argument("--trials", type=int, default=40, help="configurations to simulate (default 40)")
    p.add_argument("--max-cores", type=int, default=None, help="at most this many cores (compute threads + the I/O thread)")
    p.add_argument("--min-tok-s", type=float, default=None, help="required decode speed: slower trials are infeasible; the output says whether the plan meets it")
    p.add_argument("--objective", choices=("speed", "energy"), default="speed",
                   help="speed: the fastest decode (with --set thermal=true: the speed sustained as the phone heats); "
                   "energy: the fewest joules per generated token (needs the device's power model)")
    p.add_argument("--max-power-w", type=float, default=None, help="at most this mean power over the request (W); trials above it are infeasible")
    p.add_argument("--out", default=None, type=paths.output_file_arg("--out"), help="write the plan as YAML (usable with `pi2sim run --plan`)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import yaml

    from ..atomic import write_text
    from ..errors import InputError
    from ..workflows.planner import plan, runner_ups
    from .run import config_from_args

    if args.max_cores is not None and args.max_cores < 2:
        raise InputError(None, "--max-cores", "at least 2 (one compute thread and the I/O thread)", args.max_cores)
    if args.min_tok_s is not None and args.min_tok_s <= 0:
        raise InputError(None, "--min-tok-s", "a positive speed", args.min_tok_s)
    if args.max_power_w is not None and not 0.1 <= args.max_power_w <= 100:
        raise InputError(None, "--max-power-w", "a power between 0.1 and 100 W", args.max_power_w)
    base = config_from_args(args)
    if args.decode_tokens is None:
        base = replace(base, decode_tokens=64)
    if args.fidelity is None:
        base = replace(base, fidelity="analytic")
    p = plan(base, trials=args.trials, seed=base.seed, max_cores=args.max_cores, min_tok_s=args.min_tok_s, progress=not args.quiet,
             objective=args.objective, max_power_w=args.max_power_w)
    where = f"{base.memory_gb:g} GB" if base.memory_gb is not None else f"{100 * (base.ffn_offload if base.ffn_offload is not None else 0.5):.0f}% FFN offload"
    heat = ", thermal" if base.thermal else ""
    print(f"plan for {base.model} on {base.device}, {where} ({args.trials} trials, {base.decode_tokens} tokens, {base.fidelity} tier{heat}; "
          f"objective {args.objective})")
    for k in sorted(p.options):
        print(f"  {k:18s} {p.options[k]}")
    print()
    print(p.explain())
    print("\nrunner-ups:")
    print(runner_ups(p).to_string(index=False))
    if args.out:
        write_text(args.out, yaml.safe_dump(p.to_yaml_dict(), sort_keys=False))
        print(f"wrote {args.out}", file=sys.stderr)
    if not p.meets_constraints:
        print("pi2sim plan: no configuration tried meets the requirement (exit 1); the plan shown is the closest", file=sys.stderr)
        return 1
    return 0
