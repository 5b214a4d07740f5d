"""Activation-trace statistics (``pi2sim trace stats``).

Definitions follow traces/README.md; all temporal statistics use the *decode* tokens
of one sequence at a time (a sequence is one chat turn), so nothing straddles two requests.

* sparsity: 1 - mean share of a layer's neurons active per token (per layer and overall);
  ``prompt_active`` is the active share on prompt tokens against the same thresholds.
* hot@80: the smallest share of a layer's neurons that accounts for 80% of its activation events
  (per layer, then averaged). For MoE, per (layer, expert), counting tokens routed to the expert.
* gini: Gini coefficient of per-neuron activation frequency (per layer, then averaged).
* share_above_80 / share_below_1: share of neurons active in > 80% / < 1% of tokens.
* jaccard_prev: |A_t & A_t-1| / |A_t | A_t-1|; reuse_prev: |A_t & A_t-1| / |A_t|.
* window_k: share of A_t inside the union of the previous k tokens' active sets (the LLM in a
  Flash window), over tokens that have k predecessors in their sequence.
* static_top_x: neurons ranked by frequency on the calibration split (first half of the
  sequences); share of activations on the evaluation split (second half) that fall in the top x%.
* union_k: share of the layer's FFN neurons (all experts for MoE) active in at least one of k
  consecutive tokens (batch or prefill density); union_indep_k takes the k tokens from k different
  sequences.
* coactivation (one layer, the middle one): median over neurons i of max_j P(j | i) ("closest
  friend"), over all neurons and over non-hot ones (top 20% by frequency removed), and the mean
  pairwise P(j | i) among non-hot neurons.
* MoE: share of tokens whose first-choice expert repeats the previous token's, and whose routed
  pair overlaps the previous token's pair (the Mixtral paper's Table 5 columns).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .format import PHASE_DECODE, PHASE_PROMPT, Trace, sequence_bounds

WINDOWS = (2, 4, 8, 16)
UNION_K = (1, 2, 4, 8, 16, 32, 64)
UNION_INDEP_K = (2, 4, 8, 16)
STATIC_TOP = (10, 20, 30, 50)
MAX_GAP = 65  # gaps beyond this are lumped together


@dataclass
class TraceStats:
    model: str
    n_tokens: int
    n_decode: int
    n_prompt: int
    n_sequences: int
    levels: list[str]
    overall: dict[str, dict[str, float]] = field(default_factory=dict)  # level -> metric -> value
    per_layer: pd.DataFrame | None = None  # columns: level, layer, metrics...
    union: dict[str, dict[str, float]] = field(default_factory=dict)  # level -> {"k=1": .., "indep k=2": ..}
    coactivation: dict[str, dict[str, float]] = field(default_factory=dict)
    moe: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "n_tokens": self.n_tokens,
            "n_decode": self.n_decode,
            "n_prompt": self.n_prompt,
            "n_sequences": self.n_sequences,
            "levels": self.levels,
            "overall": self.overall,
            "union": self.union,
            "coactivation": self.coactivation,
            "moe": self.moe,
            "per_layer": [] if self.per_layer is None else self.per_layer.to_dict(orient="records"),
        }

    def long_table(self) -> pd.DataFrame:
        """One row per (level, layer or 'all', metric): the CSV form."""
        rows = []
        for lv, d in self.overall.items():
            rows += [{"level": lv, "layer": "all", "metric": k, "value": v} for k, v in d.items()]
        for lv, d in self.union.items():
            rows += [{"level": lv, "layer": "all", "metric": f"union_{k}", "value": v} for k, v in d.items()]
        for lv, d in self.coactivation.items():
            rows += [{"level": lv, "layer": "mid", "metric": k, "value": v} for k, v in d.items()]
        for k, v in self.moe.items():
            rows.append({"level": "-", "layer": "all", "metric": k, "value": v})
        if self.per_layer is not None:
            for rec in self.per_layer.to_dict(orient="records"):
                lv, layer = rec.pop("level"), rec.pop("layer")
                rows += [{"level": lv, "layer": str(layer), "metric": k, "value": v} for k, v in rec.items()]
        return pd.DataFrame(rows, columns=["level", "layer", "metric", "value"])


def _gini(x: np.ndarray) -> float:
    x = np.sort(np.asarray(x, np.float64))
    n = len(x)
    if n == 0 or x.sum() <= 0:
        return 0.0
    cum = np.cumsum(x)
    return float((n + 1 - 2 * (cum.sum() / cum[-1])) / n)


def _hot_share(counts: np.ndarray, share: float = 0.8) -> float:
    total = counts.sum()
    if total <= 0:
        return float("nan")
    c = np.sort(counts)[::-1].cumsum()
    return float((np.searchsorted(c, share * total, side="left") + 1) / len(counts))


@dataclass
class _Layer:
    """Per-layer activity over the trace, in the layer's full neuron space."""

    active: np.ndarray  # [T, M] bool (M = n_experts * n_neurons for MoE)
    routed: np.ndarray | None  # [T, E] bool: which experts were routed (MoE)


def _layer_activity(codes_l: np.ndarray, experts_l: np.ndarray | None, level: int, n_experts: int) -> _Layer:
    """codes_l [T, K, N] -> activity in the layer's full neuron space."""
    act = codes_l >= (level + 1)
    T, K, N = act.shape
    if experts_l is None:
        return _Layer(act[:, 0, :], None)
    full = np.zeros((T, n_experts, N), bool)
    routed = np.zeros((T, n_experts), bool)
    rows = np.arange(T)
    for k in range(K):
        full[rows, experts_l[:, k]] |= act[:, k]
        routed[rows, experts_l[:, k]] = True
    return _Layer(full.reshape(T, n_experts * N), routed)


def _stream_positions(seq: np.ndarray, phase: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of decode tokens and each one's position among its sequence's decode tokens."""
    idx = np.flatnonzero(phase == PHASE_DECODE)
    pos = np.zeros(len(idx), np.int64)
    if len(idx):
        s = seq[idx]
        new = np.r_[True, s[1:] != s[:-1]]
        starts = np.maximum.accumulate(np.where(new, np.arange(len(idx)), 0))
        pos = np.arange(len(idx)) - starts
    return idx, pos


def _gap_histograms(A: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a decode stream A [T, M] (``pos`` = position within its sequence):

    * gaps[t, g]: number of neurons active at t whose previous activation in the sequence was
      g tokens earlier (g = 1..MAX_GAP-2 exact, MAX_GAP-1 means that many or more; g = 0 means
      not active before in this sequence);
    * n_active[t].

    Only active neurons are touched, so the cost is proportional to the activations.
    """
    T, M = A.shape
    never = -(10**9)
    last = np.full(M, never, np.int64)
    gaps = np.zeros((T, MAX_GAP), np.int64)
    n_active = A.sum(axis=1)
    touched: list[np.ndarray] = []
    for t in range(T):
        if pos[t] == 0 and touched:
            for idx in touched:
                last[idx] = never
            touched = []
        on = np.flatnonzero(A[t])
        g = t - last[on]
        g = np.where(g >= 10**8, 0, np.minimum(g, MAX_GAP - 1))
        gaps[t] = np.bincount(g, minlength=MAX_GAP)[:MAX_GAP]
        last[on] = t
        touched.append(on)
    return gaps, n_active


def _union_sizes(gaps: np.ndarray, n_active: np.ndarray, pos: np.ndarray, ks: tuple[int, ...]) -> dict[int, tuple[float, int]]:
    """Sum over windows of |union of the active sets of k consecutive tokens|, and the window count.

    A neuron counts once per window: at its first activation inside the window, i.e. where its gap
    to the previous activation exceeds its offset from the window start. So
    ``|U(t-k+1..t)| = sum_j n[t-j] - #(active at t-j with gap in 1..k-1-j)``.
    """
    C = np.concatenate([np.zeros((len(gaps), 1), np.int64), np.cumsum(gaps[:, 1:], axis=1)], axis=1)  # C[t, m] = #gap in 1..m
    out = {}
    for k in ks:
        ok = np.flatnonzero(pos >= k - 1)
        if len(ok) == 0:
            continue
        total = np.zeros(len(ok), np.int64)
        for j in range(k):
            tt = ok - j
            total += n_active[tt] - C[tt, k - 1 - j]
        out[k] = (float(total.sum()), len(ok))
    return out


def _coactivation(A: np.ndarray, rng: np.random.Generator, max_neurons: int = 2048) -> dict[str, float]:
    freq = A.mean(axis=0)
    alive = np.flatnonzero(freq > 0)
    if len(alive) < 3:
        return {}
    cols = alive if len(alive) <= max_neurons else np.sort(rng.choice(alive, max_neurons, replace=False))
    X = A[:, cols].astype(np.float32)
    co = X.T @ X  # [m, m] co-activation counts
    diag = np.diag(co).copy()
    cond = co / diag[:, None]  # P(j | i)
    np.fill_diagonal(cond, -1.0)
    friend_all = float(np.median(cond.max(axis=1)))
    order = np.argsort(-freq[cols], kind="stable")
    non_hot = np.sort(order[int(0.2 * len(cols)) :])
    sub = cond[np.ix_(non_hot, non_hot)]
    friend_non_hot = float(np.median(sub.max(axis=1)))
    mask = ~np.eye(len(non_hot), dtype=bool)
    mean_pair = float(sub[mask].mean())
    return {"closest_friend_all": friend_all, "closest_friend_non_hot": friend_non_hot, "mean_pairwise_non_hot": mean_pair}


def compute(trace: Trace, levels: list[int] | None = None, seed: int = 0, layers: list[int] | None = None) -> TraceStats:
    """Compute every statistic of ``trace`` at the given replay levels (default: all)."""
    m = trace.meta
    levels = list(range(len(m.levels))) if levels is None else levels
    seq, phase = trace.seq, trace.phase
    experts = trace.experts
    dec_idx, pos = _stream_positions(seq, phase)
    prompt_idx = np.flatnonzero(phase == PHASE_PROMPT)
    bounds = sequence_bounds(seq[dec_idx]) if len(dec_idx) else []
    seq_ids = sorted(set(seq[dec_idx].tolist()))
    calib_seqs = set(seq_ids[: max(1, len(seq_ids) // 2)])
    calib = np.array([s in calib_seqs for s in seq[dec_idx]], bool)
    evalu = ~calib if (~calib).any() else calib
    layer_ids = list(range(m.n_layers)) if layers is None else layers
    mid = m.n_layers // 2
    stats = TraceStats(
        model=m.model,
        n_tokens=m.n_tokens,
        n_decode=int(len(dec_idx)),
        n_prompt=int(len(prompt_idx)),
        n_sequences=len(m.sequences) or len(set(seq.tolist())),
        levels=[m.levels[i].name for i in levels],
    )
    all_codes = trace.codes()  # [T, L, K, N]
    per_layer_rows = []
    rng = np.random.default_rng(seed)
    for li in levels:
        name = m.levels[li].name
        union_num = np.zeros(len(UNION_K))
        union_den = np.zeros(len(UNION_K))
        indep = {k: [] for k in UNION_INDEP_K}
        above80 = below1 = n_neurons_total = 0
        prompt_active = []
        counts_per_token = []
        expert_windows: dict[int, list[int]] = {}
        for l in layer_ids:
            lay = _layer_activity(all_codes[:, l], None if experts is None else experts[:, l], li, m.n_experts)
            A = lay.active[dec_idx]
            M = A.shape[1]
            # frequencies: per neuron over tokens where its expert was routed
            if lay.routed is not None:
                routed_dec = lay.routed[dec_idx]
                denom = np.repeat(routed_dec.sum(axis=0), m.n_neurons).astype(np.float64)
                neurons_per_token = m.top_k * m.n_neurons
            else:
                denom = np.full(M, float(len(dec_idx)))
                neurons_per_token = M
            counts = A.sum(axis=0).astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                freq = np.where(denom > 0, counts / np.maximum(denom, 1), np.nan)
            n_act = A.sum(axis=1)
            counts_per_token.append(n_act)
            active_share = float(n_act.mean() / neurons_per_token) if len(n_act) else float("nan")
            if lay.routed is not None:
                groups = [(e * m.n_neurons, (e + 1) * m.n_neurons) for e in range(m.n_experts)]
                hot = float(np.nanmean([_hot_share(counts[a:b]) for a, b in groups if counts[a:b].sum() > 0]))
                gini = float(np.nanmean([_gini(freq[a:b]) for a, b in groups if np.isfinite(freq[a:b]).all()]))
            else:
                hot = _hot_share(counts)
                gini = _gini(freq)
            valid = np.isfinite(freq)
            above80 += int((freq[valid] > 0.8).sum())
            below1 += int((freq[valid] < 0.01).sum())
            n_neurons_total += int(valid.sum())
            if len(prompt_idx):
                prompt_active.append(float(lay.active[prompt_idx].sum(axis=1).mean() / neurons_per_token))
            if lay.routed is not None:
                # reuse along each expert's own stream of routed decode tokens
                for e in range(m.n_experts):
                    rows = np.flatnonzero(routed_dec[:, e])
                    if len(rows) < 2:
                        continue
                    Ae = A[rows, e * m.n_neurons : (e + 1) * m.n_neurons]
                    se = seq[dec_idx][rows]
                    pe = np.zeros(len(rows), np.int64)
                    new = np.r_[True, se[1:] != se[:-1]]
                    starts = np.maximum.accumulate(np.where(new, np.arange(len(rows)), 0))
                    pe = np.arange(len(rows)) - starts
                    ge, ne = _gap_histograms(Ae, pe)
                    ce = np.cumsum(ge[:, 1:], axis=1)
                    for k in (1,) + WINDOWS:
                        ok = pe >= k
                        acc_k = expert_windows.setdefault(k, [0, 0])
                        acc_k[0] += int(ce[ok, k - 1].sum())
                        acc_k[1] += int(ne[ok].sum())
            gaps, n_active = _gap_histograms(A, pos)
            # token-to-token reuse
            has_prev = pos >= 1
            inter = gaps[:, 1]
            prev_n = np.r_[0, n_active[:-1]]
            union_prev = n_active + prev_n - inter
            with np.errstate(invalid="ignore", divide="ignore"):
                jac = np.where(has_prev & (union_prev > 0), inter / np.maximum(union_prev, 1), np.nan)
            jaccard = float(np.nanmean(jac)) if has_prev.any() else float("nan")
            reuse = float(inter[has_prev].sum() / max(1, n_active[has_prev].sum())) if has_prev.any() else float("nan")
            row = {
                "level": name,
                "layer": l,
                "sparsity": 1.0 - active_share,
                "hot80": hot,
                "gini": gini,
                "jaccard_prev": jaccard,
                "reuse_prev": reuse,
            }
            cum = np.cumsum(gaps[:, 1:], axis=1)  # cum[:, k-1] = active with gap <= k
            for k in WINDOWS:
                ok = pos >= k
                row[f"window_{k}"] = float(cum[ok, k - 1].sum() / max(1, n_active[ok].sum())) if ok.any() else float("nan")
            # static hot cache: rank on calibration split, evaluate on the other half
            calib_counts = A[calib].sum(axis=0)
            order = np.argsort(-calib_counts, kind="stable")
            eval_counts = A[evalu].sum(axis=0)
            total_eval = max(1, eval_counts.sum())
            for x in STATIC_TOP:
                top = order[: int(round(M * x / 100))]
                row[f"static_top_{x}"] = float(eval_counts[top].sum() / total_eval)
            per_layer_rows.append(row)
            # union over k consecutive tokens
            us = _union_sizes(gaps, n_active, pos, UNION_K)
            for j, k in enumerate(UNION_K):
                if k in us:
                    union_num[j] += us[k][0] / M
                    union_den[j] += us[k][1]
            if l == mid:
                stats.coactivation[name] = _coactivation(A, np.random.default_rng(seed))
            # union over k tokens from different sequences
            if len(bounds) >= 2:
                for k in UNION_INDEP_K:
                    if len(bounds) < k:
                        continue
                    for _ in range(64):
                        pick = rng.choice(len(bounds), k, replace=False)
                        rows = [rng.integers(bounds[p][0], bounds[p][1]) for p in pick]
                        indep[k].append(A[rows].any(axis=0).sum() / M)
        df = pd.DataFrame([r for r in per_layer_rows if r["level"] == name])
        metric_cols = [c for c in df.columns if c not in ("level", "layer")]
        overall = {c: float(df[c].mean()) for c in metric_cols}
        overall["share_above_80"] = above80 / max(1, n_neurons_total)
        overall["share_below_1"] = below1 / max(1, n_neurons_total)
        if prompt_active:
            overall["prompt_active"] = float(np.mean(prompt_active))
        if counts_per_token and len(counts_per_token[0]) > 1:
            per = np.stack(counts_per_token).astype(np.float64)  # [L, T]
            means = per.mean(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                overall["tokens_active_cv"] = float(np.nanmean(per.std(axis=1) / means))
            tot = per.sum(axis=0)
            overall["tokens_active_cv_total"] = float(tot.std() / tot.mean()) if tot.mean() > 0 else float("nan")
            if len(per) > 1:
                with np.errstate(invalid="ignore", divide="ignore"):
                    corr = np.corrcoef(per)
                overall["layer_count_corr"] = float(np.nanmean(corr[np.triu_indices(len(per), 1)]))
        if expert_windows:
            for k, (hits, tot_) in expert_windows.items():
                overall[f"expert_window_{k}"] = hits / max(1, tot_)
        stats.overall[name] = overall
        stats.union[name] = {f"k={k}": float(union_num[j] / max(1, union_den[j])) for j, k in enumerate(UNION_K) if union_den[j] > 0}
        for k, vals in indep.items():
            if vals:
                stats.union[name][f"indep k={k}"] = float(np.mean(vals))
    stats.per_layer = pd.DataFrame(per_layer_rows)
    if experts is not None:
        stats.moe = moe_repetition(experts[dec_idx], pos)
    return stats


def moe_repetition(experts: np.ndarray, pos: np.ndarray) -> dict[str, float]:
    """Expert-assignment repetition between consecutive decode tokens (Mixtral Table 5 columns)."""
    ok = pos >= 1
    if not ok.any():
        return {}
    cur, prev = experts[ok], experts[np.flatnonzero(ok) - 1]
    first = (cur[:, :, 0] == prev[:, :, 0]).mean(axis=0)  # [L]
    overlap = (cur[:, :, :, None] == prev[:, :, None, :]).any(axis=(2, 3)).mean(axis=0)
    L = len(first)
    out = {"first_repeat_mean": float(first.mean()), "pair_overlap_mean": float(overlap.mean())}
    for name, l in (("l0", 0), ("mid", L // 2 - 1 if L > 1 else 0), ("last", L - 1)):
        out[f"first_repeat_{name}"] = float(first[l])
        out[f"pair_overlap_{name}"] = float(overlap[l])
    counts = np.stack([np.bincount(experts[:, l, :].ravel(), minlength=int(experts.max()) + 1) for l in range(L)])
    out["expert_load_max_over_mean"] = float((counts.max(axis=1) / counts.mean(axis=1)).mean())
    return out


# ----------------------------------------------------------------------------- rendering

HEADLINE = [
    ("sparsity", "sparsity (decode)"),
    ("prompt_active", "active share (prompt)"),
    ("hot80", "hot@80 (mean over layers)"),
    ("gini", "Gini of neuron frequency"),
    ("share_above_80", "neurons active >80% of tokens"),
    ("share_below_1", "neurons active <1% of tokens"),
    ("jaccard_prev", "Jaccard(t, t-1)"),
    ("reuse_prev", "reuse from t-1"),
    *[(f"window_{k}", f"windowed reuse k={k}") for k in WINDOWS],
    *[(f"static_top_{x}", f"static top-{x}% cache hit") for x in STATIC_TOP],
    ("tokens_active_cv", "CV of active neurons per token, per layer"),
    ("tokens_active_cv_total", "CV of active neurons per token, all layers"),
    ("layer_count_corr", "correlation of counts between layers"),
    *[(f"expert_window_{k}", f"reuse within expert stream k={k}") for k in (1,) + WINDOWS],
]


def render(stats: TraceStats, reference: dict | None = None) -> str:
    """Human-readable tables; with ``reference`` (level -> metric -> value) a side-by-side."""
    lines = [
        f"{stats.model}: {stats.n_tokens} tokens ({stats.n_decode} decode, {stats.n_prompt} prompt) in {stats.n_sequences} sequences",
        "",
    ]
    levels = list(stats.overall)
    head = f"{'metric':44s}" + "".join(f"{lv:>16s}" for lv in levels)
    lines.append(head)
    lines.append("-" * len(head))

    def cell(lv: str, key: str, value: float | None) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return f"{'-':>16s}"
        ref = (reference or {}).get(lv, {}).get(key)
        if ref is None:
            return f"{value:16.3f}"
        return f"{value:8.3f} ({ref:5.3f})"

    for key, label in HEADLINE:
        if not any(key in stats.overall[lv] for lv in levels):
            continue
        lines.append(f"{label:44s}" + "".join(cell(lv, key, stats.overall[lv].get(key)) for lv in levels))
    ukeys = list(next(iter(stats.union.values()), {}))
    if ukeys:
        lines.append("")
        lines.append("union of active neurons over k tokens (share of the FFN)")
        for uk in ukeys:
            lines.append(f"  {uk:42s}" + "".join(cell(lv, f"union_{uk}", stats.union[lv].get(uk)) for lv in levels))
    if stats.coactivation:
        lines.append("")
        lines.append("co-activation, middle layer")
        for key in ("closest_friend_all", "closest_friend_non_hot", "mean_pairwise_non_hot"):
            lines.append(f"  {key:42s}" + "".join(cell(lv, key, stats.coactivation.get(lv, {}).get(key)) for lv in levels))
    if stats.moe:
        lines.append("")
        lines.append("MoE routing (decode tokens)")
        for k, v in stats.moe.items():
            ref = (reference or {}).get("moe", {}).get(k)
            lines.append(f"  {k:42s}{v:16.3f}" + (f"  ({ref:.3f})" if ref is not None else ""))
    if reference:
        lines.append("")
        lines.append("values in parentheses: reference " + str(reference.get("_source", "")))
    return "\n".join(lines)


def write(stats: TraceStats, out: str | Path) -> list[Path]:
    """Write ``<out>.json`` and ``<out>.csv`` (atomically); returns the paths."""
    from ..atomic import write_text

    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".json", ".csv") else out
    jpath, cpath = stem.with_suffix(".json"), stem.with_suffix(".csv")
    write_text(jpath, json.dumps(stats.to_json(), indent=2, sort_keys=True, allow_nan=True) + "\n")
    write_text(cpath, stats.long_table().to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    return [jpath, cpath]
