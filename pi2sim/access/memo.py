"""In-process memo of access-model results, keyed by a digest of *all* their inputs.

The access model (the cache simulation) costs ~99% of an analytic-tier run, and a sweep or a
planner search often varies only what happens after it (UFS latency, core counts, pipeline mode,
NPU speed). Memoising on the function's complete inputs (trace file identity, replayed tokens,
profile, hot set, capacities, predictor, seed) makes those variations timing-only without any
chance of reusing a result computed from different inputs. Cached arrays are made read-only, so
a caller that tried to modify a shared result would fail loudly instead of corrupting others.

``PI2SIM_NO_MEMO=1`` turns it off (benchmarks of the access model itself).

:func:`persisted` adds a second level on disk (:mod:`pi2sim.diskcache`) for what every process
would otherwise rebuild before its first token: the neuron profile (a synthetic model's from its
calibration, a recorded trace's from the whole file), its hottest-first order, hot masks and the
cache simulations themselves. The on-disk key adds a digest of the access and trace code, so a
changed function never reads an old result back.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import diskcache

MAX_ENTRIES = 4
MAX_BYTES = 256e6  # per memo: results are bounded by their arrays' size too (a calibration keeps dozens)


_ARRAY_DIGESTS: dict[int, tuple[weakref.ref, str]] = {}


def _array_digest(a: np.ndarray) -> str:
    """Digest of an array's dtype, shape and bytes. Read-only arrays (memoised results) are hashed
    once: they cannot change, so their digest is remembered for as long as they live."""
    if not a.flags.writeable and a.base is None:
        hit = _ARRAY_DIGESTS.get(id(a))
        if hit is not None and hit[0]() is a:
            return hit[1]
    c = np.ascontiguousarray(a)
    h = hashlib.blake2b(f"nd{c.dtype.str}{c.shape}".encode(), digest_size=20)
    h.update(c.view(np.uint8).reshape(-1).data if c.size else b"")
    d = h.hexdigest()
    if not a.flags.writeable and a.base is None:
        _ARRAY_DIGESTS[id(a)] = (weakref.ref(a, lambda _r, k=id(a): _ARRAY_DIGESTS.pop(k, None)), d)
    return d


def digest(*parts: Any) -> str:
    h = hashlib.blake2b(digest_size=20)
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(_array_digest(p).encode())
        elif isinstance(p, Path):
            st = p.stat()
            h.update(f"file{p.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
        else:
            h.update(repr(p).encode())
        h.update(b"|")
    return h.hexdigest()


def _freeze(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        obj.flags.writeable = False
    elif isinstance(obj, tuple):
        for x in obj:
            _freeze(x)
    elif is_dataclass(obj):
        for f in fields(obj):
            _freeze(getattr(obj, f.name))
    return obj


def _nbytes(obj: Any) -> int:
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, tuple):
        return sum(_nbytes(x) for x in obj)
    if is_dataclass(obj):
        return sum(_nbytes(getattr(obj, f.name)) for f in fields(obj))
    return 0


class Memo:
    """Least-recently-used results, at most ``max_entries`` of them and ``max_bytes`` of arrays."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: float = MAX_BYTES):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._store: OrderedDict[str, Any] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        """The result under ``key``, computed (outside the lock: threads compute in parallel)
        and kept if the memo does not have it. Safe from several threads."""
        if os.environ.get("PI2SIM_NO_MEMO") == "1":
            return compute()
        hit = self.peek(key)
        if hit is not None:
            return hit
        value = _freeze(compute())
        with self._lock:
            self.misses += 1
            self._store[key] = value
            self._sizes[key] = _nbytes(value)
            while len(self._store) > 1 and (len(self._store) > self.max_entries or sum(self._sizes.values()) > self.max_bytes):
                old, _ = self._store.popitem(last=False)
                self._sizes.pop(old, None)
        return value

    def peek(self, key: str) -> Any:
        """The result under ``key`` if the memo has it (counted as a hit), else None."""
        if os.environ.get("PI2SIM_NO_MEMO") == "1":
            return None
        with self._lock:
            if key not in self._store:
                return None
            self._store.move_to_end(key)
            self.hits += 1
            return self._store[key]

    def clear(self) -> None:
        with self._lock:
            self._store.clear()
            self._sizes.clear()


ACCESS = Memo(max_entries=128)  # cache simulations (counts per token and layer: ~1-4 MB each)
PROFILES = Memo(max_entries=64, max_bytes=512e6)  # offline neuron profiles, hot masks (a sweep's points each have one), alias tables
TRACE_WORDS = Memo(max_entries=256, max_bytes=256e6)  # decompressed trace chunks (their own memo: they must not evict profiles)


def code_digest() -> str:
    """Digest of the code an on-disk access result depends on (the access model and the trace
    reader): a result computed by other code is never read back."""
    return diskcache.code_digest("access", "trace")


def persisted(key: str, compute: Callable[[], Any], kind: type | None = None) -> Any:
    """:func:`pi2sim.diskcache.persisted` under the access code's digest; ``PI2SIM_NO_MEMO=1``
    turns it off with the in-process memo."""
    if os.environ.get("PI2SIM_NO_MEMO") == "1":
        return compute()
    return diskcache.persisted(digest(key, code_digest()), compute, kind)


def load_persisted(key: str, kind: type | None = None) -> Any:
    """What :func:`persisted` stored under ``key``, or None (the caller computes it, perhaps
    with others at once, and stores it with :func:`store_persisted`)."""
    if os.environ.get("PI2SIM_NO_MEMO") == "1":
        return None
    return diskcache.load(digest(key, code_digest()), kind)


def store_persisted(key: str, value: Any, kind: type | None = None) -> None:
    if os.environ.get("PI2SIM_NO_MEMO") != "1":
        diskcache.store(digest(key, code_digest()), value, kind)
