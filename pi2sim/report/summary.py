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


def summarize(*, cfg, ctx, memory, access_summary, access, plan, timing, prefill, resolved, workload, energy=None,
              thermal=None) -> tuple[dict, dict[str, np.ndarray]]:
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
        # the other per-token metrics are per decode step (one token of each candidate alive)
        summary["best_of"] = {"sequences": int(batch.max()), "decode_tok_s_per_sequence": _r(T / total),
                              "decode_tok_s_at_start": _r(float(batch[0]) / float(tok[0])), "mean_batch": _r(float(batch.mean())),
                              "flash_bytes_per_generated_token": _r(float(flash_bytes.sum()) / float(batch.sum()))}
    spec = getattr(plan, "speculation", None)
    if spec:  # speculative decoding: what a step advances and costs (each simulated token carries 1/E of a step)
        per_tok = summary["stage_ms_per_token"]
        E = spec["tokens_per_step"]
        summary["speculation"] = {**{k: (_r(v) if isinstance(v, float) else v) for k, v in spec.items()},
                                  "accepted_tokens_per_step": _r(E - 1.0),
                                  "draft_ms_per_step": _r(per_tok.get("draft", 0.0) * E),
                                  "verify_ms_per_step": _r((per_tok.get("verify", 0.0) + per_tok.get("verify_lm_head", 0.0)) * E)}
    if energy is not None:
        summary.update(_energy_summary(energy, ctx.device, batch, T))
    if thermal is not None:
        summary["thermal"] = _thermal_summary(thermal, timing, batch)
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
    if energy is not None:
        df["energy_j"] = energy.total_token_j
        df["power_w"] = energy.token_w
    if thermal is not None:
        df["soc_temp_c"] = thermal.soc_c
        df["body_temp_c"] = thermal.body_c
        df["cpu_clock_share"] = thermal.clock_share
        for c in ctx.device.cpu.clusters:
            df[f"{c.name}_clock_ghz"] = thermal.clock_share * c.clock_hz / 1e9
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


def _energy_summary(energy, device, batch, T: int) -> dict:
    """Energy per generated token (the request's: its prefill is shared by the tokens it
    generates), its components, the power drawn, and what that does to the battery."""
    n = float(batch.sum()) if batch is not None else float(T)  # tokens generated (every sequence's)
    dec_j = float(np.sum(energy.total_token_j))
    pre_j = energy.prefill_total_j
    dec_s = float(np.sum(energy.token_s))
    total_s = dec_s + energy.prefill_s
    watts = energy.token_w
    pre_w = pre_j / energy.prefill_s if energy.prefill_s > 0 else 0.0
    mean_w = (dec_j + pre_j) / max(total_s, 1e-30)
    return {
        "energy_j_per_token": _r((dec_j + pre_j) / n),
        "decode_energy_j_per_token": _r(dec_j / n),
        "prefill_energy_j": _r(pre_j),
        "energy_breakdown_j_per_token": {c: _r((float(np.sum(energy.token_j[c])) + energy.prefill_j[c]) / n) for c in energy.token_j},
        # peak: the highest of any token's mean, the prefill's mean and, on the event tiers, the
        # mean over any peak_window of the first tokens' power profile (a token's phases)
        "power_w": {"mean": _r(mean_w), "peak": _r(max(float(watts.max()), pre_w, energy.sampled_peak_w or 0.0)),
                    "decode_mean": _r(dec_j / max(dec_s, 1e-30)), "prefill_mean": _r(pre_w),
                    "peak_window_ms": _r(energy.peak_window_s * 1e3) if energy.sampled_peak_w is not None else None},
        "battery_pct_per_hour": _r(mean_w * 3600.0 / device.power.battery_j * 100.0),
    }


def _thermal_summary(tr, timing, batch) -> dict:
    """How hot the phone got and what the governor did, with the speed of the first and the last
    tenth of the decode (what a long generation feels like)."""
    tok = timing.token_s
    T = len(tok)
    k = max(1, T // 10)
    per = batch if batch is not None else np.ones(T)

    def rate(sl):
        return _r(float(np.sum(per[sl])) / float(np.sum(tok[sl])))

    throttled = tr.level > 0
    return {
        "ambient_c": _r(tr.ambient_c),
        "start_temp_c": _r(tr.start_c[0]),
        "soc_temp_c": {"after_prefill": _r(tr.after_prefill_c[0]), "end": _r(float(tr.soc_c[-1])), "max": _r(float(tr.soc_c.max()))},
        "body_temp_c": {"after_prefill": _r(tr.after_prefill_c[1]), "end": _r(float(tr.body_c[-1])), "max": _r(float(tr.body_c.max()))},
        "min_cpu_clock_share": _r(float(tr.clock_share.min())),
        "throttled_time_share": _r(float(np.sum(tok[throttled])) / float(np.sum(tok)), 4),
        "first_throttle_s": _r(float(np.sum(tok[: int(np.argmax(throttled))]))) if throttled.any() else None,
        "decode_tok_s_first_tenth": rate(slice(0, k)),
        "decode_tok_s_last_tenth": rate(slice(T - k, T)),
    }


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
    if "energy_j_per_token" in summary:
        row["energy_j_per_token"] = summary["energy_j_per_token"]
        row["power_mean_w"] = summary["power_w"]["mean"]
        row["power_peak_w"] = summary["power_w"]["peak"]
        row["battery_pct_per_hour"] = summary["battery_pct_per_hour"]
    for k, v in summary.get("critical_path_ms_per_token", {}).items():
        row[f"critical_{k}_ms"] = v
    for k, v in summary.get("stage_ms_per_token", {}).items():
        row[f"stage_{k}_ms"] = v
    for k, v in summary.get("memory_breakdown_gb", {}).items():
        row[f"memory_{k}_gb"] = v
    for k, v in summary.get("utilization", {}).items():
        row[f"util_{k}"] = v
    return row
