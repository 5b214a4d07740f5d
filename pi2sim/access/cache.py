"""Vectorised LRU over integer item ids (neurons, pages).

Accesses arrive in *steps* (one token's layer, one tensor): all items of a step share a time
stamp, and only the order between steps matters. Each step is a handful of numpy operations on
the step's items, so the cost is proportional to the accesses, not to the cache size.

Eviction keeps a FIFO of (step, items) batches. An item's live batch is the one matching its
latest stamp; evicting pops the oldest batch and removes its still-live, still-resident items
(those re-accessed later carry a newer stamp and are skipped). Within a batch, items leave in the
order they were given, which keeps the result deterministic. Dead entries are compacted away
whenever they outnumber the live ones, so memory stays proportional to the cache, not to the
number of accesses.
"""

from __future__ import annotations

from collections import deque

import numpy as np


class LRUCache:
    def __init__(self, n_items: int, capacity: int):
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = int(capacity)
        self.resident = np.zeros(n_items, dtype=bool)
        self.stamp = np.full(n_items, -1, dtype=np.int64)
        self.size = 0
        self.step = 0
        self._fifo: deque[tuple[int, np.ndarray]] = deque()
        self.evictions = 0
        self.insertions = 0
        self._stored = 0

    def preload(self, ids: np.ndarray) -> None:
        """Fill with ``ids`` (least recently used first), up to capacity."""
        ids = np.asarray(ids, dtype=np.int64)
        ids = ids[~self.resident[ids]][-self.capacity :] if self.capacity else ids[:0]
        if len(ids) == 0:
            return
        # one batch per chunk so that eviction order follows the given order
        for chunk in np.array_split(ids, max(1, len(ids) // 4096)):
            self._touch(chunk)
            self.resident[chunk] = True
            self.size += len(chunk)
        self._evict()

    def _touch(self, ids: np.ndarray) -> None:
        self.step += 1
        self.stamp[ids] = self.step
        self._fifo.append((self.step, ids))
        self._stored += len(ids)
        if self._stored > 2 * max(self.size, 1) + 65536:
            self._compact()

    def _compact(self) -> None:
        fifo: deque[tuple[int, np.ndarray]] = deque()
        stored = 0
        for step, batch in self._fifo:
            live = batch[self.stamp[batch] == step]
            if len(live):
                fifo.append((step, live))
                stored += len(live)
        self._fifo = fifo
        self._stored = stored

    def access(self, ids: np.ndarray, insert: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Access ``ids`` (unique); returns (hit mask, missed ids). Misses are inserted if ``insert``."""
        ids = np.asarray(ids, dtype=np.int64)
        hit = self.resident[ids]
        missed = ids[~hit]
        if self.capacity == 0:
            return hit, missed
        touched = ids if insert else ids[hit]
        if len(touched):
            self._touch(touched)
        if insert and len(missed):
            self.resident[missed] = True
            self.size += len(missed)
            self.insertions += len(missed)
            self._evict()
        return hit, missed

    def expire(self, before_step: int) -> int:
        """Drop resident items last used before ``before_step`` (windowed caches); returns how many."""
        dropped = 0
        while self._fifo and self._fifo[0][0] < before_step:
            step, batch = self._fifo.popleft()
            self._stored -= len(batch)
            live = batch[(self.stamp[batch] == step) & self.resident[batch]]
            if len(live):
                self.resident[live] = False
                self.size -= len(live)
                self.evictions += len(live)
                dropped += len(live)
        return dropped

    def _evict(self) -> None:
        excess = self.size - self.capacity
        while excess > 0:
            step, batch = self._fifo[0]
            live = batch[(self.stamp[batch] == step) & self.resident[batch]]
            if len(live) <= excess:
                self._fifo.popleft()
                self._stored -= len(batch)
                victims = live
            else:
                victims = live[:excess]
                keep = live[excess:]
                self._fifo[0] = (step, keep)
                self._stored -= len(batch) - len(keep)
            self.resident[victims] = False
            self.size -= len(victims)
            self.evictions += len(victims)
            excess -= len(victims)
            if not self._fifo and excess > 0:  # pragma: no cover - would mean size bookkeeping broke
                raise AssertionError("LRU bookkeeping: nothing left to evict")
        # drop dead batches at the head so the FIFO stays short
        while self._fifo:
            step, batch = self._fifo[0]
            if ((self.stamp[batch] == step) & self.resident[batch]).any():
                break
            self._fifo.popleft()
            self._stored -= len(batch)
