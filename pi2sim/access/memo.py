"""In-process memo of access-model results, keyed by a digest of *all* their inputs.

The access model (the cache simulation) costs ~99% of an analytic-tier run, and a sweep or a
planner search often varies only what happens after it (UFS latency, core counts, pipeline mode,
NPU speed). Memoising on the function's complete inputs (trace file identity, replayed tokens,
profile, hot set, capacities, predictor, seed) makes those variations timing-only without any
chance of reusing a result computed from different inputs. Cached arrays are made read-only, so
a caller that tried to modify a shared result would fail loudly instead of corrupting others.

``PI2SIM_NO_MEMO=1`` turns it off (benchmarks of the access model itself).

:func:`persisted` adds a second level on disk for results that are a pure function of a
synthetic model's profile (its neuron frequencies, their hottest-first order, hot masks), which
every process would otherwise rebuild before its first token (~1 s for Mixtral). Files live
under ``<cache>/memo/``, named by the same digest, written atomically; a damaged or unreadable
file is recomputed.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
        self.hits = 0
        self.misses = 0

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        if os.environ.get("PI2SIM_NO_MEMO") == "1":
            return compute()
        if key in self._store:
            self._store.move_to_end(key)
            self.hits += 1
            return self._store[key]
        self.misses += 1
        value = _freeze(compute())
        self._store[key] = value
        self._sizes[key] = _nbytes(value)
        while len(self._store) > 1 and (len(self._store) > self.max_entries or sum(self._sizes.values()) > self.max_bytes):
            old, _ = self._store.popitem(last=False)
            self._sizes.pop(old, None)
        return value

    def clear(self) -> None:
        self._store.clear()
        self._sizes.clear()


ACCESS = Memo(max_entries=128)  # cache simulations (counts per token and layer: ~1-4 MB each)
PROFILES = Memo(max_entries=16, max_bytes=512e6)  # offline neuron profiles, hot masks, alias tables


_CODE: str | None = None


def code_digest() -> str:
    """Digest of the code an on-disk result depends on (the access model and the trace reader):
    a result computed by other code is never read back."""
    global _CODE
    if _CODE is None:
        root = Path(__file__).resolve().parents[1]
        h = hashlib.blake2b(digest_size=12)
        for f in sorted([*root.joinpath("access").rglob("*.py"), *root.joinpath("trace").rglob("*.py")]):
            h.update(f.name.encode())
            h.update(f.read_bytes())
        _CODE = h.hexdigest()
    return _CODE


DISK_MAX_BYTES = 1.0e9  # the on-disk memo keeps its newest files within this size


def persisted(key: str, compute: Callable[[], Any], kind: type | None = None) -> Any:
    """``compute()`` stored on disk under ``key``: an array, a tuple of arrays and numbers, or
    (``kind``) a dataclass of arrays, numbers and None. Use inside a :meth:`Memo.get`, so the
    process keeps the result in memory too. ``PI2SIM_NO_DISK_MEMO=1`` (or ``PI2SIM_NO_MEMO=1``)
    skips the disk (benchmarks of cold runs)."""
    if os.environ.get("PI2SIM_NO_MEMO") == "1" or os.environ.get("PI2SIM_NO_DISK_MEMO") == "1":
        return compute()
    from .. import resources

    path = resources.cache_dir() / "memo" / f"{digest(key, code_digest())}.npz"
    if path.is_file():
        try:
            return _load(path, kind)
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)  # damaged: recomputed
    value = compute()
    try:
        _save(path, value, kind)
    except OSError:  # a read-only or full cache: the result is still right, only not kept
        pass
    return value


def _save(path: Path, value: Any, kind: type | None) -> None:
    import io

    from ..atomic import write_bytes

    if kind is not None:
        names = [f.name for f in fields(kind)]
        parts = [getattr(value, n) for n in names]
    else:
        names = None
        parts = [value] if not isinstance(value, tuple) else list(value)
    arrays = {f"a{i}": np.asarray(p) for i, p in enumerate(parts) if p is not None}
    nones = np.array([p is None for p in parts])
    buf = io.BytesIO()
    np.savez(buf, n=len(parts), single=kind is None and not isinstance(value, tuple), nones=nones, **arrays)
    write_bytes(path, buf.getvalue())
    _prune(path.parent)


def _load(path: Path, kind: type | None) -> Any:
    with np.load(path, allow_pickle=False) as z:
        n, nones = int(z["n"]), z["nones"]
        parts = [None if nones[i] else z[f"a{i}"] for i in range(n)]
        parts = [p.item() if isinstance(p, np.ndarray) and p.ndim == 0 else p for p in parts]
        if kind is not None:
            return kind(**dict(zip([f.name for f in fields(kind)], parts, strict=True)))
        return parts[0] if bool(z["single"]) else tuple(parts)


def _prune(directory: Path) -> None:
    """Keep the newest files within :data:`DISK_MAX_BYTES` (a sweep of thousands of memory
    sizes would otherwise leave gigabytes of access results)."""
    files = []
    for p in directory.glob("*.npz"):
        try:
            st = p.stat()
        except OSError:
            continue
        files.append((st.st_mtime_ns, st.st_size, p))
    total = sum(f[1] for f in files)
    for _, size, p in sorted(files):
        if total <= DISK_MAX_BYTES:
            break
        p.unlink(missing_ok=True)
        total -= size
