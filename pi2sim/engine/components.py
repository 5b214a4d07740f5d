"""What every timing tier shares: the device's component models, a stage's time, and how stage
times compose into token latencies.

:class:`Components` bundles the UFS, DRAM and processor models of one device (the facade every
tier and the closed forms use); :class:`StageTime` is one stage's duration and its split, busy
times and DRAM bytes, per token and layer; :func:`compose` sums a plan's stage times into a
:class:`~pi2sim.engine.result.TimingResult`. The tiers differ in how they obtain stage times:
closed forms (:mod:`pi2sim.engine.analytic`), SimPy (:mod:`pi2sim.engine.des`) or the compiled
event loop (:mod:`pi2sim.engine.cluster`).

The stage kinds (:mod:`pi2sim.engine.stages`) build on this module, so it names them only in
words: ``c`` is a :class:`~pi2sim.engine.stages.compute.Compute` stage, ``p`` a
:class:`~pi2sim.engine.stages.neuron_pipeline.NeuronPipeline`, ``plan`` a
:class:`~pi2sim.engine.plan.DecodePlan`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..specs.device import DeviceSpec
from .compute import CpuPool, batched_rate, sparse_factor
from .dram import DramModel
from .result import TimingResult
from .ufs import UfsModel


@dataclass
class StageTime:
    total: np.ndarray
    compute: np.ndarray
    io: np.ndarray
    other: np.ndarray
    busy: dict[str, np.ndarray]  # resource -> busy seconds (same shape)
    dram: dict[str, np.ndarray]  # agent -> bytes


class Components:
    """Device component models shared by the tiers."""

    def __init__(self, device: DeviceSpec):
        self.device = device
        self.ufs = UfsModel(device.storage)
        self.dram = DramModel(device.dram)

    # --- demands (bytes/s a unit wants to stream)
    def demand(self, c):
        d = self.device
        batch = getattr(c, "batch", None)
        if c.unit == "cpu":
            assert c.pool is not None
            if c.op == "memcpy":
                return c.pool.memcpy_rate()
            r = c.pool.matvec_rate(c.dtype, sparse=c.op == "sparse")
            if c.op == "sparse" and c.density is not None:
                r = r * sparse_factor(c.density, d.cpu.sparse_density_exponent, c.pool.sparse_efficiency)
            if batch is not None:  # the cores compute each weight once per sequence: their byte rate is shared
                r = batched_rate(r, c.pool.matvec_rate(c.dtype), batch, d.cpu.batch_compute_share)
            return r
        if c.unit == "npu":
            r, gemm = d.npu.matvec_bps, d.npu.gemm_ops
        else:
            r, gemm = d.gpu.matvec_bps, d.gpu.gemm_ops
        if batch is not None:  # several vectors at once: a small GEMM, bounded by the unit's GEMM rate
            r = np.minimum(r, gemm * c.bytes_per_op / np.asarray(batch, dtype=np.float64))
        return r

    def agent(self, c) -> str:
        return c.unit

    def gemm_rate(self, c) -> float:
        d = self.device
        if c.unit == "cpu":
            assert c.pool is not None
            if c.dtype == "i8mm":  # int8 matrix multiplies (8-bit dynamic activations): faster than the INT4 class
                return c.pool.gemm_rate("int4") * d.cpu.i8mm_gemm_speedup
            return c.pool.gemm_rate(c.dtype)
        if c.unit == "npu":
            rate = d.npu.gemm_ops * c.gemm_factor
            return rate / d.npu.fp16_slowdown if c.dtype == "fp16" else rate
        return d.gpu.gemm_ops

    def barrier(self, c) -> float:
        return self.device.cpu.barrier_s if (c.unit == "cpu" and c.barrier) else 0.0


def zeros_like(x) -> np.ndarray:
    return np.zeros(np.shape(x), dtype=np.float64)


def busy_add(busy: dict, key: str, value) -> None:
    busy[key] = busy.get(key, 0.0) + value


def reader_busy(comp: Components, p, G, U, busy: dict) -> None:
    """Add the busy time of a pipeline whose reads one I/O thread issues: its core pays every
    request's issue cost, the UFS device each request's service time (every tier)."""
    c_issue = comp.device.storage.issue_cost.of(p.io_class)
    busy_add(busy, p.io_core, (G + U) * c_issue)
    busy_add(busy, "ufs", G * comp.ufs.service_time(p.gate_req_size, p.span) + U * comp.ufs.service_time(p.ud_req_size, p.span))


def pool_class(pool: CpuPool) -> str:
    """The core class that issues a pool's blocking reads: its slowest."""
    classes = [c.core_class for c in pool.cores]
    for cls in ("little", "mid", "big"):  # the slowest issuer sets the pace of blocking reads
        if cls in classes:
            return cls
    return "mid"


def compose(plan, layer_times: list[StageTime], token_times: list[StageTime], tier: str, check: bool = False) -> TimingResult:
    """Token latencies and their breakdown from the time of every stage ([T, L] per layer stage,
    [T] per token stage): a token runs its layers' stages in order, then its token stages.
    ``check``: every stage takes a non-negative time (the clock never goes back)."""
    T, L = plan.n_tokens, plan.n_layers
    if check:
        from .invariants import InvariantViolation

        for st, r, per_layer in [(st, r, True) for st, r in zip(plan.layer_stages, layer_times)] + \
                                [(st, r, False) for st, r in zip(plan.token_stages, token_times)]:
            tot = np.broadcast_to(np.asarray(r.total, dtype=np.float64), (T, L) if per_layer else (T,))
            bad = ~(tot >= 0)
            if bad.any():
                i = np.argwhere(bad)[0]
                raise InvariantViolation("monotonic-clock", f"stage {st.name} took {tot[tuple(i)]} s", int(i[0]), int(i[1]) if per_layer else None)
    token = np.zeros(T)
    cmp_ = np.zeros(T)
    io = np.zeros(T)
    oth = np.zeros(T)
    stage_s: dict[str, np.ndarray] = {}
    busy: dict[str, np.ndarray] = {}
    dram: dict[str, np.ndarray] = {}

    def add(st, r: StageTime, per_layer: bool) -> None:
        def red(x):
            x = np.broadcast_to(np.asarray(x, dtype=np.float64), (T, L) if per_layer else (T,))
            return x.sum(axis=1) if per_layer else x

        nonlocal token, cmp_, io, oth
        tot = red(r.total)
        token = token + tot
        cmp_ = cmp_ + red(r.compute)
        io = io + red(r.io)
        oth = oth + red(r.other)
        stage_s[st.name] = stage_s.get(st.name, 0.0) + tot
        for k, v in r.busy.items():
            busy[k] = busy.get(k, 0.0) + red(v)
        for k, v in r.dram.items():
            dram[k] = dram.get(k, 0.0) + red(v)

    for st, r in zip(plan.layer_stages, layer_times):
        add(st, r, True)
    for st, r in zip(plan.token_stages, token_times):
        add(st, r, False)
    res = TimingResult(tier, token, cmp_, io, oth, stage_s, {k: float(v.sum()) for k, v in busy.items()},
                       {k: float(v.sum()) for k, v in dram.items()}, busy, dram)
    res.check_split()
    return res
