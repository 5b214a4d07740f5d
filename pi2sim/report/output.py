"""Writing results: JSON and CSV (atomically, byte-stable) and the short human table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import write_text

if TYPE_CHECKING:
    import pandas as pd


def summary_json(summary: dict) -> str:
    return json.dumps(summary, indent=2, sort_keys=True, allow_nan=False, default=_default) + "\n"


def _default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def tokens_csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def write_outputs(out_dir: str | Path, summary: dict, tokens: pd.DataFrame) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "summary.json", out / "tokens.csv"]
    write_text(paths[0], summary_json(summary))
    write_text(paths[1], tokens_csv(tokens))
    return paths


def human(summary: dict) -> str:
    """A short table: headline, where the time went, where the memory went, what the cache did."""
    c = summary["config"]
    run = c["run"]
    pol = c["policy"]
    mem_cond = f"{run['memory_gb']:g} GB" if run.get("memory_gb") is not None else f"{(run['ffn_offload'] if run.get('ffn_offload') is not None else 0.5):.0%} FFN offload"
    if summary.get("memory_condition") and run.get("memory_gb") is None and run.get("ffn_offload") is None:
        mem_cond = summary["memory_condition"]
    lines = [
        f"{pol['name']}{' (' + pol['preset'] + ')' if pol.get('preset') else ''} | {run['model']} on {run['device']} | "
        f"{mem_cond} | {run['quant']} | {run['decode_tokens']} decode tokens | {summary['tier']} tier",
        "",
        f"  decode          {summary['decode_tok_s']:8.2f} tok/s   TBT mean {summary['tbt_ms']['mean']:.1f} ms, "
        f"p50 {summary['tbt_ms']['p50']:.1f}, p90 {summary['tbt_ms']['p90']:.1f}, p99 {summary['tbt_ms']['p99']:.1f}",
    ]
    bo = summary.get("best_of")
    if bo:  # a step yields one token of each candidate still decoding: the TBT above is a step's
        lines.append(f"  best-of-N       {bo['sequences']} candidates after one prefill, {bo['mean_batch']:.2f} per step on average: "
                     f"{summary['decode_tok_s']:.2f} tok/s in total, {bo['decode_tok_s_per_sequence']:.2f} per sequence, "
                     f"{bo['decode_tok_s_at_start']:.2f} in total at the start")
    if summary.get("prefill_tok_s"):
        lines.append(f"  prefill         {summary['prefill_tok_s']:8.1f} tok/s   TTFT {summary['ttft_ms']:.0f} ms ({summary['prefill']['prompt_tokens']} prompt tokens)")
    cp = summary["critical_path"]
    cpm = summary["critical_path_ms_per_token"]
    lines += [
        "",
        "  where the time goes (critical path per token)",
        f"    compute     {cpm['compute']:8.2f} ms  {cp['compute']:6.1%}",
        f"    I/O stall   {cpm['io_stall']:8.2f} ms  {cp['io_stall']:6.1%}",
        f"    other       {cpm['other']:8.2f} ms  {cp['other']:6.1%}",
        "    by stage    " + ", ".join(f"{k} {v:.2f} ms" for k, v in summary["stage_ms_per_token"].items()),
        "",
        f"  memory          {summary['peak_memory_gb']:.2f} GB of {summary['memory_budget_gb']:.2f} GB budget",
        "    " + ", ".join(f"{k} {v:.2f}" for k, v in summary["memory_breakdown_gb"].items()) + " (GB)",
        "",
        f"  neuron cache    hit rate {summary['neuron_cache_hit_rate']:.1%}; flash {summary['flash_bytes_per_token'] / 1e6:.2f} MB "
        f"in {summary['flash_reads_per_token']:.0f} reads per token ({summary['flash_read_gbs']:.2f} GB/s)",
    ]
    cache = summary.get("cache", {})
    if cache:
        keys = [k for k in ("active_neurons_per_token", "hot_hit_share", "cold_hit_share", "miss_share") if k in cache]
        if keys:
            lines.append("    " + ", ".join(f"{k} {cache[k]:.4g}" for k in keys))
    sp = summary.get("speculation")
    if sp:
        lines.append(f"  speculation     draft {sp['draft_model']}, {sp['draft_tokens']} tokens per step, acceptance {sp['acceptance']:.3g}: "
                     f"{sp['tokens_per_step']:.2f} tokens per step ({sp['accepted_tokens_per_step']:.2f} drafted ones accepted); a step: draft {sp['draft_ms_per_step']:.1f} ms + verify {sp['verify_ms_per_step']:.1f} ms")
    if "energy_j_per_token" in summary:
        pw = summary["power_w"]
        window = f" over {pw['peak_window_ms']:g} ms" if pw.get("peak_window_ms") is not None else " (per token)"
        lines += [
            f"  energy          {summary['energy_j_per_token']:.3f} J/token   power mean {pw['mean']:.2f} W, peak {pw['peak']:.2f} W{window}; "
            f"battery {summary['battery_pct_per_hour']:.1f}%/h",
            "    " + ", ".join(f"{k} {v:.3f}" for k, v in summary["energy_breakdown_j_per_token"].items()) + " (J/token)",
        ]
    th = summary.get("thermal")
    if th:
        first = f"first throttle after {th['first_throttle_s']:.0f} s" if th.get("first_throttle_s") is not None else "no throttling"
        lines.append(f"  thermal         body {th['body_temp_c']['end']:.1f} C at the end (max {th['body_temp_c']['max']:.1f}), {first}; "
                     f"decode {th['decode_tok_s_first_tenth']:.2f} tok/s in the first tenth, {th['decode_tok_s_last_tenth']:.2f} in the last")
    util = summary.get("utilization", {})
    if util:
        lines.append("  utilization     " + ", ".join(f"{k} {v:.0%}" for k, v in util.items()))
    for note in summary.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)
