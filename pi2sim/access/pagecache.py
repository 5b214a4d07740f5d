"""OS page cache for memory-mapped weights (llama.cpp's default load mode).

The model file is mapped; the kernel decides what stays in DRAM. Every token touches every
weight once, always in the same order (embedding row, then per layer the attention tensors and
the FFN tensors, then the LM head); for a mixture-of-experts model only the routed experts'
slices of the expert tensors. When the model is larger than the memory left for the page cache,
plain LRU turns this fixed cyclic order into *sequential flooding*: the end of the file evicts
the beginning, and nearly every weight is re-read on every token (llama.cpp PR #711 discussion).
Linux's two-list replacement (pages accessed twice are promoted to an *active* list that is not
evicted directly) protects weights that are reused irregularly (the routed experts of an MoE
model) but cannot help a strictly cyclic dense scan, where nothing is reused before eviction.

Granularity: the readahead window. A fault reads one window of consecutive pages; for whole
tensors read in order, the pages of a window are loaded, used and evicted together, so caching
windows instead of 4 KB pages changes nothing and is 32x cheaper.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .cache import LRUCache


class TwoListCache:
    """Linux-style active/inactive replacement over item ids (vectorised per step).

    A miss enters the inactive list; a hit on an inactive item promotes it to the active list;
    the active list may hold at most ``active_share`` of the capacity (its oldest items are
    demoted to the inactive list); evictions take the oldest inactive items.

    Workingset refault detection (Linux mm/workingset.c, since 3.15): an evicted item that is
    faulted in again within a *refault distance* (evictions in between) no larger than the active
    list would have stayed resident with a smaller active list, so it is activated directly. This
    protects items that were reused recently against a one-off scan.

    For a strictly cyclic scan larger than the cache nothing is ever hit twice, the active list
    stays empty and both policies flood (llama.cpp on a dense model that does not fit); two-list
    helps when reuse is irregular, e.g. MoE experts that the router picks again and again.
    """

    def __init__(self, n_items: int, capacity: int, active_share: float = 0.5):
        self.capacity = int(capacity)
        self.active_cap = int(capacity * active_share)
        self.state = np.zeros(n_items, np.int8)  # 0 absent, 1 inactive, 2 active
        self.stamp = np.full(n_items, -1, np.int64)
        self.step = 0
        self.q = {1: deque(), 2: deque()}
        self.size = {1: 0, 2: 0}
        self.evictions = 0
        self.evicted_at = np.full(n_items, -1, np.int64)  # eviction counter when last evicted

    def _push(self, lst: int, ids: np.ndarray) -> None:
        self.stamp[ids] = self.step
        self.q[lst].append((self.step, ids))

    def _pop_oldest(self, lst: int, count: int) -> np.ndarray:
        out = []
        q = self.q[lst]
        while count > 0 and q:
            step, batch = q[0]
            live = batch[(self.stamp[batch] == step) & (self.state[batch] == lst)]
            if len(live) <= count:
                q.popleft()
                out.append(live)
                count -= len(live)
            else:
                out.append(live[:count])
                q[0] = (step, live[count:])
                count = 0
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def access(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(ids, dtype=np.int64)
        st = self.state[ids]
        hit = st > 0
        missed = ids[~hit]
        if self.capacity == 0:
            return hit, missed
        self.step += 1
        promote = ids[st == 1]
        again = ids[st == 2]
        if len(promote):
            self.state[promote] = 2
            self.size[1] -= len(promote)
            self.size[2] += len(promote)
        touched_active = np.concatenate([again, promote]) if len(promote) else again
        if len(touched_active):
            self._push(2, touched_active)
        if len(missed):
            ev_at = self.evicted_at[missed]
            # Linux compares the refault distance with the current size of the active list
            refault = (ev_at >= 0) & (self.evictions - ev_at <= self.size[2])
            to_active, to_inactive = missed[refault], missed[~refault]
            if len(to_inactive):
                self.state[to_inactive] = 1
                self.size[1] += len(to_inactive)
                self._push(1, to_inactive)
            if len(to_active):
                self.state[to_active] = 2
                self.size[2] += len(to_active)
                self._push(2, to_active)
        # keep the active list within its share: demote its oldest items to the inactive list
        over = self.size[2] - self.active_cap
        if over > 0:
            dem = self._pop_oldest(2, over)
            self.state[dem] = 1
            self.size[2] -= len(dem)
            self.size[1] += len(dem)
            self.step += 1
            self._push(1, dem)
        excess = self.size[1] + self.size[2] - self.capacity
        if excess > 0:
            ev = self._pop_oldest(1, excess)
            self.state[ev] = 0
            self.size[1] -= len(ev)
            self.evicted_at[ev] = self.evictions + np.arange(len(ev))
            self.evictions += len(ev)
            excess -= len(ev)
            if excess > 0:  # the inactive list ran dry: evict from the active list
                ev2 = self._pop_oldest(2, excess)
                self.state[ev2] = 0
                self.size[2] -= len(ev2)
                self.evicted_at[ev2] = self.evictions + np.arange(len(ev2))
                self.evictions += len(ev2)
        return hit, missed

    @property
    def resident(self) -> np.ndarray:
        return self.state > 0


@dataclass
class FileLayout:
    """Blocks (readahead windows) of each tensor group in the model file, in file order."""

    block_bytes: float
    n_blocks: int
    embedding: tuple[int, int]
    attention: list[tuple[int, int]]  # per layer [start, stop)
    ffn: list[list[tuple[int, int]]]  # per layer, per expert [start, stop) covering gate+up+down of that expert
    lm_head: tuple[int, int]

    def total_bytes(self) -> float:
        return self.n_blocks * self.block_bytes


def layout_for(sizes, block_bytes: float) -> FileLayout:
    """GGUF-like order: token embedding, per layer attention then FFN (per expert), LM head."""
    a = sizes.arch
    bpw = sizes.bpw
    pos = 0

    def take(nbytes: float) -> tuple[int, int]:
        nonlocal pos
        n = max(1, int(np.ceil(nbytes / block_bytes)))
        r = (pos, pos + n)
        pos += n
        return r

    emb = take(sizes.embeddings())
    attn, ffn = [], []
    expert_bytes = a.ffn_neurons * a.matrices_per_neuron * a.hidden * bpw
    for _ in range(a.layers):
        attn.append(take(sizes.attention_per_layer() + sizes.router_per_layer() + 2 * a.hidden * 4))
        ffn.append([take(expert_bytes) for _ in range(a.experts)])
    head = take(sizes.lm_head_storage()) if sizes.lm_head_storage() > 0 else emb
    return FileLayout(block_bytes, pos, emb, attn, ffn, head)


@dataclass
class PageAccess:
    attn_miss: np.ndarray  # [T, L] missing blocks (faults) per attention group
    ffn_miss: np.ndarray  # [T, L]
    head_miss: np.ndarray  # [T]
    attn_blocks: np.ndarray  # [L] blocks touched
    ffn_blocks: np.ndarray  # [T, L] blocks touched (routed experts)
    head_blocks: int
    capacity_blocks: int
    total_blocks: int
    prefill_miss: int  # blocks the prompt had to fault in
    peak_blocks: int
    evictions: int

    @property
    def hit_rate(self) -> float:
        touched = self.attn_blocks.sum() * self.attn_miss.shape[0] + self.ffn_blocks.sum() + self.head_blocks * len(self.head_miss)
        missed = self.attn_miss.sum() + self.ffn_miss.sum() + self.head_miss.sum()
        return float(1.0 - missed / max(1, touched))


def simulate(layout: FileLayout, capacity_blocks: int, experts: np.ndarray | None, n_tokens: int, replacement: str = "lru") -> PageAccess:
    """Replay the prompt pass and ``n_tokens`` decode tokens over the mapped file.

    ``experts`` [T, L, K] selects the expert slices touched by MoE layers (None: dense).
    Memoised in-process on all of its inputs, like the segmented cache (:mod:`pi2sim.access.memo`).
    """
    from . import memo

    key = memo.digest("pagecache", repr(layout), capacity_blocks, experts if experts is not None else "dense", n_tokens, replacement)
    return memo.ACCESS.get(key, lambda: memo.persisted(key, lambda: _simulate(layout, capacity_blocks, experts, n_tokens, replacement), PageAccess))


def _simulate(layout: FileLayout, capacity_blocks: int, experts: np.ndarray | None, n_tokens: int, replacement: str) -> PageAccess:
    n = layout.n_blocks
    cache = LRUCache(n, capacity_blocks) if replacement == "lru" else TwoListCache(n, capacity_blocks)
    L = len(layout.attention)
    rng_blocks = lambda r: np.arange(r[0], r[1], dtype=np.int64)  # noqa: E731
    attn_ids = [rng_blocks(r) for r in layout.attention]
    ffn_ids = [[rng_blocks(r) for r in experts_l] for experts_l in layout.ffn]
    head_ids = rng_blocks(layout.lm_head)
    # the prompt pass touches every weight once (prefill is dense: all experts are used)
    prefill_miss = 0
    _, m = cache.access(rng_blocks(layout.embedding))
    prefill_miss += len(m)
    for l in range(L):
        _, m = cache.access(attn_ids[l])
        prefill_miss += len(m)
        for ids in ffn_ids[l]:
            _, m = cache.access(ids)
            prefill_miss += len(m)
    _, m = cache.access(head_ids)
    prefill_miss += len(m)
    attn_miss = np.zeros((n_tokens, L), np.int64)
    ffn_miss = np.zeros((n_tokens, L), np.int64)
    ffn_blocks = np.zeros((n_tokens, L), np.int64)
    head_miss = np.zeros(n_tokens, np.int64)
    peak = 0
    for t in range(n_tokens):
        for l in range(L):
            _, m = cache.access(attn_ids[l])
            attn_miss[t, l] = len(m)
            routed = range(len(ffn_ids[l])) if experts is None else [int(e) for e in experts[t, l]]
            for e in routed:
                ids = ffn_ids[l][e]
                _, m = cache.access(ids)
                ffn_miss[t, l] += len(m)
                ffn_blocks[t, l] += len(ids)
        _, m = cache.access(head_ids)
        head_miss[t] = len(m)
        size = cache.size if isinstance(cache, LRUCache) else cache.size[1] + cache.size[2]
        peak = max(peak, size)
    return PageAccess(
        attn_miss=attn_miss,
        ffn_miss=ffn_miss,
        head_miss=head_miss,
        attn_blocks=np.array([len(x) for x in attn_ids]),
        ffn_blocks=ffn_blocks,
        head_blocks=len(head_ids),
        capacity_blocks=capacity_blocks,
        total_blocks=n,
        prefill_miss=prefill_miss,
        peak_blocks=peak,
        evictions=cache.evictions,
    )
