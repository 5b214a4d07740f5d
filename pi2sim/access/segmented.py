"""Access model of PowerInfer-2's segmented neuron cache (no clock, trace-driven).

For every replayed token and layer:

1. **Predictor.** The neurons the trace marks active are predicted with probability ``recall``
   (a missed neuron costs accuracy, not time, so it is simply not computed); false positives
   are added so that ``precision`` of the predicted set is truly active. False positives are drawn
   among the layer's (routed experts') inactive neurons with probability proportional to their
   profiled frequency: predictors err on neurons that often fire. Their Gate output is zero, so
   with two-phase loading they cost a Gate read only (PowerInfer-2 v3 §4.4: in ~20% of cases the
   bundled parts are not co-activated; precision 0.8 reproduces that).
2. **Regions.** The *fixed* region (attention, embeddings, KV, ...) is always resident. The *hot*
   region holds the neurons the offline profile ranks hottest (chosen by the policy); at batch 1
   the hot set does not change, so its per-cluster LRU never evicts. The *cold* region is an LRU
   over individual neurons (v3 §4.2). A neuron is cached whole (its Gate/Up/Down bundle).
3. **Misses.** A truly active neuron found in neither region is read from flash and enters the
   cold LRU; a false positive that misses costs its Gate read but is not kept.

The result is counts per ``[token, layer]``; the policy turns them into bytes and requests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import memo
from .cache import LRUCache
from .workload import Workload


@dataclass
class NeuronAccess:
    active: np.ndarray  # [T, L] neurons the trace marks active (routed experts)
    tp: np.ndarray  # predicted and active (computed fully)
    fp: np.ndarray  # predicted, inactive (Gate computed, output zero)
    fn: np.ndarray  # active, not predicted (skipped)
    tp_hot: np.ndarray
    tp_cold_hit: np.ndarray
    tp_miss: np.ndarray
    fp_hot: np.ndarray
    fp_cold_hit: np.ndarray
    fp_miss: np.ndarray
    routed_hot: np.ndarray  # [T, L] hot-region neurons in the routed experts (dense NPU rows)
    evicted: np.ndarray  # [T, L] neurons that left the cold region (capacity or window)
    cold_size: np.ndarray  # [T, L] neurons in the cold region after the layer
    experts: np.ndarray | None  # [T, L, K]
    hot_neurons: int
    cold_capacity: int
    cold_peak: int
    cold_insertions: int
    cold_evictions: int

    @property
    def hit_rate(self) -> float:
        """Share of activated, predicted neurons served from DRAM (hot or cold region)."""
        tp = self.tp.sum()
        return float(1.0 - self.tp_miss.sum() / tp) if tp else 1.0


def _stochastic_round(x: float, rng: np.random.Generator) -> int:
    base = int(np.floor(x))
    return base + int(rng.random() < (x - base))


def simulate(
    w: Workload,
    freqs: np.ndarray,
    hot_mask: np.ndarray,
    cold_capacity: int,
    recall: float = 1.0,
    precision: float = 0.8,
    seed: int = 0,
    warm: str = "profile",
    window: int | None = None,
) -> NeuronAccess:
    """Run the segmented cache over the workload. ``freqs``/``hot_mask`` are [L, E, N].

    ``window``: neurons also leave the cold region once unused for that many tokens (LLM in a
    Flash's sliding window); evictions per token and layer are recorded for memory management.

    Memoised in-process on all of its inputs (:mod:`pi2sim.access.memo`); the result is read-only."""
    key = memo.digest("segmented", w.trace_path, w.level, w.decode_index, freqs, hot_mask, cold_capacity, recall, precision, seed, warm, window)
    return memo.ACCESS.get(key, lambda: _simulate(w, freqs, hot_mask, cold_capacity, recall, precision, seed, warm, window))


def _simulate(w: Workload, freqs: np.ndarray, hot_mask: np.ndarray, cold_capacity: int, recall: float, precision: float,
              seed: int, warm: str, window: int | None) -> NeuronAccess:
    L, E, N = freqs.shape
    T = w.n_tokens
    K = w.model.architecture.top_k if E > 1 else 1
    hot_flat = hot_mask.reshape(-1)
    lru = LRUCache(L * E * N, cold_capacity)
    if warm == "profile" and cold_capacity > 0:
        # Planner's warm start: the hottest neurons that did not make the hot region, coldest first
        flat = freqs.reshape(-1).astype(np.float64)
        order = np.argsort(-np.where(hot_flat, -1.0, flat), kind="stable")
        warm_ids = order[: min(cold_capacity, int((~hot_flat).sum()))]
        lru.preload(warm_ids[::-1])
    rng = np.random.default_rng([seed, 7])
    # cumulative frequency per (layer, expert) for false-positive draws
    cum = np.cumsum(freqs.astype(np.float64), axis=2)
    totals = cum[:, :, -1]
    fields = {k: np.zeros((T, L), np.int64) for k in ("active", "tp", "fp", "fn", "tp_hot", "tp_cold_hit", "tp_miss", "fp_hot", "fp_cold_hit", "fp_miss", "routed_hot")}
    hot_per_expert = hot_mask.sum(axis=2)  # [L, E]
    experts_out = np.zeros((T, L, K), np.uint8) if E > 1 else None
    fp_ratio = (1.0 / precision - 1.0) if precision < 1.0 else 0.0
    peak = lru.size
    evicted = np.zeros((T, L), np.int64)
    cold_size = np.zeros((T, L), np.int64)
    token_start: list[int] = []
    for t, act, ex in w.steps():
        token_start.append(lru.step + 1)
        if window is not None and t >= window:
            evicted[t, 0] += lru.expire(token_start[t - window])
        if experts_out is not None:
            experts_out[t] = ex
        for l in range(L):
            experts_l = ex[l] if ex is not None else (0,)
            for k, e in enumerate(experts_l):
                e = int(e)
                base = (l * E + e) * N
                a = act[l, k] if act.shape[1] > k else act[l, 0]
                idx = np.flatnonzero(a)
                fields["active"][t, l] += len(idx)
                fields["routed_hot"][t, l] += int(hot_per_expert[l, e])
                if recall < 1.0:
                    keep = rng.random(len(idx)) < recall
                    fields["fn"][t, l] += int((~keep).sum())
                    idx = idx[keep]
                gids = base + idx
                hot = hot_flat[gids]
                fields["tp"][t, l] += len(gids)
                fields["tp_hot"][t, l] += int(hot.sum())
                cold = gids[~hot]
                ev0 = lru.evictions
                hit, missed = lru.access(cold)
                evicted[t, l] += lru.evictions - ev0
                fields["tp_cold_hit"][t, l] += int(hit.sum())
                fields["tp_miss"][t, l] += len(missed)
                n_fp = _stochastic_round(len(idx) * fp_ratio, rng) if fp_ratio else 0
                if n_fp and totals[l, e] > 0:
                    # sorted draws: the search walks the table once and duplicates sit side by side
                    u = np.sort(rng.random(3 * n_fp + 8)) * totals[l, e]
                    r = np.searchsorted(cum[l, e], u, side="right")
                    np.minimum(r, N - 1, out=r)
                    first = np.ones(len(r), bool)
                    np.not_equal(r[1:], r[:-1], out=first[1:])
                    cand = r[first]
                    cand = cand[~a[cand]]
                    if len(cand) > n_fp:
                        cand = rng.permutation(cand)[:n_fp]
                    fg = base + cand
                    fhot = hot_flat[fg]
                    fields["fp"][t, l] += len(fg)
                    fields["fp_hot"][t, l] += int(fhot.sum())
                    fhit, fmiss = lru.access(fg[~fhot], insert=False)
                    fields["fp_cold_hit"][t, l] += int(fhit.sum())
                    fields["fp_miss"][t, l] += len(fmiss)
            peak = max(peak, lru.size)
            cold_size[t, l] = lru.size
    return NeuronAccess(
        **fields,
        evicted=evicted,
        cold_size=cold_size,
        experts=experts_out,
        hot_neurons=int(hot_flat.sum()),
        cold_capacity=int(cold_capacity),
        cold_peak=int(peak),
        cold_insertions=lru.insertions,
        cold_evictions=lru.evictions,
    )
