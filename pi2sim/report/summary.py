"""Turn a run into its summary (headline numbers + the breakdowns that explain them) and a
per-token table. Names carry units (``_ms``, ``_gb``, ``_tok_s``, ``_bytes``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from ..access.segmented import NeuronAccess
from ..policies.memory import GB


def _r(x: float, nd: int = 6) -> float:
    """Round for output: stable text, no spurious float noise in the last digits."""
    if x is None or not np.isfinite(x):
        return x
    return float(f"{x:.{nd}g}")


def _pct(x: np.ndarray) -> dict[str, float]:
    return {
        "mean": _r(float(np.mean(x))),
        "p50": _r(float(np.percentile(x, 50))),
        "p90": _r(float(np.percentile(x, 90))),
        "p99": _r(float(np.percentile(x, 99))),
    }


def summarize(*, cfg, ctx, memory, access_summary, access, plan, timing, prefill, resolved, workload) -> tuple[dict, dict[str, np.ndarray]]:
    """The run's summary (headline metrics and their breakdowns) and its per-token table as
    columns (name -> array, in table order; :func:`tokens_frame` makes the DataFrame, which a
    run that writes no table never needs: pandas costs 0.3 s to import)."""
    mem, acc_sum = memory, access_summary
    T = plan.n_tokens
    tok = timing.token_s
    decode_s = float(tok.sum())
    prefill_s = float(prefill.seconds)
    comp_t, io_t, oth_t = float(timing.compute_s.sum()), float(timing.io_s.sum()), float(timing.other_s.sum())
    total = max(decode_s, 1e-30)
    flash_bytes = plan.flash_bytes if plan.flash_bytes is not None else np.zeros(T)
    flash_reads = plan.flash_reads if plan.flash_reads is not None else np.zeros(T)
    util = {}
    for k, v in sorted(timing.busy_s.items()):
        util[k] = _r(min(1.0, v / total), 4)
    dram_bw = sum(timing.dram_bytes.values()) / total
    batch = getattr(plan, "batch", None)
    summary: dict[str, Any] = {
        "decode_tok_s": _r(T / total) if batch is None else _r(float(batch.sum()) / total),  # every sequence's tokens
        "prefill_tok_s": _r(ctx.prompt_tokens / prefill_s) if prefill_s > 0 else None,
        "ttft_ms": _r(prefill_s * 1e3),
        "tbt_ms": _pct(tok * 1e3),
        "peak_memory_gb": _r(mem.total / GB),
        "memory_budget_gb": _r(mem.budget / GB),
        "memory_breakdown_gb": {k: _r(v) for k, v in mem.breakdown_gb().items()},
        "flash_bytes_per_token": _r(float(flash_bytes.mean())),
        "flash_reads_per_token": _r(float(flash_reads.mean())),
        "flash_read_gbs": _r(float(flash_bytes.sum()) / total / 1e9),
        "neuron_cache_hit_rate": _r(acc_sum.hit_rate),
        "critical_path": {"compute": _r(comp_t / total, 4), "io_stall": _r(io_t / total, 4), "other": _r(oth_t / total, 4)},
        "critical_path_ms_per_token": {"compute": _r(comp_t / T * 1e3), "io_stall": _r(io_t / T * 1e3), "other": _r(oth_t / T * 1e3)},
        "stage_ms_per_token": {k: _r(float(np.sum(v)) / T * 1e3) for k, v in timing.stage_s.items()},
        "utilization": util,
        "dram_gbs": _r(dram_bw / 1e9),
        "prefill": {
            "prompt_tokens": ctx.prompt_tokens,
            "time_ms": _r(prefill_s * 1e3),
            "split_ms": {k: _r(v * 1e3) for k, v in prefill.split.items()},
        },
        "cache": {k: (_r(v) if isinstance(v, float) else v) for k, v in acc_sum.details.items()},
        "decode_tokens": T,
        "tier": timing.tier,
        "notes": list(mem.notes) + (list(workload.notes) if workload is not None else []),
        "config": resolved,
    }
    if mem.condition:
        summary["memory_condition"] = mem.condition
    if batch is not None:  # Best-of-N: tokens of all sequences, and of each
        summary["best_of"] = {"sequences": int(batch.max()), "decode_tok_s_per_sequence": _r(T / total),
                              "decode_tok_s_at_start": _r(float(batch[0]) / float(tok[0])), "mean_batch": _r(float(batch.mean()))}
    spec = getattr(plan, "speculation", None)
    if spec:  # speculative decoding: what a step advances and costs (each simulated token carries 1/E of a step)
        per_tok = summary["stage_ms_per_token"]
        E = spec["tokens_per_step"]
        summary["speculation"] = {**{k: (_r(v) if isinstance(v, float) else v) for k, v in spec.items()},
                                  "accepted_tokens_per_step": _r(E - 1.0),
                                  "draft_ms_per_step": _r(per_tok.get("draft", 0.0) * E),
                                  "verify_ms_per_step": _r((per_tok.get("verify", 0.0) + per_tok.get("verify_lm_head", 0.0)) * E)}
    df = {
        "token": np.arange(T),
        "context_tokens": ctx.context_lengths(),
        "tbt_ms": tok * 1e3,
        "compute_ms": timing.compute_s * 1e3,
        "io_stall_ms": timing.io_s * 1e3,
        "other_ms": timing.other_s * 1e3,
        "flash_bytes": flash_bytes,
        "flash_reads": flash_reads,
    }
    if batch is not None:
        df["batch"] = batch
    if isinstance(access, NeuronAccess):  # per-neuron counts (the segmented cache and LLM in a Flash's buffer)
        tp = access.tp.sum(axis=1)
        df["active_neurons"] = access.active.sum(axis=1)
        df["predicted_neurons"] = tp + access.fp.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            df["neuron_cache_hit_rate"] = np.where(tp > 0, 1.0 - access.tp_miss.sum(axis=1) / np.maximum(tp, 1), 1.0)
        # how the miss rate varies from token to token: what makes the TBT tail (PI2 v3 §7.2.4
        # reports Mixtral's as 3.5% mean, 18.9% at P99)
        summary["neuron_cache_miss_rate_per_token"] = _pct(1.0 - df["neuron_cache_hit_rate"])
    for k, v in timing.stage_s.items():
        df[f"{k}_ms"] = np.asarray(v) * 1e3
    return summary, df


def tokens_frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """The per-token table of :func:`summarize`'s columns."""
    import pandas as pd

    return pd.DataFrame(columns)


def summary_row(summary: dict) -> dict:
    """A run's summary as one flat row with unit-suffixed names (sweep tables, compare, regress)."""
    cp = summary["critical_path"]
    t = summary["tbt_ms"]
    row = {
        "status": "ok",
        "decode_tok_s": summary["decode_tok_s"],
        "prefill_tok_s": summary["prefill_tok_s"],
        "ttft_ms": summary["ttft_ms"],
        "tbt_mean_ms": t["mean"],
        "tbt_p50_ms": t["p50"],
        "tbt_p90_ms": t["p90"],
        "tbt_p99_ms": t["p99"],
        "peak_memory_gb": summary["peak_memory_gb"],
        "memory_budget_gb": summary["memory_budget_gb"],
        "flash_bytes_per_token": summary["flash_bytes_per_token"],
        "flash_reads_per_token": summary["flash_reads_per_token"],
        "flash_read_gbs": summary["flash_read_gbs"],
        "neuron_cache_hit_rate": summary["neuron_cache_hit_rate"],
        "compute_share": cp["compute"],
        "io_stall_share": cp["io_stall"],
        "other_share": cp["other"],
        "reason": "",
    }
    for k, v in summary.get("critical_path_ms_per_token", {}).items():
        row[f"critical_{k}_ms"] = v
    for k, v in summary.get("stage_ms_per_token", {}).items():
        row[f"stage_{k}_ms"] = v
    for k, v in summary.get("memory_breakdown_gb", {}).items():
        row[f"memory_{k}_gb"] = v
    for k, v in summary.get("utilization", {}).items():
        row[f"util_{k}"] = v
    return row
