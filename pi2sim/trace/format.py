"""The pi2sim activation-trace file format (``.pi2t``), version 1.

Layout (all integers little-endian)::

    "PI2TRACE"  u16 format_version  6 zero bytes          -- 16-byte preamble
    chunk 0 .. chunk n-1                                  -- token blocks, each two compressed
                                                             blobs: small streams, then codes
    header JSON (UTF-8)                                   -- self-description + chunk index
    u64 header_length  "PI2T-END"                         -- 16-byte trailer

The header sits at the end so a trace can be written token block by token block without holding
it in memory; the atomic rename (see :mod:`pi2sim.atomic`) makes the file appear only once the
trailer is written, and a truncated file has no trailer. The header carries its own SHA-256 and
one SHA-256 per blob, so corruption is caught at open (header) or on first read (chunk).

Per token the file stores these streams (in this order inside each chunk):

``token_id`` int32, ``seq`` int32 (sequence index), ``phase`` uint8 (0 prompt, 1 decode),
``experts`` uint8[L, K] (MoE only: the K routed experts per layer, in router order), and ``codes``:
for every layer and routed expert, one small integer per FFN neuron, bit-packed along the neuron
axis. For ReLU-family models (``activation.kind == "zero"``) a code is 1 bit: nonzero or not. For
SwiGLU-family models (``"magnitude"``) a code counts how many per-layer magnitude thresholds the
neuron's ``|act(gate) * up|`` exceeds, so one file replays several sparsity levels: at level ``i``
(e.g. 70% sparsity) a neuron is active iff ``code >= i + 1``.

See ``docs/trace-format.md`` for the prose description.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import math
import os
import struct
import threading
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_open
from ..errors import InputError

MAGIC = b"PI2TRACE"
TRAILER_MAGIC = b"PI2T-END"
FORMAT_VERSION = 1
FORMAT_NAME = "pi2sim-trace"
_PREAMBLE = struct.Struct("<8sH6x")
_TRAILER = struct.Struct("<Q8s")
CODECS = ("zlib", "zlib-fast", "zstd", "lzma", "none")
PHASE_PROMPT = 0
PHASE_DECODE = 1


# ----------------------------------------------------------------------------- bit packing


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack small non-negative integer codes (< 2**bits) along the last axis."""
    if bits not in (1, 2, 4, 8):
        raise ValueError(f"bits must be 1, 2, 4 or 8, not {bits}")
    codes = np.asarray(codes, dtype=np.uint8)
    if bits == 8:
        return codes.copy()
    per_byte = 8 // bits
    n = codes.shape[-1]
    pad = (-n) % per_byte
    if pad:
        codes = np.concatenate([codes, np.zeros(codes.shape[:-1] + (pad,), np.uint8)], axis=-1)
    if bits == 1:
        return np.packbits(codes, axis=-1, bitorder="little")
    grouped = codes.reshape(codes.shape[:-1] + (-1, per_byte))
    out = np.zeros(grouped.shape[:-1], np.uint8)
    for i in range(per_byte):
        out |= grouped[..., i] << np.uint8(i * bits)
    return out


def unpack_codes(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`; returns uint8 codes with last axis of length ``n``."""
    if bits == 8:
        return packed[..., :n]
    if bits == 1:
        return np.unpackbits(packed, axis=-1, count=n, bitorder="little")
    per_byte = 8 // bits
    mask = np.uint8((1 << bits) - 1)
    out = np.empty(packed.shape + (per_byte,), np.uint8)
    for i in range(per_byte):
        out[..., i] = (packed >> np.uint8(i * bits)) & mask
    return out.reshape(packed.shape[:-1] + (-1,))[..., :n]


def packed_width(n: int, bits: int) -> int:
    return (n * bits + 7) // 8


# ----------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class ActivationLevel:
    """One replayable activity level. ``sparsity`` is None for the ReLU zero test."""

    name: str
    sparsity: float | None = None
    thresholds: tuple[float, ...] | None = None  # per layer, magnitude traces only


@dataclass(frozen=True)
class TraceMeta:
    """Everything a trace says about itself (the header, minus the chunk index)."""

    model: str
    n_layers: int
    n_neurons: int  # FFN neurons per layer (per expert for MoE)
    n_experts: int  # 1 for dense models
    top_k: int  # routed experts per token and layer (1 for dense)
    activation_kind: str  # "zero" (ReLU family) or "magnitude" (thresholded |h|)
    levels: tuple[ActivationLevel, ...]
    n_tokens: int = 0
    sequences: tuple[dict, ...] = ()
    provenance: dict = field(default_factory=dict)
    codec: str = "zlib"
    format_version: int = FORMAT_VERSION

    @property
    def bits(self) -> int:
        return 1 if len(self.levels) <= 1 else (2 if len(self.levels) <= 3 else 4)

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 1

    @property
    def routed(self) -> int:
        """Expert slots stored per layer: ``top_k`` for MoE, 1 for dense."""
        return self.top_k if self.is_moe else 1

    def level_index(self, sparsity: float | None) -> int:
        """Index of the level to replay. ``None`` picks the only/first level of a zero trace,
        and for magnitude traces the level closest to the model default is the caller's job."""
        if self.activation_kind == "zero":
            if sparsity is not None:
                raise InputError(
                    None, "sparsity", "no sparsity level for a ReLU-family (zero-test) trace; its activity is fixed", sparsity
                )
            return 0
        if sparsity is None:
            return 0
        for i, lv in enumerate(self.levels):
            if lv.sparsity is not None and abs(lv.sparsity - sparsity) < 1e-9:
                return i
        have = ", ".join(f"{lv.sparsity:g}" for lv in self.levels)
        raise InputError(None, "sparsity", f"one of the trace's recorded levels ({have})", sparsity)

    def to_json(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "model": {
                "name": self.model,
                "n_layers": self.n_layers,
                "n_neurons": self.n_neurons,
                "n_experts": self.n_experts,
                "top_k": self.top_k,
            },
            "activation": {
                "kind": self.activation_kind,
                "bits_per_code": self.bits,
                "levels": [
                    {
                        "name": lv.name,
                        "sparsity": lv.sparsity,
                        "thresholds": list(lv.thresholds) if lv.thresholds is not None else None,
                    }
                    for lv in self.levels
                ],
            },
            "n_tokens": self.n_tokens,
            "sequences": list(self.sequences),
            "provenance": self.provenance,
            "codec": self.codec,
        }


def _no_constant(name: str):
    """json.loads accepts NaN and Infinity, which are not JSON (and which the canonical form that
    the checksum covers cannot encode): a header holding one is not a valid header."""
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """A JSON number that overflows a double (1e999) would parse as infinity: not a valid header."""
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"{text} overflows")
    return x


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _streams(meta: TraceMeta) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
    """(name, dtype, per-token shape) of each stream, in chunk order."""
    out = [
        ("token_id", np.dtype("<i4"), ()),
        ("seq", np.dtype("<i4"), ()),
        ("phase", np.dtype("u1"), ()),
    ]
    if meta.is_moe:
        out.append(("experts", np.dtype("u1"), (meta.n_layers, meta.top_k)))
    out.append(("codes", np.dtype("u1"), (meta.n_layers, meta.routed, packed_width(meta.n_neurons, meta.bits))))
    return out


def _compress(codec: str, data: bytes) -> bytes:
    if codec == "zlib":
        return zlib.compress(data, 6)
    if codec == "zlib-fast":  # generated caches: 5x faster, files ~25% larger
        return zlib.compress(data, 1)
    if codec == "zstd":  # generated caches: compresses 4x and decompresses 4x faster than zlib-fast, ~15% smaller
        import zstandard

        return zstandard.ZstdCompressor(level=1).compress(data)
    if codec == "lzma":
        return lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)
    return data


def _chunk_blobs(codec: str, small: bytes, codes: bytes) -> tuple[bytes, bytes, str, str]:
    a, b = _compress(codec, small), _compress(codec, codes)
    return a, b, hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest()


class _ZstdError(Exception):
    """A zstd chunk that does not decompress (zstandard's own error, re-raised as one type)."""


def _decompress(codec: str, data: bytes) -> bytes:
    if codec in ("zlib", "zlib-fast"):
        return zlib.decompress(data)
    if codec == "zstd":
        import zstandard

        try:
            return zstandard.ZstdDecompressor().decompress(data)
        except zstandard.ZstdError as exc:
            raise _ZstdError(str(exc)) from None
    if codec == "lzma":
        return lzma.decompress(data)
    return data


# ----------------------------------------------------------------------------- blocks


@dataclass
class TraceBlock:
    """Consecutive tokens ``[start, start + n)`` with their streams, codes unpacked."""

    start: int
    token_id: np.ndarray  # [n] int32
    seq: np.ndarray  # [n] int32
    phase: np.ndarray  # [n] uint8
    codes: np.ndarray  # [n, L, K, N] uint8
    experts: np.ndarray | None  # [n, L, K] uint8, MoE only

    def __len__(self) -> int:
        return len(self.token_id)

    def active(self, level: int) -> np.ndarray:
        """Boolean activity [n, L, K, N] at replay level ``level``."""
        return self.codes >= (level + 1)


@dataclass
class PackedBlock:
    """Consecutive tokens ``[start, start + n)`` with their codes packed along the neuron axis
    (``bits`` per code, see :func:`pack_codes`)."""

    start: int
    phase: np.ndarray  # [n] uint8
    packed: np.ndarray  # [n, L, K, packed_width] uint8
    experts: np.ndarray | None  # [n, L, K] uint8, MoE only
    bits: int

    def __len__(self) -> int:
        return len(self.phase)


# ----------------------------------------------------------------------------- writer


class TraceWriter:
    """Stream tokens into a trace file. Use as a context manager; the file appears on close."""

    def __init__(self, path: str | Path, meta: TraceMeta, chunk_tokens: int = 64):
        if meta.codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}")
        self.path = Path(path)
        self.meta = meta
        self.chunk_tokens = int(chunk_tokens)
        self._streams = _streams(meta)
        self._pending: dict[str, list[np.ndarray]] = {name: [] for name, _, _ in self._streams}
        self._pending_n = 0
        self._n = 0
        self._chunks: list[dict] = []
        self._offset = _PREAMBLE.size
        self._ctx = atomic_open(self.path)
        self._fh = self._ctx.__enter__()
        self._fh.write(_PREAMBLE.pack(MAGIC, FORMAT_VERSION))
        self._closed = False
        self._pool = None  # the compressing thread, started with the first chunk
        self._inflight: deque = deque()  # (future of the chunk's blobs, tokens), in file order

    def append(self, token_id, seq, phase, codes, experts=None) -> None:
        """Add ``n`` tokens. ``codes`` is unpacked uint8 [n, L, K, N]."""
        token_id = np.asarray(token_id, "<i4").reshape(-1)
        n = len(token_id)
        codes = np.asarray(codes, np.uint8)
        m = self.meta
        if codes.shape != (n, m.n_layers, m.routed, m.n_neurons):
            raise ValueError(f"codes shape {codes.shape} != {(n, m.n_layers, m.routed, m.n_neurons)}")
        if codes.size and int(codes.max()) > len(m.levels):
            raise ValueError("code exceeds the number of levels")
        arrays = {
            "token_id": token_id,
            "seq": np.broadcast_to(np.asarray(seq, "<i4"), (n,)),
            "phase": np.broadcast_to(np.asarray(phase, "u1"), (n,)),
            "codes": pack_codes(codes, m.bits),
        }
        if m.is_moe:
            if experts is None:
                raise ValueError("MoE trace needs experts")
            experts = np.asarray(experts, np.uint8)
            if experts.shape != (n, m.n_layers, m.top_k) or int(experts.max(initial=0)) >= m.n_experts:
                raise ValueError("bad experts array")
            arrays["experts"] = experts
        for name, _, _ in self._streams:
            self._pending[name].append(np.ascontiguousarray(arrays[name]))
        self._pending_n += n
        while self._pending_n >= self.chunk_tokens:
            self._flush(self.chunk_tokens)

    def _flush(self, n: int) -> None:
        if n == 0:
            return
        small, codes = [], b""
        for name, dtype, _ in self._streams:
            cat = np.concatenate(self._pending[name]) if len(self._pending[name]) > 1 else self._pending[name][0]
            head, tail = cat[:n], cat[n:]
            self._pending[name] = [tail] if len(tail) else []
            data = np.ascontiguousarray(head, dtype=dtype).tobytes()
            if name == "codes":
                codes = data
            else:
                small.append(data)
        self._pending_n -= n
        # Two blobs per chunk: the small per-token streams, then the (large) code planes, so
        # token ids, phases and routing can be read without decompressing activity. Compressing
        # and hashing run on a worker thread (both release the GIL), overlapping the next
        # chunk's generation; chunks are written in order, at most two waiting.
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pi2t-writer")
        self._inflight.append((self._pool.submit(_chunk_blobs, self.meta.codec, b"".join(small), codes), n))
        while len(self._inflight) > 2 or (self._inflight and self._inflight[0][0].done()):
            self._write_next()

    def _write_next(self) -> None:
        fut, n = self._inflight.popleft()
        small_blob, codes_blob, small_sha, codes_sha = fut.result()
        self._fh.write(small_blob)
        self._fh.write(codes_blob)
        self._chunks.append(
            {
                "start": self._n,
                "n_tokens": n,
                "offset": self._offset,
                "small_length": len(small_blob),
                "small_sha256": small_sha,
                "codes_length": len(codes_blob),
                "codes_sha256": codes_sha,
            }
        )
        self._offset += len(small_blob) + len(codes_blob)
        self._n += n

    def _drain(self) -> None:
        try:
            while self._inflight:
                self._write_next()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None

    def close(self, **meta_updates: Any) -> TraceMeta:
        """Finish the file. ``meta_updates`` may set fields known only at the end (levels, ...)."""
        if self._closed:
            return self.meta
        self._flush(self._pending_n)
        self._drain()
        from dataclasses import replace

        self.meta = replace(self.meta, n_tokens=self._n, **meta_updates)
        header = self.meta.to_json()
        header["streams"] = [{"name": n, "dtype": d.str, "shape": list(s)} for n, d, s in self._streams]
        header["chunks"] = self._chunks
        header["header_sha256"] = hashlib.sha256(_canonical(header)).hexdigest()
        data = _canonical(header)
        self._fh.write(data)
        self._fh.write(_TRAILER.pack(len(data), TRAILER_MAGIC))
        self._closed = True
        self._ctx.__exit__(None, None, None)
        return self.meta

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            self._inflight.clear()
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
            try:
                raise RuntimeError("trace write aborted")
            except RuntimeError as exc:
                self._ctx.__exit__(type(exc), exc, exc.__traceback__)

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def save(
    path: str | Path,
    meta: TraceMeta,
    token_id: np.ndarray,
    seq: np.ndarray,
    phase: np.ndarray,
    codes: np.ndarray,
    experts: np.ndarray | None = None,
    chunk_tokens: int = 64,
) -> TraceMeta:
    """Write a whole trace held in memory. Returns the final metadata."""
    w = TraceWriter(path, meta, chunk_tokens=chunk_tokens)
    try:
        n = len(token_id)
        for s in range(0, n, chunk_tokens):
            e = min(n, s + chunk_tokens)
            w.append(token_id[s:e], seq[s:e], phase[s:e], codes[s:e], None if experts is None else experts[s:e])
        return w.close()
    except BaseException:
        w.abort()
        raise


# ----------------------------------------------------------------------------- reader


def _bad(path: Path, what: str) -> InputError:
    return InputError(path, None, f"expected a pi2sim trace file: {what}")


def _parse_meta(path: Path, h: dict) -> TraceMeta:
    try:
        model = h["model"]
        act = h["activation"]
        levels = tuple(
            ActivationLevel(
                name=str(lv["name"]),
                sparsity=None if lv.get("sparsity") is None else float(lv["sparsity"]),
                thresholds=None if lv.get("thresholds") is None else tuple(float(x) for x in lv["thresholds"]),
            )
            for lv in act["levels"]
        )
        meta = TraceMeta(
            model=str(model["name"]),
            n_layers=int(model["n_layers"]),
            n_neurons=int(model["n_neurons"]),
            n_experts=int(model["n_experts"]),
            top_k=int(model["top_k"]),
            activation_kind=str(act["kind"]),
            levels=levels,
            n_tokens=int(h["n_tokens"]),
            sequences=tuple(h.get("sequences", ())),
            provenance=dict(h.get("provenance", {})),
            codec=str(h["codec"]),
            format_version=int(h["format_version"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(path, f"header is missing or has a malformed field ({exc})") from None
    if meta.activation_kind not in ("zero", "magnitude") or meta.codec not in CODECS:
        raise _bad(path, "header names an unknown activation kind or codec")
    if min(meta.n_layers, meta.n_neurons, meta.n_experts, meta.top_k) < 1 or meta.top_k > meta.n_experts:
        raise _bad(path, "header has an impossible model shape")
    if not levels or int(act.get("bits_per_code", -1)) != meta.bits:
        raise _bad(path, "header activation levels are inconsistent")
    for lv in levels:
        if lv.thresholds is not None and len(lv.thresholds) != meta.n_layers:
            raise _bad(path, f"level {lv.name!r} has {len(lv.thresholds)} thresholds for {meta.n_layers} layers")
    return meta


class Trace:
    """A trace file opened for reading. Cheap to open: chunks are read and verified on demand."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._fh = open(self.path, "rb")  # noqa: SIM115 - kept open for chunk reads
            self._lock = threading.Lock()  # chunk reads where os.pread is missing
        except FileNotFoundError:
            raise InputError(self.path, None, "cannot read trace: the file does not exist") from None
        except IsADirectoryError:
            raise InputError(self.path, None, "cannot read trace: it is a directory") from None
        except OSError as exc:
            raise InputError(self.path, None, f"cannot read trace: {exc.strerror}") from None
        try:
            self._open()
        except BaseException:
            self._fh.close()
            raise

    def _open(self) -> None:
        path = self.path
        fh = self._fh
        fh.seek(0, 2)
        size = fh.tell()
        if size < _PREAMBLE.size + _TRAILER.size:
            raise _bad(path, "file is empty or truncated")
        fh.seek(0)
        magic, version = _PREAMBLE.unpack(fh.read(_PREAMBLE.size))
        if magic != MAGIC:
            raise _bad(path, "wrong magic bytes (not a .pi2t file)")
        if version != FORMAT_VERSION:
            raise InputError(
                path, "format_version", f"trace format version {FORMAT_VERSION} (this file is version {version}; re-record or convert it)"
            )
        fh.seek(size - _TRAILER.size)
        hlen, tmagic = _TRAILER.unpack(fh.read(_TRAILER.size))
        if tmagic != TRAILER_MAGIC:
            raise _bad(path, "trailer missing: the file is truncated or was not finished")
        hstart = size - _TRAILER.size - hlen
        if hlen <= 0 or hstart < _PREAMBLE.size:
            raise _bad(path, "trailer gives an impossible header length (truncated or corrupted)")
        fh.seek(hstart)
        raw = fh.read(hlen)
        try:
            header = json.loads(raw.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite_float)
        except (UnicodeDecodeError, ValueError):  # JSONDecodeError is a ValueError, so is NaN/Infinity
            raise _bad(path, "header is not valid JSON (corrupted)") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
            raise _bad(path, "header does not identify a pi2sim trace")
        claimed = header.pop("header_sha256", None)
        if claimed != hashlib.sha256(_canonical(header)).hexdigest():
            raise _bad(path, "header checksum mismatch (corrupted)")
        self.meta = _parse_meta(path, header)
        self._streams = _streams(self.meta)
        declared = [(s["name"], s["dtype"], tuple(s["shape"])) for s in header.get("streams", [])]
        if declared != [(n, d.str, s) for n, d, s in self._streams]:
            raise _bad(path, "stream layout does not match format version 1")
        chunks = header.get("chunks")
        if not isinstance(chunks, list):
            raise _bad(path, "chunk index missing")
        expected_start, expected_offset = 0, _PREAMBLE.size
        for c in chunks:
            try:
                length = int(c["small_length"]) + int(c["codes_length"])
                ok = (
                    c["start"] == expected_start
                    and c["offset"] == expected_offset
                    and c["n_tokens"] > 0
                    and min(c["small_length"], c["codes_length"]) >= 0
                    and isinstance(c["small_sha256"], str)
                    and isinstance(c["codes_sha256"], str)
                )
            except (KeyError, TypeError, ValueError):
                ok = False
            if not ok:
                raise _bad(path, "chunk index is inconsistent (corrupted)")
            expected_start += c["n_tokens"]
            expected_offset += length
        if expected_start != self.meta.n_tokens or expected_offset != hstart:
            raise _bad(path, "chunk index does not cover the file (truncated or corrupted)")
        self._chunks = chunks
        self._token_bytes = {name: int(np.prod(shape, dtype=np.int64)) * dt.itemsize for name, dt, shape in self._streams}
        self._small: dict[str, np.ndarray] | None = None

    # -- basic properties
    def __len__(self) -> int:
        return self.meta.n_tokens

    def __enter__(self) -> "Trace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._fh.close()

    def __repr__(self) -> str:
        m = self.meta
        return f"<Trace {self.path.name}: {m.model}, {m.n_tokens} tokens, {m.n_layers}x{m.n_neurons}, {m.activation_kind}>"

    @property
    def n_chunks(self) -> int:
        return len(self._chunks)

    # -- chunk access
    def chunk_tokens(self, i: int) -> tuple[int, int]:
        """Token range ``[start, stop)`` of chunk ``i`` (from the index: nothing is read)."""
        c = self._chunks[i]
        return c["start"], c["start"] + c["n_tokens"]

    def _pread(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``; safe from several threads at once (the access model
        reads chunks in parallel): a positional read, not a seek and a read."""
        if hasattr(os, "pread"):
            fd, out = self._fh.fileno(), []
            while length > 0:
                part = os.pread(fd, length, offset)
                if not part:
                    break
                out.append(part)
                offset += len(part)
                length -= len(part)
            return b"".join(out)
        with self._lock:
            self._fh.seek(offset)
            return self._fh.read(length)

    def _read_blob(self, i: int, part: str) -> bytes:
        c = self._chunks[i]
        offset = c["offset"] + (c["small_length"] if part == "codes" else 0)
        blob = self._pread(offset, c[f"{part}_length"])
        if len(blob) != c[f"{part}_length"] or hashlib.sha256(blob).hexdigest() != c[f"{part}_sha256"]:
            raise _bad(self.path, f"chunk {i} (tokens {c['start']}..{c['start'] + c['n_tokens'] - 1}) checksum mismatch (corrupted)")
        try:
            return _decompress(self.meta.codec, blob)
        except (zlib.error, lzma.LZMAError, _ZstdError):
            raise _bad(self.path, f"chunk {i} cannot be decompressed (corrupted)") from None

    def _read_chunk(self, i: int, with_codes: bool = True) -> dict[str, np.ndarray]:
        n = self._chunks[i]["n_tokens"]
        small_streams = [s for s in self._streams if s[0] != "codes"]
        data = self._read_blob(i, "small")
        if len(data) != n * sum(self._token_bytes[name] for name, _, _ in small_streams):
            raise _bad(self.path, f"chunk {i} has the wrong size (corrupted)")
        out, pos = {}, 0
        for name, dt, shape in small_streams:
            count = n * int(np.prod(shape, dtype=np.int64))
            out[name] = np.frombuffer(data, dtype=dt, count=count, offset=pos).reshape((n,) + shape)
            pos += n * self._token_bytes[name]
        if with_codes:
            data = self._read_blob(i, "codes")
            _, dt, shape = self._streams[-1]
            if len(data) != n * self._token_bytes["codes"]:
                raise _bad(self.path, f"chunk {i} has the wrong size (corrupted)")
            out["codes"] = np.frombuffer(data, dtype=dt).reshape((n,) + shape)
        return out

    def block(self, i: int) -> TraceBlock:
        """Chunk ``i`` as a :class:`TraceBlock` (codes unpacked)."""
        raw = self._read_checked(i)
        m = self.meta
        codes = unpack_codes(raw["codes"], m.bits, m.n_neurons)
        if codes.size and int(codes.max()) > len(m.levels):
            raise _bad(self.path, f"chunk {i} holds codes beyond the declared levels (corrupted)")
        return TraceBlock(self._chunks[i]["start"], raw["token_id"], raw["seq"], raw["phase"], codes, raw.get("experts"))

    def packed_block(self, i: int) -> PackedBlock:
        """Chunk ``i`` with its codes still packed (what the compiled access model reads)."""
        raw = self._read_checked(i)
        m = self.meta
        if len(m.levels) < (1 << m.bits) - 1:  # some bit patterns are not valid codes: look at them
            codes = unpack_codes(raw["codes"], m.bits, m.n_neurons)
            if codes.size and int(codes.max()) > len(m.levels):
                raise _bad(self.path, f"chunk {i} holds codes beyond the declared levels (corrupted)")
        return PackedBlock(self._chunks[i]["start"], raw["phase"], raw["codes"], raw.get("experts"), m.bits)

    def _read_checked(self, i: int) -> dict[str, np.ndarray]:
        raw = self._read_chunk(i)
        experts = raw.get("experts")
        if experts is not None and experts.size and int(experts.max()) >= self.meta.n_experts:
            raise _bad(self.path, f"chunk {i} routes to an expert id >= n_experts (corrupted)")
        return raw

    def iter_blocks(self) -> Iterator[TraceBlock]:
        for i in range(len(self._chunks)):
            yield self.block(i)

    def verify(self) -> None:
        """Read every chunk; raise :class:`InputError` on the first corrupted one."""
        for i in range(len(self._chunks)):
            self.block(i)

    # -- whole-trace small streams (token ids, sequence, phase, experts): cheap to hold
    def _load_small(self) -> dict[str, np.ndarray]:
        if self._small is None:
            parts: dict[str, list[np.ndarray]] = {"token_id": [], "seq": [], "phase": [], "experts": []}
            for i in range(len(self._chunks)):
                raw = self._read_chunk(i, with_codes=False)
                for k in parts:
                    if k in raw:
                        parts[k].append(raw[k])
            self._small = {k: np.concatenate(v) for k, v in parts.items() if v}
            if not self._small:
                self._small = {
                    "token_id": np.zeros(0, "<i4"),
                    "seq": np.zeros(0, "<i4"),
                    "phase": np.zeros(0, "u1"),
                }
        return self._small

    @property
    def token_id(self) -> np.ndarray:
        return self._load_small()["token_id"]

    @property
    def seq(self) -> np.ndarray:
        return self._load_small()["seq"]

    @property
    def phase(self) -> np.ndarray:
        return self._load_small()["phase"]

    @property
    def experts(self) -> np.ndarray | None:
        return self._load_small().get("experts")

    def codes(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Unpacked codes [n, L, K, N] for tokens ``[start, stop)``."""
        stop = self.meta.n_tokens if stop is None else stop
        if not 0 <= start <= stop <= self.meta.n_tokens:
            raise IndexError((start, stop))
        out = []
        for i, c in enumerate(self._chunks):
            cs, ce = c["start"], c["start"] + c["n_tokens"]
            if ce <= start or cs >= stop:
                continue
            b = self.block(i)
            out.append(b.codes[max(start, cs) - cs : min(stop, ce) - cs])
        if not out:
            m = self.meta
            return np.zeros((0, m.n_layers, m.routed, m.n_neurons), np.uint8)
        return np.concatenate(out)

    def active(self, level: int = 0, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Boolean activity [n, L, K, N] at replay level ``level`` for tokens ``[start, stop)``."""
        return self.codes(start, stop) >= (level + 1)


def load(path: str | Path) -> Trace:
    """Open a trace file (see :class:`Trace`)."""
    return Trace(path)


def require_shape(trace: Trace, model: str, n_layers: int, n_neurons: int, n_experts: int, top_k: int) -> None:
    """Raise a one-line :class:`InputError` if ``trace`` was not recorded for this model shape."""
    m = trace.meta
    have = (m.n_layers, m.n_neurons, m.n_experts, m.top_k)
    want = (n_layers, n_neurons, n_experts, top_k)
    if have != want:
        raise InputError(
            trace.path,
            "model",
            f"a trace of model {model} (layers, neurons, experts, top_k = {want}); this trace is {m.model} with {have}",
        )


def sequence_bounds(seq: Sequence[int] | np.ndarray) -> list[tuple[int, int]]:
    """[(start, stop)] of runs of equal sequence index."""
    seq = np.asarray(seq)
    if len(seq) == 0:
        return []
    cuts = np.flatnonzero(np.diff(seq)) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [len(seq)]])
    return list(zip(starts.tolist(), stops.tolist()))
