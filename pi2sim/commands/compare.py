"""``pi2sim compare`` and ``pi2sim ablate``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import paths
from .run import add_run_arguments, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("compare", help="several policies on the same phone, model, trace and memory condition")
    add_run_arguments(c)
    c.add_argument("--policies", required=True, help="comma-separated: name or name@preset (e.g. powerinfer2,llm-in-a-flash,llamacpp,dense@qnn), "
                   "a file.py:ClassName, or 'all' (every bundled engine)")
    c.add_argument("--devices", default=None, help="comma-separated phones, or 'all' (every shipped phone): the 'which phone and engine' view, "
                   "each phone under the condition given or its own app memory (instead of --device)")
    c.add_argument("--out", default=None, type=paths.output_dir_arg("--out"), help="write compare.csv and compare.json (and compare.png with --plot) here")
    c.add_argument("--plot", action="store_true", help="save a bar chart (decode tok/s and where the time goes)")
    c.add_argument("--json", action="store_true", help="print the table as JSON")
    c.add_argument("--report", default=None, type=paths.output_file_arg("--report"), metavar="FILE.html",
                   help="also write one self-contained HTML page: the chart, the table, every run's resolved configuration, the version and this command")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_compare)

    a = sub.add_parser("ablate", help="PowerInfer-2's ablation chain: baseline, +bundle, +cache, +pipeline, +xpu")
    add_run_arguments(a)
    a.add_argument("--out", default=None, type=paths.output_dir_arg("--out"), help="write ablation.csv and ablation.json here")
    a.add_argument("--json", action="store_true")
    a.add_argument("--quiet", action="store_true")
    a.set_defaults(func=cmd_ablate)


def _base(args: argparse.Namespace, sets: list[str]):
    saved = args.set
    args.set = sets
    try:
        return config_from_args(args)
    finally:
        args.set = saved


def _print_table(df, title: str) -> None:
    print(title)
    show = df.copy()
    for col in ("decode_tok_s", "prefill_tok_s", "ttft_ms", "tbt_p50_ms", "tbt_p99_ms", "peak_memory_gb", "flash_mb_per_token",
                "flash_reads_per_token", "compute_ms", "io_stall_ms", "other_ms"):
        if col in show:
            show[col] = show[col].map(lambda v: "" if v is None or v != v else f"{v:.4g}")
    for col in ("hit_rate", "compute_share", "io_stall_share", "other_share"):
        if col in show:
            show[col] = show[col].map(lambda v: "" if v is None or v != v else f"{v:.1%}")
    reasons = show.pop("reason") if "reason" in show else None
    print(show.to_string(index=False))
    if reasons is not None:
        for label, why in zip(show.iloc[:, 0], reasons):
            if why:
                print(f"  {label}: {why}")


def _write(df, out: str, stem: str) -> list[Path]:
    from ..atomic import write_text

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    files = [d / f"{stem}.csv", d / f"{stem}.json"]
    write_text(files[0], df.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    write_text(files[1], json.dumps(json.loads(df.to_json(orient="records")), indent=2, sort_keys=True) + "\n")
    return files


def cmd_compare(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..workflows.compare import run_policies, same_condition, split_sets

    if args.policy is not None:
        raise InputError(None, "--policy", "--policies NAME,NAME,... (compare runs several engines; --policy names one for run)", args.policy)
    specs = [s.strip() for s in args.policies.split(",") if s.strip()]
    if specs == ["all"]:
        from .. import policies

        specs = [n for n in policies.names() if n not in ("dense",)]  # dense is the generic engine behind the named ones
    if args.devices is not None:
        return _phones_and_engines(args, specs)
    if args.report:
        from ..report.html import check_path

        check_path(args.report)
    run_sets, per = split_sets(args.set, specs)
    base, mem = same_condition(_base(args, run_sets))
    table, results = run_policies(base, specs, per, progress=not args.quiet)
    if args.json:
        print(json.dumps({"model": base.model, "device": base.device, "memory_condition": mem, "decode_tokens": base.decode_tokens,
                          "rows": json.loads(table.to_json(orient="records"))}, indent=2))
    else:
        _print_table(table, f"{base.model} on {base.device}, {mem}, {base.decode_tokens} decode tokens ({base.fidelity} tier)")
    title = f"{base.model} on {base.device}, {mem}"
    if args.plot and not args.out:
        print("pi2sim: --plot needs --out DIR", file=sys.stderr)
        return 2
    written = []
    if args.out:
        written = _write(table, args.out, "compare")
        if args.plot:
            from ..atomic import write_bytes

            p = Path(args.out) / "compare.png"
            write_bytes(p, compare_png(table, title))
            written.append(p)
    if args.report:
        from ..report import html
        from ..workflows.reports import compare_sections

        resolved = {label: r.resolved for label, r in results.items()}
        png = compare_png(table, title) if (table["status"] == "ok").any() else None
        html.write(args.report, f"pi2sim compare: {title}", compare_sections(table, resolved, title, png), getattr(args, "argv", None))
        written.append(Path(args.report))
    for p in written:
        print(f"wrote {p}", file=sys.stderr)
    return 0


def compare_png(table, title: str) -> bytes:
    """Decode speed and where the time goes, by engine, as PNG bytes."""
    from ..report.figures import CATEGORY_COLOURS, png_bytes, pyplot

    plt = pyplot()
    ok = table[table["status"] == "ok"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.bar(ok["policy"], ok["decode_tok_s"], color="#4c72b0")
    ax1.set_ylabel("decode speed (tokens/s)")
    ax1.set_title("decode speed")
    ax1.tick_params(axis="x", rotation=30)
    bottom = None
    for cat, label in (("compute", "compute"), ("io_stall", "exposed I/O"), ("other", "other")):
        vals = ok[f"{cat}_share"].astype(float) * 1000.0 / ok["decode_tok_s"].astype(float)
        ax2.bar(ok["policy"], vals, bottom=bottom, color=CATEGORY_COLOURS[cat], label=label)
        bottom = vals if bottom is None else bottom + vals
    ax2.set_ylabel("critical path per token (ms)")
    ax2.set_title("where the time goes")
    ax2.legend()
    ax2.tick_params(axis="x", rotation=30)
    fig.suptitle(title)
    fig.tight_layout()
    return png_bytes(fig)


def cmd_ablate(args: argparse.Namespace) -> int:
    from ..workflows.compare import ablation

    base = _base(args, args.set)
    table, _ = ablation(base, progress=not args.quiet)
    cols = ["step", "status", "decode_tok_s", "speedup_vs_previous", "compute_ms", "io_stall_ms", "other_ms", "hit_rate", "flash_reads_per_token", "reason"]
    if args.json:
        print(table[cols].to_json(orient="records", indent=2))
    else:
        mem = f"{base.memory_gb:g} GB" if base.memory_gb is not None else f"{(0.5 if base.ffn_offload is None else base.ffn_offload):.0%} FFN offload"
        _print_table(table[cols], f"PowerInfer-2 ablation: {base.model} on {base.device}, {mem}, {base.decode_tokens} decode tokens")
        print("\nwhat each step changes: +bundle reads Gate/Up/Down as one bundle in two phases; +cache adds the hot region and the")
        print("per-neuron LRU; +pipeline moves I/O to one thread overlapped with compute; +xpu computes hot rows and half the")
        print("attention on the NPU")
    if args.out:
        for p in _write(table, args.out, "ablation"):
            print(f"wrote {p}", file=sys.stderr)
    return 0


def _phones_and_engines(args: argparse.Namespace, specs: list[str]) -> int:
    from ..errors import InputError
    from ..specs.device import device_names, load_device
    from ..workflows.compare import phones_and_engines, split_sets

    if args.device is not None:
        raise InputError(None, "--device", "either --device (one phone) or --devices (several), not both", args.device)
    devices = device_names() if args.devices.strip() == "all" else [d.strip() for d in args.devices.split(",") if d.strip()]
    if not devices:
        raise InputError(None, "--devices", "phone names (comma-separated) or all", args.devices)
    for d in devices:
        load_device(d)  # a typo fails before the first run
    run_sets, per = split_sets(args.set, specs)
    base = _base(args, run_sets)
    table = phones_and_engines(base, devices, specs, per, progress=not args.quiet)
    cols = ["device", "policy", "status", "decode_tok_s", "energy_j_per_token", "peak_memory_gb", "memory_condition", "reason"]
    if args.json:
        print(json.dumps({"model": base.model, "rows": json.loads(table[cols].to_json(orient="records"))}, indent=2))
    else:
        ok = table[table["status"] == "ok"]
        print(f"{base.model}: decode tok/s by phone (rows) and engine (columns); each phone under {'the condition given' if (base.memory_gb or base.ffn_offload is not None) else 'its app memory'}")
        if len(ok):
            print(ok.pivot(index="device", columns="policy", values="decode_tok_s").round(2).to_string())
            if ok["energy_j_per_token"].notna().any():
                print(f"\n{base.model}: energy per token (J)")
                print(ok.pivot(index="device", columns="policy", values="energy_j_per_token").round(3).to_string())
        refused = table[table["status"] != "ok"]
        if len(refused):
            print("\nrefused:")
            for r in refused.itertuples():
                print(f"  {r.device} / {r.policy}: {r.reason}")
    written = []
    if args.out:
        written = _write(table, args.out, "phones-engines")
        if args.plot:
            from ..atomic import write_bytes

            p = Path(args.out) / "phones-engines.png"
            write_bytes(p, phones_png(table, base.model))
            written.append(p)
    for p in written:
        print(f"wrote {p}", file=sys.stderr)
    return 0


def phones_png(table, model: str) -> bytes:
    """Decode tok/s and energy per token, phone by engine, as grouped bars (PNG bytes)."""
    import numpy as np

    from ..report.figures import png_bytes, pyplot

    plt = pyplot()
    ok = table[table["status"] == "ok"]
    devices = list(dict.fromkeys(table["device"]))
    engines = list(dict.fromkeys(table["policy"]))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / max(1, len(engines))
    x = np.arange(len(devices))
    for ax, col, label in ((axes[0], "decode_tok_s", "decode speed (tokens/s)"), (axes[1], "energy_j_per_token", "energy per token (J)")):
        for i, e in enumerate(engines):
            sub = ok[ok["policy"] == e].set_index("device")
            vals = [float(sub[col].get(d, np.nan)) if d in sub.index else np.nan for d in devices]
            ax.bar(x + (i - (len(engines) - 1) / 2) * width, vals, width, label=e)
        ax.set_xticks(x, devices, rotation=30, ha="right")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"{model}: every engine on every phone (missing bar: refused)")
    fig.tight_layout()
    return png_bytes(fig)
