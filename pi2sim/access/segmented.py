"""Access model of PowerInfer-2's segmented neuron cache (no clock, trace-driven).

For every replayed token and layer:

1. **Predictor.** The neurons the trace marks active are predicted with probability ``recall``
   (a missed neuron costs accuracy, not time, so it is simply not computed); false positives
   are added so that ``precision`` of the predicted set is truly active. False positives are drawn
   among the layer's (routed experts') inactive neurons with probability proportional to their
   profiled frequency (the first ``n_fp`` distinct inactive neurons among ``3 n_fp + 8`` weighted
   draws): predictors err on neurons that often fire. Their Gate output is zero, so
   with two-phase loading they cost a Gate read only (PowerInfer-2 v3 §4.4: in ~20% of cases the
   bundled parts are not co-activated; precision 0.8 reproduces that).
2. **Regions.** The *fixed* region (attention, embeddings, KV, ...) is always resident. The *hot*
   region holds the neurons the offline profile ranks hottest (chosen by the policy); at batch 1
   the hot set does not change, so its per-cluster LRU never evicts. The *cold* region is an LRU
   over individual neurons (v3 §4.2). A neuron is cached whole (its Gate/Up/Down bundle).
3. **Misses.** A truly active neuron found in neither region is read from flash and enters the
   cold LRU; a false positive that misses costs its Gate read but is not kept.

The result is counts per ``[token, layer]``; the policy turns them into bytes and requests.

The work is done by a compiled kernel (:mod:`pi2sim.access.kernel`) that reads the trace's packed
codes block by block; :mod:`pi2sim.access.segmented_reference` is the same algorithm in plain
numpy, the specification the kernel is tested against (identical arrays).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import memo
from .workload import Workload, hottest_first


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

    Memoised on all of its inputs, in-process and on disk (:mod:`pi2sim.access.memo`); the result is read-only."""
    key = memo.digest("segmented", w.trace_path, w.level, w.decode_index, freqs, hot_mask, cold_capacity, recall, precision, seed, warm, window)
    return memo.ACCESS.get(key, lambda: memo.persisted(key, lambda: _simulate(w, freqs, hot_mask, cold_capacity, recall, precision, seed, warm, window), NeuronAccess))


def warm_start_ids(freqs: np.ndarray, hot_flat: np.ndarray, capacity: int) -> np.ndarray:
    """The planner's warm start of the cold region: the hottest neurons that did not make the hot
    region, hottest first (the profile's stable order with the hot region taken out)."""
    order = hottest_first(freqs)
    # only the first ``capacity`` non-hot neurons are needed: scan the order in chunks and stop
    # (the segmented cache's hot region is a prefix of the order, so this reads hot + capacity)
    out, need, chunk = [], capacity, 1 << 18
    for start in range(0, len(order), chunk):
        sel = order[start : start + chunk]
        sel = sel[~hot_flat[sel]][:need]
        out.append(sel)
        need -= len(sel)
        if need <= 0:
            break
    return np.concatenate(out) if out else order[:0]


def alias_tables(freqs: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Walker/Vose alias tables of each (layer, expert)'s firing frequencies, for the predictor's
    frequency-weighted false-positive draws in O(1) each: ``(table [L, E, N], abits, totals [L, E])``.
    An entry packs ``threshold << abits | alias`` (threshold in ``abits`` bits of fixed point, so
    a column's probability is exact to 2**-abits); 64 random bits draw column
    ``((r >> 32) * N) >> 32``, kept if ``r``'s low ``abits`` bits are below its threshold, else
    its alias. Memoised on the profile; read-only."""
    from . import kernel as K

    def build():
        L, E, N = freqs.shape
        abits = K.alias_bits(N)
        f = np.ascontiguousarray(freqs, dtype=np.float64)
        totals = f.sum(axis=2)
        table = np.zeros((L, E, N), np.uint32 if abits == 16 else np.uint64)
        K.build_alias(f, totals, table, abits)
        return table, abits, totals

    return memo.PROFILES.get(memo.digest("alias", freqs), build)


def _simulate(w: Workload, freqs: np.ndarray, hot_mask: np.ndarray, cold_capacity: int, recall: float, precision: float,
              seed: int, warm: str, window: int | None) -> NeuronAccess:
    from . import kernel as K

    L, E, N = freqs.shape
    T = w.n_tokens
    top_k = w.model.architecture.top_k if E > 1 else 1
    hot_flat = np.ascontiguousarray(hot_mask.reshape(-1))
    resident, stamp, q_item, q_step, state = K.new_lru(L * E * N, cold_capacity, N)
    if warm == "profile" and cold_capacity > 0:
        ids = warm_start_ids(freqs, hot_flat, cold_capacity)[::-1].astype(np.int64)  # least recently used first
        # one LRU step per chunk of ~4096, the reference's chunks (LRUCache.preload)
        sizes = [len(c) for c in np.array_split(ids, max(1, len(ids) // 4096))]
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        K.lru_preload(np.ascontiguousarray(ids), bounds, resident, stamp, q_item, q_step, state)
    table, abits, totals = alias_tables(freqs)
    hot_per_expert = hot_mask.sum(axis=2).astype(np.int64)  # [L, E]
    fp_ratio = (1.0 / precision - 1.0) if precision < 1.0 else 0.0
    counters = np.zeros((len(K.COUNTERS), T, L), np.int64)
    experts_out = np.zeros((T, L, top_k) if E > 1 else (1, 1, 1), np.uint8)
    token_start = np.zeros(max(T, 1), np.int64)
    idx = np.zeros(N, np.int64)
    cold = np.zeros(N, np.int64)
    seen = np.full(N, -1, np.int64)  # false-positive draws: tag of the last step that drew each neuron
    threshold = w.level + 1
    for blk in w.packed_blocks():
        K.run_block(
            blk.packed, blk.experts, blk.rows, blk.positions, blk.bits, threshold, N, E, E > 1,
            hot_flat, hot_per_expert, table, abits, totals, float(recall), fp_ratio, int(window or 0), int(seed),
            resident, stamp, q_item, q_step, state, token_start, counters, experts_out, idx, cold, seen,
        )
    fields = {name: counters[i] for i, name in enumerate(K.COUNTERS)}
    return NeuronAccess(
        **fields,
        experts=experts_out if E > 1 else None,
        hot_neurons=int(hot_flat.sum()),
        cold_capacity=int(cold_capacity),
        cold_peak=int(state[K.PEAK]),
        cold_insertions=int(state[K.INSERTIONS]),
        cold_evictions=int(state[K.EVICTIONS]),
    )
