"""``pi2sim run``: simulate one configuration; ``pi2sim policies``: what each policy accepts."""

from __future__ import annotations

import argparse
import sys

from .. import paths
from ..engine import tiers
from ..errors import InputError


def _policy_epilog(policy: str | None) -> str:
    from .. import policies
    from ..schema import describe_fields

    names = policies.names()
    lines = [f"policies: {', '.join(names)} (options: --set KEY=VALUE; see `pi2sim policies NAME`)"]
    if policy in names:
        cls = policies.get(policy)
        lines += ["", f"options of {policy}: {cls.summary}"]
        for key, kind, default, help_ in describe_fields(cls.Options):
            lines.append(f"  {key:22s} {kind:24s} default {default:10s} {help_}")
        if cls.presets:
            lines += ["", f"presets of {policy} (--set preset=NAME):"]
            for name in cls.presets:
                lines.append(f"  {name:12s} {cls.preset_help.get(name, '')}")
    lines += [
        "",
        "other --set keys: any run option (quant=fp16, decode_tokens=512, fidelity=analytic, sparsity=0.7),",
        "device.<yaml key path> and model.<yaml key path> (e.g. device.storage.latency=\"60 us\").",
    ]
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    # peek at --policy so that `pi2sim run --policy X --help` documents X's options
    policy = None
    argv = sys.argv[1:]
    if "--policy" in argv and argv.index("--policy") + 1 < len(argv):
        policy = argv[argv.index("--policy") + 1]
    elif not any(a.startswith("--policy=") for a in argv):
        policy = "powerinfer2"
    for a in argv:
        if a.startswith("--policy="):
            policy = a.split("=", 1)[1]
    p = sub.add_parser(
        "run",
        help="simulate one phone / model / policy configuration",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_policy_epilog(policy),
    )
    add_run_arguments(p)
    p.add_argument("--plan", default=None, metavar="FILE", type=paths.input_file_arg("--plan"), help="apply a plan written by `pi2sim plan --out` (its policy options; its device, model and memory unless given here)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--out", default=None, type=paths.output_dir_arg("--out"), help="write summary.json and tokens.csv into this directory")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--check", action="store_true", help="assert the invariants of docs/invariants.md during the run (also PI2SIM_CHECK=1)")
    p.add_argument("--timeline", default=None, metavar="OUT.json", type=paths.output_file_arg("--timeline"),
                   help="write a Perfetto / Chrome trace of the decode (open in ui.perfetto.dev); needs an event tier (layer or cluster)")
    p.add_argument("--timeline-tokens", default=None, metavar="A:B",
                   help=f"decode tokens A (inclusive) to B (exclusive) to keep in the timeline (default the first {TIMELINE_DEFAULT_TOKENS})")
    p.set_defaults(func=cmd_run)

    q = sub.add_parser("policies", help="list policies, or document one policy's options and presets")
    q.add_argument("name", nargs="?", default=None)
    q.set_defaults(func=cmd_policies)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="bundled device name (oneplus12, galaxy_s23, galaxy_s24, oneplus13, oneplus_ace2, pixel9, poco_x7_pro, ...: devices/) or path to a device YAML, e.g. one from pi2sim device new (default oneplus12)")
    p.add_argument("--model", default=None, help="bundled model name or path (default turbosparse-mistral-7b)")
    p.add_argument("--trace", default=None, help="trace file (default: the model's bundled or synthetic trace)")
    p.add_argument("--policy", default=None, help="inference engine to simulate (default powerinfer2)")
    mem = p.add_mutually_exclusive_group()
    mem.add_argument("--memory-gb", type=float, default=None, help="memory available to the app (GB)")
    mem.add_argument("--ffn-offload", type=float, default=None, help="share of FFN weights left in flash (default 0.5)")
    p.add_argument("--prompt-tokens", type=int, default=None, help="prompt length (default 64)")
    p.add_argument("--decode-tokens", type=int, default=None, help="tokens to decode (default 256)")
    p.add_argument("--fidelity", choices=tiers.NAMES, default=None, help=f"timing tier (default {tiers.DEFAULT})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="run, policy, device.* or model.* option (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    p.add_argument("--best-of", type=int, default=None, metavar="N",
                   help="Best-of-N: N candidates decode together after one prefill, one finishing every drop_every steps (the dense engines, llamacpp, powerinfer2)")
    p.add_argument("--calibration", default=None, metavar="OVERLAY.yaml", type=paths.input_file_arg("--calibration"),
                   help="apply constants fitted by `pi2sim calibrate --out` (explicit --set values win); checked against its device file and bounds")
    p.add_argument("--allow-stale-calibration", action="store_true",
                   help="apply a --calibration overlay fitted to a device file that has changed since (its recorded hash differs)")


def config_from_args(args: argparse.Namespace):
    from .. import schema
    from ..config import RunConfig, apply_sets, apply_values

    data = {
        "device": args.device,
        "model": args.model,
        "trace": args.trace,
        "policy": args.policy,
        "memory_gb": args.memory_gb,
        "ffn_offload": args.ffn_offload,
        "prompt_tokens": args.prompt_tokens,
        "decode_tokens": args.decode_tokens,
        "fidelity": args.fidelity,
        "seed": args.seed,
    }
    names = {
        "memory_gb": "--memory-gb", "ffn_offload": "--ffn-offload", "prompt_tokens": "--prompt-tokens",
        "decode_tokens": "--decode-tokens", "seed": "--seed",
    }
    plan_opts: dict = {}
    if getattr(args, "plan", None):
        plan_run, plan_opts = load_plan(args.plan)
        for k, v in plan_run.items():
            if data.get(k) is None and not (k in ("memory_gb", "ffn_offload") and (args.memory_gb is not None or args.ffn_offload is not None)):
                data[k] = v
    try:
        cfg = schema.build(RunConfig, {k: v for k, v in data.items() if v is not None}, "command line")
    except InputError as exc:
        key = names.get(exc.key or "", f"--{(exc.key or '').replace('_', '-')}")
        raise InputError(None, key, exc.expected, exc.got) from None
    if plan_opts:
        cfg = apply_values(cfg, plan_opts, source=f"{args.plan}: plan")
    if getattr(args, "best_of", None) is not None:
        from dataclasses import fields

        from .. import policies

        able = sorted(n for n in policies.names() if "best_of" in {f.name for f in fields(policies.get(n).Options)})
        if "best_of" not in {f.name for f in fields(policies.get(cfg.policy).Options)}:
            raise InputError(None, "--best-of", f"a policy that models Best-of-N ({', '.join(able)}); {cfg.policy} does not yet", args.best_of)
        cfg = apply_values(cfg, {"best_of": args.best_of}, source="--best-of")
    cfg = apply_sets(cfg, args.set)
    if getattr(args, "calibration", None):
        from ..workflows.calibrate import apply_overlay, check_overlay, load_overlay

        overlay = load_overlay(args.calibration)
        check_overlay(overlay, cfg.device, allow_stale=getattr(args, "allow_stale_calibration", False))
        cfg = apply_overlay(cfg, overlay)
    return cfg


def load_plan(path: str) -> tuple[dict, dict]:
    """A plan YAML from `pi2sim plan --out`: (run keys, policy options)."""
    from pathlib import Path

    from .. import yamlio

    p = Path(path)
    if not p.is_file():
        raise InputError(p, None, "an existing plan YAML (written by pi2sim plan --out)")
    data = yamlio.load(p)
    if not isinstance(data, dict) or not isinstance(data.get("plan"), dict) or not isinstance(data.get("run", {}), dict):
        raise InputError(p, "plan", "a mapping of policy options (and a run mapping)")
    run = dict(data.get("run") or {})
    unknown = set(run) - {"device", "model", "policy", "memory_gb", "ffn_offload"}
    if unknown:
        raise InputError(p, f"run.{sorted(unknown)[0]}", "one of device, model, policy, memory_gb, ffn_offload")
    return run, dict(data["plan"])


TIMELINE_DEFAULT_TOKENS = 16


def parse_token_window(text: str | None, n_tokens: int) -> tuple[int, int]:
    """``A:B`` -> (A, B), within the run's decode tokens; None -> the first tokens."""
    if text is None:
        return 0, min(n_tokens, TIMELINE_DEFAULT_TOKENS)
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        a = int(parts[0]) if parts[0] else 0
        b = int(parts[1]) if parts[1] else n_tokens
    except ValueError:
        raise InputError(None, "--timeline-tokens", "A:B with integers A < B (e.g. 0:8)", text) from None
    if not 0 <= a < b <= n_tokens:
        raise InputError(None, "--timeline-tokens", f"0 <= A < B <= {n_tokens} (the run's decode tokens)", text)
    return a, b


def cmd_run(args: argparse.Namespace) -> int:
    from ..report.output import human, summary_json, write_outputs
    from ..simulation import run

    if args.timeline_tokens is not None and args.timeline is None:
        raise InputError(None, "--timeline-tokens", "--timeline OUT.json as well", args.timeline_tokens)
    if args.timeline is not None and args.fidelity is None:
        args.fidelity = "cluster"  # a timeline shows every neuron cluster unless asked otherwise
    cfg = config_from_args(args)
    recorder = None
    if args.timeline is not None:
        from ..engine.recorder import Recorder

        a, b = parse_token_window(args.timeline_tokens, cfg.decode_tokens)
        recorder = Recorder(a, b)
    result = run(cfg, progress=not args.quiet, recorder=recorder, check=True if args.check else None)
    if recorder is not None:
        from ..report.timeline import write_timeline

        recorder.meta.update(config_hash=result.resolved["config_hash"], tokens=f"{recorder.first_token}:{recorder.stop_token}",
                             tier=cfg.fidelity, device=result.device.name, model=result.model.name, policy=cfg.policy)
        print(f"wrote {write_timeline(args.timeline, recorder)} (tokens {recorder.first_token}:{recorder.stop_token}, "
              f"{len(recorder.slices)} slices, {len(recorder.complete_flows())} flows)", file=sys.stderr)
    if args.json:
        sys.stdout.write(summary_json(result.summary))
    else:
        print(human(result.summary))
    if args.out:
        for p in write_outputs(args.out, result.summary, result.tokens):
            print(f"wrote {p}", file=sys.stderr)
    return 0


def cmd_policies(args: argparse.Namespace) -> int:
    from .. import policies

    if args.name is None:
        for n in policies.names():
            print(f"{n:18s} {policies.get(n).summary}")
        return 0
    policies.get(args.name)
    print(_policy_epilog(args.name))
    return 0
