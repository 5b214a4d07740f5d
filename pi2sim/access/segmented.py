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

from collections.abc import Sequence
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


@dataclass(frozen=True, eq=False)
class CacheRequest:
    """One segmented-cache simulation as data (what :func:`run` computes), so that a sweep can
    collect its points' requests and run those that share a replay in one pass (:func:`run_many`):
    requests that differ only in their regions (``hot_mask``, ``cold_capacity``), as the points
    of a memory sweep do."""

    workload: Workload
    freqs: np.ndarray
    hot_mask: np.ndarray
    cold_capacity: int
    recall: float = 1.0
    precision: float = 0.8
    seed: int = 0
    warm: str = "profile"
    window: int | None = None

    def replay_key(self) -> str:
        """What the requests of one pass share: everything but the regions."""
        w = self.workload
        return memo.digest("replay", w.trace_path, w.level, w.decode_index, self.freqs, self.recall, self.precision, self.seed,
                           self.warm, self.window)


def run(req: CacheRequest) -> NeuronAccess:
    return simulate(req.workload, req.freqs, req.hot_mask, req.cold_capacity, req.recall, req.precision, req.seed, req.warm, req.window)


def run_many(reqs: Sequence[CacheRequest]) -> list[NeuronAccess]:
    """Every request's result; the requests that share a replay run in one pass (memoised like
    :func:`run`)."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(reqs):
        groups.setdefault(r.replay_key(), []).append(i)
    out: dict[int, NeuronAccess] = {}
    for idxs in groups.values():
        r0 = reqs[idxs[0]]
        got = simulate_many(r0.workload, r0.freqs, [(reqs[i].hot_mask, reqs[i].cold_capacity) for i in idxs], r0.recall, r0.precision,
                            r0.seed, r0.warm, r0.window)
        out.update(zip(idxs, got))
    return [out[i] for i in range(len(reqs))]


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
    return simulate_many(w, freqs, [(hot_mask, cold_capacity)], recall, precision, seed, warm, window)[0]


def simulate_many(
    w: Workload,
    freqs: np.ndarray,
    caches: Sequence[tuple[np.ndarray, int]],
    recall: float = 1.0,
    precision: float = 0.8,
    seed: int = 0,
    warm: str = "profile",
    window: int | None = None,
) -> list[NeuronAccess]:
    """:func:`simulate` for several caches ``(hot_mask, cold_capacity)`` over the same replay
    (the points of a memory sweep), in one pass over the trace: decoding it and drawing the
    predictor's errors, which do not depend on the cache (about two thirds of a run's access
    model), are done once for all of them. Each result is exactly the one :func:`simulate` gives
    for that cache alone, and is memoised under the same key (results already in the memo are not
    recomputed)."""
    keys = [memo.digest("segmented", w.trace_path, w.level, w.decode_index, freqs, m, int(c), recall, precision, seed, warm, window)
            for m, c in caches]
    out: dict[int, NeuronAccess] = {}
    todo: list[int] = []
    for i, k in enumerate(keys):
        hit = memo.ACCESS.peek(k)
        if hit is not None:
            out[i] = hit
            continue
        hit = memo.load_persisted(k, NeuronAccess)
        if hit is None:
            todo.append(i)
        else:
            out[i] = memo.ACCESS.get(k, lambda hit=hit: hit)
    if todo:
        fresh = _simulate_many(w, freqs, [caches[i] for i in todo], recall, precision, seed, warm, window)
        for i, r in zip(todo, fresh):
            memo.store_persisted(keys[i], r, NeuronAccess)
            out[i] = memo.ACCESS.get(keys[i], lambda r=r: r)
    return [out[i] for i in range(len(caches))]


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
    return _simulate_many(w, freqs, [(hot_mask, cold_capacity)], recall, precision, seed, warm, window)[0]


LIST_BUDGET_BYTES = 256e6  # phase-1 lists held at once: longer replays go in segments of tokens
STATE_BUDGET_BYTES = 512e6  # LRU states of caches replayed side by side: more caches, more passes


class _ListsFull(Exception):
    """Phase 1's lists filled up before the end of the replay."""


def _simulate_many(w: Workload, freqs: np.ndarray, caches: Sequence[tuple[np.ndarray, int]], recall: float, precision: float,
                   seed: int, warm: str, window: int | None) -> list[NeuronAccess]:
    """The two-phase replay of :mod:`pi2sim.access.kernel`: phase 1 (trace and predictor) once
    per pass, phase 2 (regions and LRU) per cache.

    The lists phase 1 leaves are bounded by :data:`LIST_BUDGET_BYTES`. When the whole replay's
    lists fit (a 1,024-token Mixtral run needs ~120 MB), one pass makes them and the caches are
    replayed one after the other in one reused set of LRU arrays. Otherwise each pass flushes its
    lists to phase 2 whenever they fill up, so every cache of the pass keeps its own LRU state
    throughout; those states are bounded by :data:`STATE_BUDGET_BYTES` (more caches take more
    passes)."""
    from . import kernel as K

    L, E, N = freqs.shape
    T = w.n_tokens
    moe = E > 1
    top_k = w.model.architecture.top_k if moe else 1
    steps = T * L * top_k
    n_items = L * E * N
    table, abits, totals = alias_tables(freqs)
    fp_ratio = (1.0 / precision - 1.0) if precision < 1.0 else 0.0
    threshold = w.level + 1
    id_dtype = np.uint16 if N <= 1 << 16 else np.uint32
    row_worst = L * top_k * N  # the most list entries one replayed token can add
    cap_ids = int(max(row_worst, min(steps * N, LIST_BUDGET_BYTES / 2 / np.dtype(id_dtype).itemsize)))
    tp_ids, fp_ids = np.empty(cap_ids, id_dtype), np.empty(cap_ids, id_dtype)
    step_t, step_row = np.zeros(max(steps, 1), np.int64), np.zeros(max(steps, 1), np.int64)
    tp_off, fp_off = np.zeros(steps + 1, np.int64), np.zeros(steps + 1, np.int64)
    shared = np.zeros((len(K.COUNTERS), T, L), np.int64)  # phase 1's counters: active, tp, fn, fp
    experts_out = np.zeros((T, L, top_k) if moe else (1, 1, 1), np.uint8)
    idx = np.zeros(N, np.int64)
    cold = np.zeros(N, np.int64)
    hot_flat_of = [np.ascontiguousarray(m.reshape(-1)) for m, _ in caches]
    hot_rows_of = [m.sum(axis=2).astype(np.int64).reshape(-1) for m, _ in caches]

    def predict(flush) -> None:
        """Phase 1 over the whole replay; ``flush(s_begin, s_end, last)`` hands each segment of
        steps to phase 2 (several when the lists fill up)."""
        shared[:] = 0
        seen = np.full(N, -1, np.int64)  # false-positive draws: tag of the last step that drew each neuron
        s = seg = 0
        tp_off[0] = fp_off[0] = 0
        for blk in w.packed_blocks():
            r0 = 0
            while r0 < len(blk.rows):
                done, s = K.predict_block(
                    blk.packed, blk.experts, blk.rows[r0:], blk.positions[r0:], blk.bits, threshold, N, E, moe,
                    table, abits, totals, float(recall), fp_ratio, int(seed),
                    s, step_t, step_row, tp_off, tp_ids, fp_off, fp_ids, shared, experts_out, idx, seen,
                )
                r0 += done
                if r0 < len(blk.rows):  # the lists are full: replay them, then start over
                    flush(seg, s, False)
                    seg, tp_off[s], fp_off[s] = s, 0, 0
        flush(seg, s, True)

    def start(i: int, lru: tuple) -> tuple:
        """Cache ``i``'s warm start in ``lru``."""
        cap = int(caches[i][1])
        if warm == "profile" and cap > 0:
            ids = warm_start_ids(freqs, hot_flat_of[i], cap)[::-1].astype(np.int64)  # least recently used first
            # one LRU step per chunk of ~4096, the reference's chunks (LRUCache.preload)
            sizes = [len(c) for c in np.array_split(ids, max(1, len(ids) // 4096))]
            bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            K.lru_preload(np.ascontiguousarray(ids), bounds, *lru)
        return lru

    def replay(i: int, s_begin: int, s_end: int, lru: tuple, starts: np.ndarray, counters: np.ndarray) -> None:
        K.apply_steps(s_begin, s_end, step_t, step_row, tp_off, tp_ids, fp_off, fp_ids, N, top_k, L * top_k,
                      hot_flat_of[i], hot_rows_of[i], int(window or 0), *lru, starts, counters, cold)

    def result(i: int, lru: tuple, counters: np.ndarray) -> NeuronAccess:
        for c in (K.ACTIVE, K.TP, K.FN, K.FP):
            counters[c] = shared[c]
        state = lru[-1]
        return NeuronAccess(
            **{name: counters[c] for c, name in enumerate(K.COUNTERS)},
            experts=experts_out.copy() if moe else None,
            hot_neurons=int(hot_flat_of[i].sum()),
            cold_capacity=int(caches[i][1]),
            cold_peak=int(state[K.PEAK]),
            cold_insertions=int(state[K.INSERTIONS]),
            cold_evictions=int(state[K.EVICTIONS]),
        )

    def new_counters() -> np.ndarray:
        return np.zeros((len(K.COUNTERS), T, L), np.int64)

    # the whole replay in one segment: the caches one after the other, in one set of LRU arrays
    def one_segment(s_begin: int, s_end: int, last: bool) -> None:
        if not last:
            raise _ListsFull
        arrays = K.new_lru(n_items, max(int(c) for _, c in caches), N)
        for i in range(len(caches)):
            lru = start(i, K.reset_lru(arrays, int(caches[i][1]), N))
            counters = new_counters()
            replay(i, s_begin, s_end, lru, np.zeros(max(T, 1), np.int64), counters)
            results.append(result(i, lru, counters))

    results: list[NeuronAccess] = []
    try:
        predict(one_segment)
        return results
    except _ListsFull:
        results.clear()

    # several segments: each pass keeps the LRU states of a group of caches throughout
    def state_bytes(cap: int) -> int:
        return 4 * n_items + 8 * K.lru_room(cap, N) + 8 * len(K.COUNTERS) * T * L

    first = 0
    while first < len(caches):
        group, used = [], 0
        while first + len(group) < len(caches):
            need = state_bytes(int(caches[first + len(group)][1]))
            if group and used + need > STATE_BUDGET_BYTES:
                break
            group.append(first + len(group))
            used += need
        lrus = [start(i, K.new_lru(n_items, int(caches[i][1]), N)) for i in group]
        counters_of = [new_counters() for _ in group]
        starts_of = [np.zeros(max(T, 1), np.int64) for _ in group]

        def flush(s_begin: int, s_end: int, last: bool, group=group, lrus=lrus, starts_of=starts_of, counters_of=counters_of) -> None:
            for j, i in enumerate(group):
                replay(i, s_begin, s_end, lrus[j], starts_of[j], counters_of[j])

        predict(flush)
        results.extend(result(i, lrus[j], counters_of[j]) for j, i in enumerate(group))
        first += len(group)
    return results
