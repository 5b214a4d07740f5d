"""The work plan: what a policy asks the timing engine to execute.

A policy turns specs and access results into a plan; every tier of the engine (analytic,
layer-level SimPy, cluster-level SimPy) executes the same plan, so policies never implement
timing themselves. Amounts are numpy arrays over decode tokens and layers ``[T, L]`` (or
``[T]`` for per-token stages), which keeps the analytic tier vectorised.

Stage kinds:

* :class:`Compute`: a kernel on a CPU pool, the NPU or the GPU (``matvec`` / ``sparse`` stream
  weight bytes, ``gemm`` is operations, ``memcpy`` moves bytes, ``cpu_seconds`` is plain CPU
  time split over the pool's threads); ``parallel`` runs a second
  kernel on another unit at the same time (CPU + NPU split), the stage ending when both end.
* :class:`Flash`: reads that block the next stage (e.g. LLM in a Flash's parallel reads).
* :class:`NeuronPipeline`: the FFN of a sparse, partly cached layer: CPU work on neurons whose
  weights are in DRAM ("hit") and on neurons read from flash ("miss"), with the flash requests,
  executed in one of four overlap modes (``cluster``: PowerInfer-2's neuron-cluster pipeline,
  one I/O thread; ``matrix``: overlap inside a matrix, barrier between matrices; ``sync``: the
  compute threads block on their own reads; ``serial``: one asynchronous reader fetches all the
  layer's missing neurons at full queue depth, then the layer computes).
* :class:`Faults`: demand paging (mmap): compute that stalls on page faults served by the
  compute threads themselves.

Each stage names a breakdown category for the critical path: ``compute``, ``io`` (exposed flash
time) or ``other`` (barriers, memory management, fixed costs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .compute import CpuPool

Unit = Literal["cpu", "npu", "gpu"]
Op = Literal["matvec", "sparse", "gemm", "memcpy", "cpu_seconds"]


@dataclass
class Compute:
    name: str
    unit: Unit
    work: np.ndarray  # bytes (matvec/sparse/memcpy), operations (gemm) or seconds (cpu_seconds), per [T, L] or [T]
    op: Op = "matvec"
    pool: CpuPool | None = None  # CPU stages
    dtype: str = "int4"
    category: str = "compute"
    fixed_s: float = 0.0  # fixed cost per execution (NPU invocation, kernel launch)
    bytes_for_gemm: np.ndarray | None = None  # weight bytes a gemm streams (bandwidth floor)
    gemm_factor: float = 1.0  # NPU mixed-precision factor etc.
    parallel: "Compute | None" = None
    barrier: bool = True  # CPU pool fork-join after the kernel
    density: np.ndarray | None = None  # sparse: share of the layer's rows computed (sets kernel efficiency)


@dataclass
class Flash:
    name: str
    requests: np.ndarray  # request count per [T, L] or [T]
    size: float  # bytes per request
    span: np.ndarray | float  # address span the requests cover (bytes)
    issuer_class: str  # core class paying the issue cost
    issuer_cores: tuple[str, ...]  # for utilisation accounting
    qd: int = 32
    n_issuers: int = 1
    sequential: bool = False
    category: str = "io"


@dataclass
class NeuronPipeline:
    name: str
    mode: Literal["cluster", "matrix", "sync", "serial"]
    pool: CpuPool
    dtype: str
    # CPU work, bytes streamed by the sparse kernel
    gate_hit_bytes: np.ndarray
    gate_miss_bytes: np.ndarray
    ud_hit_bytes: np.ndarray
    ud_miss_bytes: np.ndarray
    # neuron counts (for clustering and tails)
    gate_hit_n: np.ndarray
    gate_miss_n: np.ndarray
    ud_hit_n: np.ndarray
    ud_miss_n: np.ndarray
    # flash requests
    gate_reqs: np.ndarray
    ud_reqs: np.ndarray
    gate_req_size: float  # bytes per Gate-phase request
    ud_req_size: float  # bytes per Up/Down-phase request
    span: np.ndarray | float
    io_core: str  # the I/O thread's core (cluster / matrix modes)
    io_class: str
    cluster_neurons: int = 32
    gate_bytes_per_neuron: float = 0.0
    ud_bytes_per_neuron: float = 0.0
    two_phase: bool = True  # Up/Down reads wait for the Gate result
    parallel: Compute | None = None  # NPU hot rows (hybrid decode)
    rows_total: np.ndarray | float = 0.0  # rows a dense pass over the layer's (routed) FFN would compute
    io_qd: int | None = None  # requests the reader keeps in flight (None: the device queue depth)
    sync_inflight: int = 1  # sync mode, one-phase: requests of one neuron a blocked thread issues together
    category: str = "compute"


@dataclass
class Faults:
    """Dense compute over tensors whose missing pages fault in synchronously (mmap)."""

    name: str
    pool: CpuPool
    dtype: str
    work: np.ndarray  # weight bytes computed
    faults: np.ndarray  # major faults (each a read of ``fault_bytes``)
    fault_bytes: float
    span: np.ndarray | float
    fault_cpu_s: float  # CPU path of one fault
    sequential: bool = True
    category: str = "compute"


Stage = Compute | Flash | NeuronPipeline | Faults


@dataclass
class DecodePlan:
    """Per-layer stages (run in order for every layer of every token) and per-token stages."""

    n_tokens: int
    n_layers: int
    layer_stages: list[Stage]
    token_stages: list[Stage] = field(default_factory=list)
    flash_bytes: np.ndarray | None = None  # [T] bytes read from flash (for reporting)
    flash_reads: np.ndarray | None = None  # [T] requests
    dram_resident_bytes: np.ndarray | None = None  # [T, L] DRAM the engine holds during each layer (timelines, checks)

    def validate(self) -> None:
        T, L = self.n_tokens, self.n_layers
        for st in self.layer_stages:
            for name, arr in _arrays(st):
                if np.shape(arr) not in ((T, L), (), (1,)):
                    raise ValueError(f"stage {st.name}: {name} has shape {np.shape(arr)}, expected {(T, L)}")
        for st in self.token_stages:
            for name, arr in _arrays(st):
                if np.shape(arr) not in ((T,), (), (1,)):
                    raise ValueError(f"token stage {st.name}: {name} has shape {np.shape(arr)}, expected {(T,)}")


@dataclass
class PrefillPlan:
    """Layer-by-layer prefill: per layer, weights to stream from flash (by the loader core, for
    the next layer while this one computes when ``pipelined``) and the dense compute."""

    n_layers: int
    prompt_tokens: int
    load: Flash | None  # per layer [L]; None if everything is resident
    compute: list[Compute]  # per layer [L] each, run in order within a layer
    head: list[Compute]  # once, after the last layer
    pipelined: bool = True


def value_at(arr, t: int, l: int | None) -> float:
    """A stage amount for token ``t`` and layer ``l`` (``l`` None: a per-token stage); amounts are
    scalars, [T] or [T, L] arrays."""
    a = np.asarray(arr)
    if a.ndim == 0:
        return float(a)
    if l is None or a.ndim == 1:
        return float(a[t])
    return float(a[t, l])


def _arrays(st: Stage):
    for name, v in vars(st).items():
        if isinstance(v, np.ndarray):
            yield name, v
        if isinstance(v, Compute):
            yield from ((f"{name}.{n}", a) for n, a in _arrays(v))
