"""Which trace tokens a run replays, and the offline neuron profile a planner would have.

A run replays the first ``decode_tokens`` decode tokens of its trace (sequences of a recorded
trace follow each other, like turns of one chat; the neuron cache persists across them). Prompt
processing is dense (PowerInfer-2 v3 §2.2, §7.2.2: the union of a prompt's active neurons is
nearly the whole FFN), so only the prompt *length* matters for prefill.

The hot-neuron profile is what PowerInfer-2's offline profiler measures (v3 §5: 10M+ tokens of
other text), never the replayed tokens themselves:

* synthetic traces: the generator's long-run firing probability of every neuron;
* recorded traces: frequencies over the trace's decode tokens *outside* the replayed window
  (if fewer than 256 such tokens exist the whole trace is used and the report says so).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import memo
from ..specs.model import ModelSpec
from ..trace import PHASE_DECODE, Trace, load, require_shape
from ..trace.format import pack_codes, packed_width, unpack_codes

MIN_PROFILE_TOKENS = 256


@dataclass
class Workload:
    trace: Trace
    trace_path: Path
    model: ModelSpec
    level: int  # replay level index
    decode_index: np.ndarray  # trace token indices replayed, in order
    prompt_tokens: int
    notes: list[str] = field(default_factory=list)
    union_key: str | None = None  # set by a union of several sequences' workloads: part of every memo key of its replay

    @property
    def n_tokens(self) -> int:
        return len(self.decode_index)

    def steps(self) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """(t, active [L, K, N] bool, experts [L, K] or None) for each replayed decode token."""
        want = self.decode_index
        if len(want) == 0:
            return
        pos = 0
        for block in self.trace.iter_blocks():
            start, stop = block.start, block.start + len(block)
            while pos < len(want) and want[pos] < stop:
                i = int(want[pos]) - start
                if i >= 0:
                    act = block.codes[i] >= (self.level + 1)
                    exp = None if block.experts is None else block.experts[i]
                    yield pos, act, exp
                pos += 1
            if pos >= len(want):
                return

    def packed_blocks(self) -> Iterator["ReplayBlock"]:
        """The replayed tokens block by block, codes still packed (the compiled access model's input)."""
        for chunk, rows, positions in self.replay_chunks():
            yield self.replay_block(chunk, rows, positions)

    def replay_chunks(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """``(chunk, rows, positions)`` of every trace chunk that holds replayed tokens, in order:
        the rows replayed within the chunk and their decode positions (nothing is read, so the
        chunks can then be read and replayed in parallel)."""
        want = self.decode_index
        out, pos = [], 0
        for i in range(self.trace.n_chunks):
            if pos >= len(want):
                break
            start, stop = self.trace.chunk_tokens(i)
            n = int(np.searchsorted(want[pos:], stop))  # replayed tokens in this chunk (want is ascending)
            if n == 0:
                continue
            out.append((i, (want[pos : pos + n] - start).astype(np.int64), np.arange(pos, pos + n, dtype=np.int64)))
            pos += n
        return out

    def replay_block(self, chunk: int, rows: np.ndarray, positions: np.ndarray) -> "ReplayBlock":
        """One of :meth:`replay_chunks` read (safe from several threads at once)."""
        words, experts, bits = self._words(chunk)
        return ReplayBlock(rows, positions, words, experts, bits)

    def _words(self, i: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Chunk ``i``'s packed codes as words, its experts and code width; memoised in-process on
        the trace file, so the points of a sweep decompress each chunk once."""
        def read():
            blk = self.trace.packed_block(i)
            experts = blk.experts if blk.experts is not None else np.zeros((len(blk), 1, 1), np.uint8)
            return as_words(blk.packed), np.ascontiguousarray(experts), int(blk.bits)

        return memo.TRACE_WORDS.get(memo.digest("trace-words", self.trace_path, i), read)

    def experts(self) -> np.ndarray | None:
        e = self.trace.experts
        return None if e is None else e[self.decode_index]


def as_words(packed: np.ndarray) -> np.ndarray:
    """Packed codes [..., W] bytes as little-endian 64-bit words [..., ceil(W / 8)] (zero padded),
    the unit the compiled access model scans."""
    pad = (-packed.shape[-1]) % 8
    if pad:
        packed = np.concatenate([packed, np.zeros(packed.shape[:-1] + (pad,), np.uint8)], axis=-1)
    words = np.ascontiguousarray(packed).view("<u8")
    return words if words.dtype.isnative else words.astype(np.uint64)


@dataclass
class ReplayBlock:
    rows: np.ndarray  # rows of the trace block replayed, in order
    positions: np.ndarray  # their decode positions in the run
    packed: np.ndarray  # [n, L, K, W64] packed codes of the whole block, as 64-bit words
    experts: np.ndarray  # [n, L, K] routed experts ([n, 1, 1] zeros for dense models)
    bits: int


def open_workload(trace_path: Path, model: ModelSpec, decode_tokens: int, prompt_tokens: int, sparsity: float | None) -> Workload:
    trace = load(trace_path)
    a = model.architecture
    require_shape(trace, model.name, a.layers, a.ffn_neurons, a.experts, a.top_k)
    level_sparsity = sparsity if sparsity is not None else model.sparsity.level
    if trace.meta.activation_kind == "zero":
        if sparsity is not None:
            raise InputError(trace.path, "sparsity", "no --set sparsity for a ReLU-family trace (its activity is what the model does)", sparsity)
        level = 0
    else:
        level = trace.meta.level_index(level_sparsity if level_sparsity is not None else trace.meta.levels[0].sparsity)
    decode = np.flatnonzero(trace.phase == PHASE_DECODE)
    if len(decode) < decode_tokens:
        raise InputError(trace.path, "decode_tokens", f"at most the trace's {len(decode)} decode tokens", decode_tokens)
    return Workload(trace, Path(trace_path), model, level, decode[:decode_tokens], prompt_tokens)


def neuron_frequencies(w: Workload) -> np.ndarray:
    """Offline profile: firing frequency of every neuron, [L, E, N] (within its expert).
    Memoised in-process on the trace file, level and replayed tokens; read-only."""
    key = memo.digest("profile", w.trace_path, w.level, w.decode_index)
    # a recorded trace's profile reads the whole file (1.2 s for the bundled SmolLM2 trace): kept
    # on disk too; a synthetic one is memoised on its calibration inside _neuron_frequencies
    if w.trace.meta.provenance.get("kind") == "synthetic":
        return memo.PROFILES.get(key, lambda: _neuron_frequencies(w))
    freqs, notes = memo.PROFILES.get(key, lambda: memo.persisted(key, lambda: _profile_with_notes(w)))
    for note in filter(None, str(notes).split("\n")):  # every run says how its profile was measured
        if note not in w.notes:
            w.notes.append(note)
    return freqs


def _profile_with_notes(w: Workload):
    """The recorded trace's profile and the notes computing it left (kept with it on disk)."""
    before = len(w.notes)
    freqs = _neuron_frequencies(w)
    return freqs, "\n".join(w.notes[before:])


def hottest_first(freqs: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Neuron indices by descending frequency (stable), flat or along ``axis``; memoised, read-only."""
    key = memo.digest("order", freqs, axis)
    if axis is None:
        from .kernel import argsort_desc_stable

        return memo.PROFILES.get(key, lambda: memo.persisted(key, lambda: argsort_desc_stable(freqs.reshape(-1))))
    return memo.PROFILES.get(key, lambda: memo.persisted(key, lambda: np.argsort(-freqs, axis=axis, kind="stable")))


def _neuron_frequencies(w: Workload) -> np.ndarray:
    m = w.trace.meta
    prov = m.provenance
    if prov.get("kind") == "synthetic":
        from ..trace.synth import population_frequencies

        cal = prov.get("calibration", {})
        if "mu" not in cal:
            raise InputError(w.trace.path, "provenance.calibration", "a synthetic trace from generator version 2 or later (re-generate it)")
        import json

        # a function of the profile's calibration alone (not of the replayed tokens): kept on disk
        key = memo.digest("population_frequencies", json.dumps(cal, sort_keys=True), m.model, m.n_layers, m.n_neurons, m.n_experts, w.level)
        return memo.persisted(key, lambda: population_frequencies(cal, m.model, m.n_layers, m.n_neurons, m.n_experts)[w.level].copy())
    decode = np.flatnonzero(w.trace.phase == PHASE_DECODE)
    replayed = set(w.decode_index.tolist())
    outside = np.array([i for i in decode if i not in replayed], dtype=np.int64)
    if len(outside) < MIN_PROFILE_TOKENS:
        outside = decode
        w.notes.append(f"hot-neuron profile measured in-sample: only {len(decode) - len(w.decode_index)} decode tokens lie outside the replayed window")
    counts = np.zeros((m.n_layers, m.n_experts, m.n_neurons), np.float64)
    routed = np.zeros((m.n_layers, m.n_experts), np.float64)
    sel = np.zeros(m.n_tokens, bool)
    sel[outside] = True
    for block in w.trace.iter_blocks():
        rows = np.flatnonzero(sel[block.start : block.start + len(block)])
        if len(rows) == 0:
            continue
        act = block.codes[rows] >= (w.level + 1)  # [n, L, K, N]
        if block.experts is None:
            counts[:, 0, :] += act[:, :, 0, :].sum(axis=0)
            routed[:, 0] += len(rows)
        else:
            ex = block.experts[rows]  # [n, L, K]
            for k in range(ex.shape[2]):
                for l in range(m.n_layers):
                    np.add.at(counts[l], ex[:, l, k], act[:, l, k, :])
                    np.add.at(routed[l], ex[:, l, k], 1)
    return (counts / np.maximum(routed, 1)[:, :, None]).astype(np.float32)


@dataclass
class UnionWorkload(Workload):
    """Several sequences decoded together (Best-of-N): at decode position p a neuron's code is
    the largest of the ``batch[p]`` sequences still alive (the first ones of ``members``), so it is
    active at a level if any alive sequence fires it there. The access model replays the union as
    one workload: the cache serves, and the predictor predicts, what any alive sequence needs.
    The members are the same model's synthetic traces of other seeds, or the sequences of one
    recorded trace; dense models only (the candidates' experts would differ)."""

    members: list[Workload] = field(default_factory=list)
    batch: np.ndarray = field(default_factory=lambda: np.ones(0))

    def _rows_of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Member ``i``'s (chunk, row) of every decode position (computed once)."""
        cache = self.__dict__.setdefault("_where", {})
        if i not in cache:
            m = self.members[i]
            chunk_of = np.zeros(m.n_tokens, np.int64)
            row_of = np.zeros(m.n_tokens, np.int64)
            for chunk, rows, positions in m.replay_chunks():
                chunk_of[positions], row_of[positions] = chunk, rows
            cache[i] = (chunk_of, row_of)
        return cache[i]

    def _member_words(self, i: int, positions: np.ndarray) -> np.ndarray:
        """Member ``i``'s packed words at ``positions`` (its tokens may lie in other chunks)."""
        chunk_of, row_of = self._rows_of(i)
        m = self.members[i]
        out = None
        for c in np.unique(chunk_of[positions]):
            sel = chunk_of[positions] == c
            words = m._words(int(c))[0]
            if out is None:
                out = np.empty((len(positions),) + words.shape[1:], words.dtype)
            out[sel] = words[row_of[positions[sel]]]
        return out

    def replay_block(self, chunk: int, rows: np.ndarray, positions: np.ndarray) -> "ReplayBlock":
        first = self.members[0].replay_block(chunk, rows, positions)
        words = first.packed[rows].copy()
        alive = self.batch[positions]
        bits = first.bits
        n_neurons = self.model.architecture.ffn_neurons
        for i in range(1, len(self.members)):
            live = alive > i
            if not live.any():
                continue
            other = self._member_words(i, positions[live])
            if bits == 1:
                words[live] |= other
            else:  # the union at every level: the larger code, neuron by neuron
                width = packed_width(n_neurons, bits)
                a = unpack_codes(words[live].view(np.uint8)[..., :width], bits, n_neurons)
                b = unpack_codes(other.view(np.uint8)[..., :width], bits, n_neurons)
                words[live] = as_words(pack_codes(np.maximum(a, b), bits))
        block = first.packed.copy()  # the block's shape, as every ReplayBlock (callers index it by ``rows``)
        block[rows] = words
        return ReplayBlock(rows, positions, block, first.experts, bits)


def union_workload(members: list[Workload], batch: np.ndarray) -> UnionWorkload:
    """The union of ``members`` (one per sequence, the same model and number of replayed tokens)
    with ``batch[p]`` of them alive at decode position p."""
    w0 = members[0]
    for m in members:
        if m.n_tokens != w0.n_tokens:
            raise InputError(m.trace.path, "decode_tokens", f"{w0.n_tokens} replayed tokens, as the other sequences'", m.n_tokens)
        if m.level != w0.level or m.trace.meta.activation_kind != w0.trace.meta.activation_kind:
            raise InputError(m.trace.path, "levels", "the same activation kind and replay level as the other sequences")
    if w0.model.architecture.is_moe:
        raise InputError(w0.model.path, "architecture.experts", "a dense model for Best-of-N (the union of the candidates' experts is not modelled)")
    key = memo.digest("union", *[m.trace_path for m in members], *[m.decode_index for m in members], batch)
    return UnionWorkload(w0.trace, w0.trace_path, w0.model, w0.level, w0.decode_index, w0.prompt_tokens, list(w0.notes), key,
                         members=members, batch=np.asarray(batch, dtype=np.float64))


def sequence_workloads(trace_path: Path, model: ModelSpec, decode_tokens: int, prompt_tokens: int, sparsity: float | None, n: int) -> list[Workload]:
    """The first ``n`` sequences of a recorded trace with at least ``decode_tokens`` decode tokens,
    each as its own workload (Best-of-N on a trace's own sequences)."""
    base = open_workload(trace_path, model, decode_tokens, prompt_tokens, sparsity)
    t = base.trace
    out = []
    for s in np.unique(t.seq):
        idx = np.flatnonzero((t.seq == s) & (t.phase == PHASE_DECODE))
        if len(idx) >= decode_tokens:
            out.append(Workload(t, base.trace_path, model, base.level, idx[:decode_tokens], prompt_tokens))
        if len(out) == n:
            return out
    raise InputError(trace_path, "seq", f"{n} sequences of at least {decode_tokens} decode tokens for --best-of {n} (this trace has {len(out)})", n)
