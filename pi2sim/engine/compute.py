"""Compute units: CPU thread pools, the NPU, the GPU.

A CPU kernel streams weight bytes. One core does dense INT4 matrix-vector work at its
``matvec_int4`` rate (weight bytes/s); sparse kernels (gathered rows of predicted neurons) run
at ``sparse_efficiency`` of that. A pool of threads on chosen cores splits the work:

* ``dynamic``: work is handed out in small pieces (PowerInfer-2's neuron clusters), so the pool
  runs at the sum of its cores' rates;
* ``static``: every thread gets an equal share (llama.cpp's row split), so the slowest core sets
  the pace: ``n * min(rate)``. This is why adding little cores slows llama.cpp on Snapdragon
  8 Gen 3 (arXiv 2410.03613 §V-C).
* ``chunked``: the work is cut into ``CHUNKS_PER_THREAD`` equal chunks per thread that threads
  claim as they finish (llama.cpp since b6889, PR #16833: ``4 * nth`` chunks of a repacked matmul;
  ggml's generic mul_mat since b2894). The pool runs at the sum of its cores' rates, less the
  tail: the last chunks on a slow core keep the others waiting at the barrier
  (:func:`chunked_efficiency` plays the claiming out).

Sparse kernels gather the rows of predicted neurons. Per byte they are slower than dense ones,
and the more so the fewer rows they compute: ``cpu.sparse_efficiency`` is the relative speed at
10% of a layer's rows, and it grows as ``(share / 0.1) ** cpu.sparse_density_exponent`` up to
dense speed (PowerInfer-2's ~10%-active models run at about a third of dense speed per byte,
while PC-era engines on a ~50%-active SiLU model stream at the DRAM limit, PI2 Table 2).

The pool's rate is its *demand* on DRAM; the bus (:mod:`pi2sim.engine.dram`) may grant less.
Matrix-matrix work (prefill) is compute-bound at ``gemm`` operations/s per core.

The NPU runs static graphs: a dense matrix-vector pass streams weights at up to ``matvec`` (in
practice capped by its DRAM share); a prefill GEMM takes ``2 * params * tokens / gemm`` with the
prompt padded to a multiple of ``graph_tokens``; each graph execution costs ``invocation``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import InputError
from ..specs.device import Core, DeviceSpec


SPARSE_REF_DENSITY = 0.10  # density at which cpu.sparse_efficiency is defined


def sparse_factor(density, exponent: float, efficiency: float):
    """Multiplier on the pool's sparse rate for a given share of rows computed (vectorised):
    ``min(1/efficiency, (density / 0.1) ** exponent)``, i.e. efficiency rises from its value at
    10% density towards dense speed (1.0) as more rows are computed."""
    import numpy as np

    d = np.maximum(np.asarray(density, dtype=np.float64), 1e-6)
    return np.minimum(1.0 / efficiency, (d / SPARSE_REF_DENSITY) ** exponent)


def batched_rate(rate, dense_rate, batch, further_share: float = 1.0):
    """Weight bytes/s a kernel streams when each weight serves ``batch`` sequences (vectorised):
    it loads (gathers) a row once at ``rate`` and computes it for each further sequence at
    ``further_share`` of a dense pass's cost, ``1 / (1/rate + (batch - 1) * further_share /
    dense_rate)``; with ``further_share`` 1 (``cpu.batch_compute_share``'s default) a dense
    kernel's is ``rate / batch``."""
    if batch is None:
        return rate
    b = np.asarray(batch, dtype=np.float64)
    return 1.0 / (1.0 / np.asarray(rate, dtype=np.float64) + (b - 1.0) * further_share / np.asarray(dense_rate, dtype=np.float64))


CHUNKS_PER_THREAD = 4  # llama.cpp's repack and flash-attention chunking (PRs #16833, #16829): 4 chunks per thread


@lru_cache(maxsize=4096)
def chunked_efficiency(rates: tuple[float, ...], chunks_per_thread: int = CHUNKS_PER_THREAD) -> float:
    """Share of the summed rate a chunked pool achieves: ``n * chunks_per_thread`` equal chunks,
    thread ``i`` starting on chunk ``i`` and each taking the next unclaimed chunk when it finishes
    (an atomic counter, ggml_threadpool_chunk_add); the op ends when the last thread does."""
    import heapq

    n = len(rates)
    chunks = n * chunks_per_thread
    size = 1.0 / chunks
    free = [(size / r, i) for i, r in enumerate(rates)]  # (time the thread finishes its chunk, thread)
    heapq.heapify(free)
    end = 0.0
    for _ in range(chunks - n):
        t, i = heapq.heappop(free)
        heapq.heappush(free, (t + size / rates[i], i))
    end = max(t for t, _ in free)
    return (1.0 / sum(rates)) / end


@dataclass(frozen=True)
class CpuPool:
    cores: tuple[Core, ...]
    scheduling: str  # "dynamic" | "static" | "chunked"
    sparse_efficiency: float
    barrier_s: float

    @property
    def n(self) -> int:
        return len(self.cores)

    def _combine(self, rates: list[float]) -> float:
        if not rates:
            return 0.0
        if self.scheduling == "chunked":
            return sum(rates) * chunked_efficiency(tuple(rates))
        return sum(rates) if self.scheduling == "dynamic" else len(rates) * min(rates)

    def matvec_rate(self, dtype: str, sparse: bool = False) -> float:
        """Weight bytes/s the pool streams through a matrix-vector kernel (its DRAM demand)."""
        r = self._combine([c.matvec_bps(dtype) for c in self.cores])
        return r * (self.sparse_efficiency if sparse else 1.0)

    def gemm_rate(self, dtype: str) -> float:
        return self._combine([c.gemm_ops(dtype) for c in self.cores])

    def memcpy_rate(self) -> float:
        return self._combine([c.cluster.memcpy_bps for c in self.cores])

    def ids(self) -> list[str]:
        return [c.id for c in self.cores]


def pick_cores(device: DeviceSpec, spec: str, n: int | None, exclude: tuple[str, ...] = (), what: str = "compute_cores") -> tuple[Core, ...]:
    """Resolve a core selection.

    ``spec`` is ``auto`` (the ``n`` fastest cores not in ``exclude``, by INT4 matvec rate), a
    comma-separated list of core ids (``perf_hi0,perf_hi1``) or of cluster names (``perf_hi``,
    meaning all its cores, in order).
    """
    cores = device.cores()
    by_id = {c.id: c for c in cores}
    clusters = {c.name for c in device.cpu.clusters}
    if spec == "auto":
        pool = [c for c in cores if c.id not in exclude]
        pool.sort(key=lambda c: -c.cluster.matvec_int4_bps)
        if n is None:
            n = len(pool)
        if n > len(pool):
            raise InputError(None, what, f"at most {len(pool)} compute threads on {device.name} (one core per thread)", n)
        return tuple(pool[:n])
    chosen: list[Core] = []
    for tok in [t.strip() for t in spec.split(",") if t.strip()]:
        if tok in by_id:
            chosen.append(by_id[tok])
        elif tok in clusters:
            chosen.extend(c for c in cores if c.cluster.name == tok)
        else:
            raise InputError(None, what, f"core ids or cluster names of {device.name} ({', '.join(sorted(by_id))})", tok)
    if len({c.id for c in chosen}) != len(chosen):
        raise InputError(None, what, "each core at most once", spec)
    overlap = [c.id for c in chosen if c.id in exclude]
    if overlap:
        raise InputError(None, what, f"cores other than the I/O core ({', '.join(exclude)})", spec)
    if n is not None and n != len(chosen):
        raise InputError(None, what, f"{n} cores (compute_threads)", spec)
    if not chosen:
        raise InputError(None, what, "at least one core", spec)
    return tuple(chosen)
