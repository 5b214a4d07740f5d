"""SmallThinker's MoE offloading engine (SJTU-IPADS/PowerInfer ``smallthinker``, arXiv 2507.20984;
docs/sources.md §D).

What stays in DRAM: attention, routers, norms, embedding and head, the KV cache, and a cache of
expert matrices. Every expert's gate, up and down matrix is stored separately in one bundle file
of 4 KiB-aligned Q4_0 matrices, and is read whole.

* **Cache.** One LRU of expert *matrices* shared by all layers (``MAX_N_CACHED``). Its capacity is
  ``max_cached_matrices``, or by default what the memory budget leaves after everything resident.
  With room for every matrix, all are loaded at start; otherwise the cache starts empty and the
  prompt's routing fills it first (prefill reads every expert it routes to).
* **Router before attention.** The model routes from the layer's input, so the chosen experts'
  missing matrices are read *while attention computes* (:class:`~pi2sim.engine.plan.Prefetched`);
  the FFN waits for what has not arrived.
* **Reads.** io_uring with ``O_DIRECT``, one I/O thread, queue depth 512 (the device's own queue
  depth bounds what is in flight), one request per matrix.
* **Compute.** ``threads`` (4 in every published run) on the fastest cores, a dynamic split. Inside
  an expert, ReGLU leaves neurons at zero: the gate matrix is computed whole (dense kernel) and the
  up/down rows of the active neurons only, gathered, at the device's sparse-kernel efficiency
  (``cpu.sparse_efficiency``, fitted to PowerInfer-2's points: the same PowerInfer code base's
  kernels). The active share per layer is the model's synthetic profile's
  (``traces/profiles/<model>.yaml``: an assumption for SmallThinker, TurboSparse's published
  sparsity for Mixtral), or ``active_share``.

The expert routing comes from the trace; for SmallThinker it is synthetic, with the repetition
statistics declared as assumptions in its profile. Dense models are refused (nothing to offload).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..engine.compute import CpuPool, pick_cores
from ..engine.plan import Compute, DecodePlan, Flash, Prefetched, PrefillPlan
from ..errors import InputError
from ..schema import spec_field
from . import register
from ._common import EngineRefused
from .base import AccessSummary, Policy
from .dense import cpu_prefill
from .memory import GB, RUNTIME_BYTES, MemoryPlan, budget_from

ALIGN = 4096  # bytes: every matrix of the bundle file starts and ends on a 4 KiB boundary (O_DIRECT)


@dataclass(frozen=True, kw_only=True)
class SmallThinkerOptions:
    threads: int = spec_field(default=4, lo=1, hi=16, help="compute threads (every published run: -t 4)")
    cores: str = spec_field(default="auto", help="'auto' (fastest cores) or core ids / cluster names")
    max_cached_matrices: int = spec_field(default=0, lo=0, hi=10_000_000, help="expert matrices the LRU holds (MAX_N_CACHED); 0: what the memory budget leaves")
    queue_depth: int = spec_field(default=512, lo=1, hi=4096, help="io_uring queue depth (the engine's 512)")
    active_share: float = spec_field(default=0.0, lo=0.0, hi=1.0, help="share of an expert's neurons active per token; 0: the model's profile")
    runtime: float = spec_field(default=RUNTIME_BYTES, unit="bytes", lo=0.0, hi=8e9, help="app memory besides weights, KV and the expert cache")


@dataclass
class ExpertAccess:
    """Clock-free result: per decode token and layer, the matrices touched and those read."""

    touched: np.ndarray  # [T, L] matrices needed
    missed: np.ndarray  # [T, L] matrices read from flash
    capacity: int
    total_matrices: int
    prompt_reads: int  # matrices the prompt's routing read
    evictions: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def hit_rate(self) -> float:
        t = float(self.touched.sum())
        return 1.0 - float(self.missed.sum()) / t if t else 1.0


def lru_replay(prompt: np.ndarray | None, decode: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """An LRU of matrices over routed experts ``[T, L, k]`` (matrices gate/up/down of each), shared
    by every layer. Returns (touched [T, L], missed [T, L], prompt reads, evictions)."""
    T, L, K = decode.shape
    cache: OrderedDict = OrderedDict()
    evictions = 0

    def touch(key) -> bool:
        nonlocal evictions
        if key in cache:
            cache.move_to_end(key)
            return True
        if capacity <= 0:
            return False
        if len(cache) >= capacity:
            cache.popitem(last=False)
            evictions += 1
        cache[key] = None
        return False

    prompt_reads = 0
    if prompt is not None:
        for tok in prompt:
            for l in range(L):
                for e in sorted(set(int(x) for x in tok[l])):
                    for m in range(3):
                        prompt_reads += 0 if touch((l, e, m)) else 1
    touched = np.zeros((T, L), np.int64)
    missed = np.zeros((T, L), np.int64)
    for t in range(T):
        for l in range(L):
            n = miss = 0
            for e in sorted(set(int(x) for x in decode[t, l])):
                for m in range(3):
                    n += 1
                    miss += 0 if touch((l, e, m)) else 1
            touched[t, l] = n
            missed[t, l] = miss
    return touched, missed, prompt_reads, evictions


@register
class SmallThinker(Policy):
    name = "smallthinker"
    summary = "SmallThinker's MoE engine: expert-matrix LRU shared by all layers, router before attention, experts read during attention"
    Options = SmallThinkerOptions
    default_quant = "q4_0"
    quant_formats = ("q4_0",)  # what the engine exports and runs
    needs_activity = False  # the routed experts only

    def __init__(self, ctx, options: SmallThinkerOptions):
        super().__init__(ctx, options)
        a = ctx.model.architecture
        if not a.is_moe:
            raise EngineRefused(None, "smallthinker", f"cannot run {ctx.model.name}: the engine offloads experts and this model has none (use dense, executorch, llamacpp)")
        d = ctx.device
        cores = pick_cores(d, options.cores, options.threads, what="cores")
        self.pool = CpuPool(cores, "dynamic", d.cpu.sparse_efficiency, d.cpu.barrier_s)
        others = [c for c in d.cores() if c.id not in {x.id for x in cores}]
        # the I/O thread: the fastest core left, or (every core computing) shares the slowest compute core
        self.io_core = max(others, key=lambda c: c.cluster.matvec_int4_bps) if others else cores[-1]
        self.sizes = ctx.sizes
        s = self.sizes
        self.matrix_bytes = math.ceil(a.ffn_neurons * a.hidden * s.bpw / ALIGN) * ALIGN
        self.total_matrices = a.layers * a.experts * 3
        self._mem: MemoryPlan | None = None

    def active_share(self) -> np.ndarray:
        """[L] share of an expert's neurons active per token."""
        a = self.ctx.model.architecture
        if self.opt.active_share > 0:
            return np.full(a.layers, self.opt.active_share)
        from ..trace.synth import layer_sparsities, load_profile

        try:
            prof, _ = load_profile(self.ctx.model.sparsity.profile or self.ctx.model.name)
        except InputError:
            return np.ones(a.layers)  # no profile: every neuron computed
        if prof.activation != "zero" or prof.sparsity.mean is None:
            return np.ones(a.layers)
        return 1.0 - layer_sparsities(prof.sparsity, a.layers)

    def memory(self) -> MemoryPlan:
        if self._mem is not None:
            return self._mem
        ctx, s = self.ctx, self.sizes
        resident = {"non_expert_weights": s.non_ffn(), "kv_cache": s.kv_cache(ctx.context_tokens),
                    "activations": s.activations(ctx.prompt_tokens), "runtime": self.opt.runtime}
        fixed = sum(resident.values())
        experts_bytes = self.total_matrices * self.matrix_bytes
        if ctx.memory_gb is None and ctx.ffn_offload is None:
            budget, avail = ctx.device.dram.app_usable_bytes, ctx.device.dram.app_usable_bytes - fixed
        else:
            budget, avail = budget_from(ctx.memory_gb, ctx.ffn_offload, fixed, experts_bytes, ctx.device.dram.app_usable_bytes, ctx.device.name)
        if avail < 0:
            raise EngineRefused(None, "smallthinker", f"cannot load: the non-expert weights, KV cache and buffers need {fixed / GB:.2f} GB, the budget is {budget / GB:.2f} GB")
        fit = int(min(self.total_matrices, avail // self.matrix_bytes))
        cap = self.opt.max_cached_matrices or fit
        if cap > fit:
            raise EngineRefused(None, "smallthinker max_cached_matrices",
                                f"cannot hold {cap} matrices of {self.matrix_bytes / 2**20:.2f} MiB: {budget / GB:.2f} GB leaves room for {fit}")
        cap = min(cap, self.total_matrices)
        plan = MemoryPlan(budget=budget, components=resident, neuron_cache=cap * self.matrix_bytes, cache_units=cap)
        if ctx.memory_gb is None and ctx.ffn_offload is None:
            plan.condition = "app memory"
        plan.notes.append(f"expert cache: {cap} of {self.total_matrices} matrices ({100 * cap / self.total_matrices:.0f}%), {self.matrix_bytes / 2**20:.2f} MiB each")
        self._mem = plan
        return plan

    def access(self, workload, memory: MemoryPlan) -> ExpertAccess:
        from ..trace import PHASE_DECODE

        if workload is None or workload.experts() is None:
            raise InputError(None, "trace", "a trace with routed experts for an MoE model")
        trace = workload.trace
        prompt = trace.experts[np.flatnonzero(trace.phase != PHASE_DECODE)] if trace.experts is not None else None
        if memory.cache_units >= self.total_matrices:  # room for every matrix: all loaded at start, nothing read while decoding
            touched, missed, pr, ev = lru_replay(None, workload.experts(), 0)
            return ExpertAccess(touched, np.zeros_like(missed), memory.cache_units, self.total_matrices, 0, 0)
        touched, missed, pr, ev = lru_replay(prompt, workload.experts(), memory.cache_units)
        return ExpertAccess(touched, missed, memory.cache_units, self.total_matrices, pr, ev)

    def access_summary(self, acc: ExpertAccess) -> AccessSummary:
        T = max(1, acc.touched.shape[0])
        return AccessSummary(hit_rate=acc.hit_rate, details={
            "cached_matrices": acc.capacity, "total_matrices": acc.total_matrices, "matrix_bytes": float(self.matrix_bytes),
            "matrices_read_per_token": float(acc.missed.sum() / T), "prompt_matrix_reads": acc.prompt_reads, "expert_cache_evictions": acc.evictions,
        })

    def decode_plan(self, acc: ExpertAccess, memory: MemoryPlan) -> DecodePlan:
        ctx, s = self.ctx, self.sizes
        a = ctx.model.architecture
        T, L = acc.touched.shape
        dtype = ctx.quant.compute_dtype
        kv = s.kv_per_token_layer(ctx.context_lengths()[:, None])
        attn = Compute("attention", "cpu", s.attention_per_layer() + s.router_per_layer() + kv, "matvec", self.pool, dtype)
        span = float(self.total_matrices * self.matrix_bytes)
        read = Flash("expert_reads", acc.missed.astype(np.float64), float(self.matrix_bytes), span, self.io_core.core_class, (self.io_core.id,),
                     qd=self.opt.queue_depth)
        matrix = a.ffn_neurons * a.hidden * s.bpw
        experts = acc.touched / 3.0  # distinct experts per token and layer
        share = np.broadcast_to(self.active_share()[None, :], (T, L))
        stages = [
            Prefetched("attention+prefetch", attn, read),
            # the gate matrix whole (it decides which neurons are active), then the active neurons' up/down rows, gathered
            Compute("ffn_gate", "cpu", experts * matrix, "matvec", self.pool, dtype),
            Compute("ffn_up_down", "cpu", experts * matrix * 2.0 * share, "sparse", self.pool, dtype, density=np.ascontiguousarray(share)),
        ]
        token = [Compute("lm_head", "cpu", np.full(T, s.lm_head()), "matvec", self.pool, dtype)]
        reads = acc.missed.sum(axis=1).astype(np.float64)
        plan = DecodePlan(T, L, stages, token, flash_bytes=reads * self.matrix_bytes, flash_reads=reads)
        plan.validate()
        return plan

    def prefill_plan(self, memory: MemoryPlan, access: ExpertAccess | None = None) -> PrefillPlan:
        a = self.ctx.model.architecture
        share = memory.cache_units / self.total_matrices
        return cpu_prefill(self.ctx, self.pool, resident_share=share, bundle_bytes=3 * self.matrix_bytes / a.ffn_neurons)
