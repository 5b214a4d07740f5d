"""Results kept on disk between processes, for work that is a pure function of its inputs and
would otherwise be redone before every run's first token: a synthetic model's calibration, its
neuron frequencies and their order, hot masks, cache simulations.

Files live under ``<cache>/memo/<key>.npz`` (:func:`pi2sim.resources.cache_dir`), written
atomically and durably (fsync before the rename); the caller's key must digest every input *and
the code* (:func:`code_digest`), so a changed input or a changed function never reads an old result
back. Every file checks itself: a header names its key and the SHA-256 of its payload, so an entry
that is truncated, empty, overwritten with other bytes or copied from another key is detected,
discarded with a one-line notice on stderr and recomputed. A read-only or full disk only loses the
saving. The newest files are kept within
:data:`DISK_MAX_BYTES`. ``PI2SIM_NO_DISK_MEMO=1`` skips the disk (benchmarks of cold runs).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

DISK_MAX_BYTES = 1.0e9
_CODE: dict[tuple[str, ...], str] = {}


def code_digest(*packages: str) -> str:
    """Digest of every module of the named pi2sim subpackages (e.g. ``"access", "trace"``)."""
    if packages not in _CODE:
        root = Path(__file__).resolve().parent
        h = hashlib.blake2b(digest_size=12)
        for pkg in packages:
            for f in sorted(root.joinpath(pkg).rglob("*.py")):
                h.update(f"{pkg}/{f.name}".encode())
                h.update(f.read_bytes())
        _CODE[packages] = h.hexdigest()
    return _CODE[packages]


def persisted(key: str, compute: Callable[[], Any], kind: type | None = None) -> Any:
    """``compute()`` stored on disk under ``key``: an array, a tuple of arrays, numbers and None,
    or (``kind``) a dataclass of those."""
    if os.environ.get("PI2SIM_NO_DISK_MEMO") == "1":
        return compute()
    value = load(key, kind)
    if value is None:
        value = compute()
        store(key, value, kind)
    return value


def load(key: str, kind: type | None = None) -> Any:
    """The value stored under ``key``, or None (none stored, unreadable, or the disk memo off)."""
    if os.environ.get("PI2SIM_NO_DISK_MEMO") == "1":
        return None
    from . import resources

    path = resources.cache_dir() / "memo" / f"{key}.npz"
    if path.is_file():
        try:
            return _load(path, key, kind)
        except Exception as exc:  # whatever a damaged file raises (BadZipFile, EOFError, a foreign entry): recomputed
            discard(path, str(exc) or type(exc).__name__)
    return None


def discard(path: Path, why: str) -> None:
    """Drop a damaged cache entry, saying so in one line (it is recomputed)."""
    import sys

    print(f"pi2sim: {path}: damaged cache entry discarded and recomputed ({why})".replace("\n", " "), file=sys.stderr)
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


MAGIC = b"PI2SIM-CACHE 1"


def envelope(key: str, payload: bytes) -> bytes:
    """``payload`` behind a header line naming its key and its SHA-256 (what :func:`open_envelope` checks)."""
    return b"%s %s %s\n" % (MAGIC, key.encode(), hashlib.sha256(payload).hexdigest().encode()) + payload


def open_envelope(data: bytes, key: str) -> bytes:
    """The payload of an :func:`envelope`, or ValueError when it is not the entry of ``key`` intact."""
    head, nl, payload = data.partition(b"\n")
    parts = head.split(b" ")
    if not nl or len(parts) != 4 or b" ".join(parts[:2]) != MAGIC:
        raise ValueError("no cache header (truncated or not a cache file)")
    if parts[2].decode(errors="replace") != key:
        raise ValueError("an entry of another key")
    if hashlib.sha256(payload).hexdigest().encode() != parts[3]:
        raise ValueError("checksum mismatch (truncated or overwritten)")
    return payload


def store(key: str, value: Any, kind: type | None = None) -> None:
    """Keep ``value`` under ``key`` (a read-only or full disk only loses the saving)."""
    if os.environ.get("PI2SIM_NO_DISK_MEMO") == "1":
        return
    from . import resources

    try:
        _save(resources.cache_dir() / "memo" / f"{key}.npz", value, kind)
    except OSError:
        pass


def _save(path: Path, value: Any, kind: type | None) -> None:
    from .atomic import write_bytes

    if kind is not None:
        parts = [getattr(value, f.name) for f in fields(kind)]
    else:
        parts = list(value) if isinstance(value, tuple) else [value]
    arrays = {}
    for i, p in enumerate(parts):
        if p is None:
            continue
        a = np.asarray(p)
        if a.dtype == np.bool_ and a.size > 4096:  # masks: a bit each (a hot mask of Mixtral: 3.7 MB -> 0.46 MB)
            arrays[f"b{i}"] = np.packbits(a.reshape(-1))
            arrays[f"s{i}"] = np.array(a.shape, np.int64)
        else:
            arrays[f"a{i}"] = a
    buf = io.BytesIO()
    np.savez(buf, n=len(parts), single=kind is None and not isinstance(value, tuple), nones=np.array([p is None for p in parts]), **arrays)
    write_bytes(path, envelope(path.stem, buf.getvalue()))  # fsynced before the rename: a power cut leaves the old file or the new one
    _prune(path.parent)


def _load(path: Path, key: str, kind: type | None) -> Any:
    payload = open_envelope(path.read_bytes(), key)
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        n, nones = int(z["n"]), z["nones"]
        # own memory (np.load's arrays view its read buffer): frozen results are then hashed once
        # by the in-process memo (pi2sim.access.memo), which only trusts arrays that own their data
        parts = [None if nones[i] else _part(z, i) for i in range(n)]
        parts = [p.item() if isinstance(p, np.ndarray) and p.ndim == 0 else p for p in parts]
        if kind is not None:
            return kind(**dict(zip([f.name for f in fields(kind)], parts, strict=True)))
        return parts[0] if bool(z["single"]) else tuple(parts)


def _part(z, i: int) -> np.ndarray:
    if f"b{i}" in z.files:
        shape = tuple(int(x) for x in z[f"s{i}"])
        return np.unpackbits(z[f"b{i}"], count=int(np.prod(shape))).astype(np.bool_).reshape(shape)
    return np.array(z[f"a{i}"])


def _prune(directory: Path) -> None:
    """Keep the newest files within :data:`DISK_MAX_BYTES` (a sweep over thousands of memory
    sizes would otherwise leave gigabytes of cache simulations)."""
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
