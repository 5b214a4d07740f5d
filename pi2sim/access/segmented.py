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

import os
import threading
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
                           self.warm, self.window, *(() if w.union_key is None else (w.union_key,)))


def run(req: CacheRequest) -> NeuronAccess:
    return simulate(req.workload, req.freqs, req.hot_mask, req.cold_capacity, req.recall, req.precision, req.seed, req.warm, req.window)


def run_many(reqs: Sequence[CacheRequest], alone: bool = True) -> list[NeuronAccess | None]:
    """Every request's result; the requests that share a replay run in one pass (memoised like
    :func:`run`). ``alone=False`` leaves out (None) a request whose replay no other shares: a
    sweep's prefetch gains nothing from it, and the point's own run computes it."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(reqs):
        groups.setdefault(r.replay_key(), []).append(i)
    out: dict[int, NeuronAccess | None] = dict.fromkeys(range(len(reqs)))
    for idxs in groups.values():
        if len(idxs) == 1 and not alone:
            continue
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

    ``warm``: the cold region at the first decode token. ``profile``: full, with the hottest
    neurons outside the hot region (the planner's preload); ``window``: the same neurons, as many
    as the prompt's last window of tokens used (:func:`window_warm_units`); ``empty``: empty.

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
    union = () if w.union_key is None else (w.union_key,)  # a union of sequences replays other activity
    keys = [memo.digest("segmented", w.trace_path, w.level, w.decode_index, freqs, m, int(c), recall, precision, seed, warm, window, *union)
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


def window_warm_units(freqs: np.ndarray, hot_flat: np.ndarray, window: int | None, prompt_tokens: int, top_k: int) -> int:
    """How many neurons a sliding-window buffer holds when decoding starts (``warm="window"``):
    the expected union of what the prompt's last ``min(prompt, window)`` tokens fired, each
    neuron independently at its profile frequency, ``sum(1 - (1 - f) ** r)`` over the neurons
    outside the hot region, with ``r`` those tokens' routings of its expert (``tokens * top_k /
    experts`` on a mixture of experts; ``freqs`` are frequencies within an expert). The prefill
    computes every neuron, but the window keeps only those its tokens were predicted to use, so
    the buffer starts about as full as in steady state, not full to capacity (on Mixtral at 19 GB
    the formula gives 1.09M neurons for a 48-token window; the replay's steady state holds 1.11M)."""
    if window is None:
        return int(hot_flat.size)
    E = freqs.shape[1]
    routings = min(int(prompt_tokens), int(window)) * (top_k / E if E > 1 else 1.0)
    f = np.asarray(freqs, dtype=np.float64).reshape(-1)[~hot_flat]
    return int(round(float(np.sum(1.0 - (1.0 - f) ** routings))))


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


LIST_BUDGET_BYTES = 256e6  # phase-1 lists kept for the caches of a sweep (beyond: streamed, caches side by side)
STATE_BUDGET_BYTES = 512e6  # LRU states of caches replayed side by side (more caches: more passes)
MAX_THREADS = 8


def threads() -> int:
    """Threads of the access model (the CPUs this process may use, at most :data:`MAX_THREADS`)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, n))


@dataclass
class _Lists:
    """Phase 1's output for one block of the replay: steps ``s_begin`` to ``s_end`` and their
    lists, with offsets from ``s_begin`` (see :func:`pi2sim.access.kernel.predict_block`)."""

    s_begin: int
    s_end: int
    tp_off: np.ndarray
    tp_ids: np.ndarray
    fp_off: np.ndarray
    fp_ids: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.tp_off.nbytes + self.tp_ids.nbytes + self.fp_off.nbytes + self.fp_ids.nbytes


class _ListsTooLarge(Exception):
    """The whole replay's lists would exceed :data:`LIST_BUDGET_BYTES`."""


def _simulate_many(w: Workload, freqs: np.ndarray, caches: Sequence[tuple[np.ndarray, int]], recall: float, precision: float,
                   seed: int, warm: str, window: int | None) -> list[NeuronAccess]:
    """The two-phase replay of :mod:`pi2sim.access.kernel`, on :func:`threads` threads.

    Phase 1 (trace and predictor) runs once, block by block, the blocks in parallel (they are
    independent). Phase 2 (regions and LRU) runs per cache, in order of the blocks:

    * one cache (a single run): on this thread, each block as soon as phase 1 has it (the two
      phases overlap);
    * several caches whose lists fit :data:`LIST_BUDGET_BYTES` (a 128-token Mixtral sweep needs
      ~15 MB, a 1,024-token one ~120 MB): once phase 1 is done, the caches in parallel, each
      thread reusing one set of LRU arrays for cache after cache;
    * otherwise: the lists streamed, the caches of a group side by side (their LRU states within
      :data:`STATE_BUDGET_BYTES`; more caches, more passes of phase 1).

    Every cache's counts are those of its own sequential replay: its steps are applied in order,
    and phase 1 draws nothing that depends on scheduling."""
    from concurrent.futures import ThreadPoolExecutor

    from . import kernel as K

    L, E, N = freqs.shape
    T = w.n_tokens
    moe = E > 1
    top_k = w.model.architecture.top_k if moe else 1
    n_items = L * E * N
    table, abits, totals = alias_tables(freqs)
    fp_ratio = (1.0 / precision - 1.0) if precision < 1.0 else 0.0
    threshold = w.level + 1
    id_dtype = np.uint16 if N <= 1 << 16 else np.uint32
    steps_per_token = L * top_k
    step_t, step_row = np.zeros(max(T * steps_per_token, 1), np.int64), np.zeros(max(T * steps_per_token, 1), np.int64)
    shared = np.zeros((len(K.COUNTERS), T, L), np.int64)  # phase 1's counters: active, tp, fn, fp
    experts_out = np.zeros((T, L, top_k) if moe else (1, 1, 1), np.uint8)
    hot_flat_of = [np.ascontiguousarray(m.reshape(-1)) for m, _ in caches]
    hot_rows_of = [m.sum(axis=2).astype(np.int64).reshape(-1) for m, _ in caches]
    chunks = w.replay_chunks()
    first_step = np.concatenate([[0], np.cumsum([len(rows) for _, rows, _ in chunks])]) * steps_per_token
    local = threading.local()  # per thread: phase 1's scratch (idx, seen, list buffers), phase 2's LRU arrays

    def phase1(b: int) -> _Lists:
        chunk, rows, positions = chunks[b]
        blk = w.replay_block(chunk, rows, positions)
        worst = len(rows) * steps_per_token * N  # every neuron of every step: the lists always fit
        if getattr(local, "tp", None) is None or len(local.tp) < worst:
            local.tp, local.fp = np.empty(worst, id_dtype), np.empty(worst, id_dtype)
            local.idx, local.seen = np.zeros(N, np.int64), np.empty(N, np.int64)
        local.seen.fill(-1)  # draw tags are step indices: unique within a pass, not across passes
        n_steps = len(rows) * steps_per_token
        tp_off, fp_off = np.zeros(n_steps + 1, np.int64), np.zeros(n_steps + 1, np.int64)
        s0 = int(first_step[b])
        done, s = K.predict_block(
            blk.packed, blk.experts, rows, positions, blk.bits, threshold, N, E, moe, table, abits, totals, float(recall), fp_ratio,
            int(seed), s0, step_t, step_row, tp_off, local.tp, fp_off, local.fp, shared, experts_out, local.idx, local.seen,
        )
        assert done == len(rows) and s == s0 + n_steps
        return _Lists(s0, s, tp_off, local.tp[: tp_off[-1]].copy(), fp_off, local.fp[: fp_off[-1]].copy())

    def lru_for(i: int, lru: tuple) -> tuple:
        """Cache ``i``'s LRU, warm-started, in ``lru``'s arrays."""
        cap = int(caches[i][1])
        lru = K.reset_lru(lru, cap, N)
        if warm in ("profile", "window") and cap > 0:
            n = cap if warm == "profile" else min(cap, window_warm_units(freqs, hot_flat_of[i], window, w.prompt_tokens, top_k))
            ids = warm_start_ids(freqs, hot_flat_of[i], n)[::-1].astype(np.int64)  # least recently used first
            # one LRU step per chunk of ~4096, the reference's chunks (LRUCache.preload)
            sizes = [len(c) for c in np.array_split(ids, max(1, len(ids) // 4096))]
            bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            K.lru_preload(np.ascontiguousarray(ids), bounds, *lru)
        return lru

    class _Replay:  # one cache's phase 2 in progress
        def __init__(self, i: int, lru: tuple):
            self.i, self.lru = i, lru_for(i, lru)
            self.counters = np.zeros((len(K.COUNTERS), T, L), np.int64)
            self.starts = np.zeros(max(T, 1), np.int64)
            self.cold = np.zeros(N, np.int64)

        def apply(self, x: _Lists) -> None:
            K.apply_steps(x.s_begin, x.s_end, step_t, step_row, x.tp_off, x.tp_ids, x.fp_off, x.fp_ids, N, top_k, steps_per_token,
                          hot_flat_of[self.i], hot_rows_of[self.i], int(window or 0), *self.lru, self.starts, self.counters, self.cold)

        def result(self) -> NeuronAccess:
            c = self.counters
            for k in (K.ACTIVE, K.TP, K.FN, K.FP):
                c[k] = shared[k]
            state = self.lru[-1]
            return NeuronAccess(
                **{name: c[k] for k, name in enumerate(K.COUNTERS)},
                experts=experts_out.copy() if moe else None,
                hot_neurons=int(hot_flat_of[self.i].sum()),
                cold_capacity=int(caches[self.i][1]),
                cold_peak=int(state[K.PEAK]),
                cold_insertions=int(state[K.INSERTIONS]),
                cold_evictions=int(state[K.EVICTIONS]),
            )

    def own_lru(cap: int) -> tuple:
        """This thread's LRU arrays, big enough for ``cap``."""
        if getattr(local, "lru", None) is None or K.lru_room(cap, N) > len(local.lru[1]):
            local.lru = K.new_lru(n_items, cap, N)
        return local.lru

    def in_order(pool, budget: float | None = None):
        """Phase 1's blocks in order, computed ahead on the pool (a few blocks per thread);
        raises :class:`_ListsTooLarge` once the lists handed out exceed ``budget``."""
        ahead = 2 * n_threads
        futs = [pool.submit(phase1, b) for b in range(min(ahead, len(chunks)))]
        held = 0
        for b in range(len(chunks)):
            x = futs[b].result()
            futs[b] = None
            if b + ahead < len(chunks):
                futs.append(pool.submit(phase1, b + ahead))
            held += x.nbytes
            if budget is not None and held > budget:
                for f in futs[b + 1 :]:  # no block still running when the caller starts over
                    if f is not None and not f.cancel():
                        f.result()
                raise _ListsTooLarge
            yield x

    n_threads = threads()
    with ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="pi2sim-access") as pool:
        if len(caches) == 1:
            r = _Replay(0, K.new_lru(n_items, int(caches[0][1]), N))
            for x in in_order(pool):
                r.apply(x)
            return [r.result()]
        try:
            lists = list(in_order(pool, LIST_BUDGET_BYTES))
        except _ListsTooLarge:
            lists = None
        if lists is not None:
            def one_cache(i: int) -> NeuronAccess:
                r = _Replay(i, own_lru(int(caches[i][1])))
                for x in lists:
                    r.apply(x)
                return r.result()

            return list(pool.map(one_cache, range(len(caches))))
        # the lists streamed: a group of caches side by side, block by block
        results: list[NeuronAccess] = []
        first = 0
        while first < len(caches):
            group, used = [], 0
            while first + len(group) < len(caches):
                need = 4 * n_items + 8 * K.lru_room(int(caches[first + len(group)][1]), N) + 8 * len(K.COUNTERS) * T * L
                if group and used + need > STATE_BUDGET_BYTES:
                    break
                group.append(first + len(group))
                used += need
            replays = [_Replay(i, K.new_lru(n_items, int(caches[i][1]), N)) for i in group]
            shared[:] = 0
            for x in in_order(pool):
                list(pool.map(lambda r, x=x: r.apply(x), replays))
            results.extend(r.result() for r in replays)
            first += len(group)
        return results
