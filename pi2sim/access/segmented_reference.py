"""Reference implementation of the segmented-cache access model, in plain numpy.

This is the readable specification of :func:`pi2sim.access.segmented.simulate`, which runs the
same algorithm as a compiled kernel (:mod:`pi2sim.access.kernel`); the tests check that both give
identical arrays. It is 10-30x slower and is not used by runs.

The model is described in :mod:`pi2sim.access.segmented`.
"""

from __future__ import annotations

import numpy as np

from .cache import LRUCache
from .segmented import NeuronAccess, alias_tables, window_warm_units
from .workload import Workload


# counter-based random numbers (see pi2sim.access.kernel), in numpy uint64 arithmetic
_U = np.uint64
RECALL, ROUND, FALSE_POSITIVE = 1, 2, 3


def _splitmix(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.uint64) + _U(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U(30))) * _U(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U(27))) * _U(0x94D049BB133111EB)
    return z ^ (z >> _U(31))


def step_key(seed: int, t: int, l: int, k: int) -> np.ndarray:
    return _splitmix(_splitmix(_splitmix(np.array([seed], np.uint64)) ^ _U(t)) ^ _U(l * 256 + k))


def draws(key: np.ndarray, stream: int, j: np.ndarray) -> np.ndarray:
    return _splitmix(key ^ (_U(stream) << _U(56)) ^ np.asarray(j, dtype=np.uint64))


def uniform(r: np.ndarray) -> np.ndarray:
    return (r >> _U(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def alias_draws(r: np.ndarray, row: np.ndarray, abits: int) -> np.ndarray:
    n = len(row)
    col = ((r >> _U(32)) * _U(n)) >> _U(32)
    full = (_U(1) << _U(abits)) - _U(1)
    entry = row[col.astype(np.int64)].astype(np.uint64)
    thr = entry >> _U(abits)
    keep = (thr == full) | ((r & full) < thr)
    return np.where(keep, col, entry & full).astype(np.int64)


def simulate(w: Workload, freqs: np.ndarray, hot_mask: np.ndarray, cold_capacity: int, recall: float, precision: float,
              seed: int, warm: str, window: int | None) -> NeuronAccess:
    L, E, N = freqs.shape
    T = w.n_tokens
    K = w.model.architecture.top_k if E > 1 else 1
    hot_flat = hot_mask.reshape(-1)
    lru = LRUCache(L * E * N, cold_capacity)
    if warm in ("profile", "window") and cold_capacity > 0:
        # Planner's warm start: the hottest neurons that did not make the hot region, coldest first
        # (warm="window": only as many as the prompt's last window of tokens fired, in expectation)
        flat = freqs.reshape(-1).astype(np.float64)
        order = np.argsort(-np.where(hot_flat, -1.0, flat), kind="stable")
        n = cold_capacity if warm == "profile" else min(cold_capacity, window_warm_units(freqs, hot_flat, window, w.prompt_tokens, K))
        warm_ids = order[: min(n, int((~hot_flat).sum()))]
        lru.preload(warm_ids[::-1])
    # alias tables per (layer, expert) for frequency-weighted false-positive draws
    table, abits, totals = alias_tables(freqs)
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
                key = step_key(seed, t, l, k)
                if recall < 1.0:
                    keep = uniform(draws(key, RECALL, idx)) < recall
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
                n_fp = 0
                if fp_ratio:
                    x = len(idx) * fp_ratio
                    n_fp = int(np.floor(x)) + int(uniform(draws(key, ROUND, 0))[0] < x - np.floor(x))
                if n_fp and totals[l, e] > 0:
                    # m = 3 n_fp + 8 weighted draws (alias method); the false positives are the
                    # first n_fp distinct inactive neurons drawn, in draw order
                    drawn = alias_draws(draws(key, FALSE_POSITIVE, np.arange(3 * n_fp + 8)), table[l, e], abits)
                    _, first = np.unique(drawn, return_index=True)
                    cand = drawn[np.sort(first)]
                    cand = cand[~a[cand]][:n_fp]
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
