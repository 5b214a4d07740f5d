"""The Compute stage: a kernel on a CPU pool, the NPU or the GPU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import simpy

from ..components import StageTime, busy_add, zeros_like
from ..compute import CpuPool
from .base import StageKind, value_at

Unit = Literal["cpu", "npu", "gpu"]
Op = Literal["matvec", "sparse", "gemm", "memcpy", "cpu_seconds"]


@dataclass
class Compute(StageKind):
    """``matvec`` / ``sparse`` stream weight bytes, ``gemm`` is operations, ``memcpy`` moves bytes,
    ``cpu_seconds`` is plain CPU time split over the pool's threads; ``parallel`` runs a second
    kernel on another unit at the same time (CPU + NPU split), the stage ending when both end.
    A ``batch`` matvec streams its weight bytes once for ``batch`` sequences: its demand on DRAM is
    the unit's compute rate shared by the sequences (:meth:`Components.demand`)."""

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
    batch: np.ndarray | None = None  # matvec over several sequences at once (a batched decode step): weights streamed once per step
    bytes_per_op: float = 0.0  # batched NPU/GPU matvec: weight bytes per multiply-add operation (bpw / 2), to bound it by the GEMM rate

    # ------------------------------------------------------------------ closed form
    def closed_form(self, comp) -> StageTime:
        """Duration of the kernel (and its parallel partner)."""
        c = self
        work = np.asarray(c.work, dtype=np.float64)
        busy: dict[str, np.ndarray] = {}
        dram: dict[str, np.ndarray] = {}

        def solo(cc: Compute, w: np.ndarray) -> tuple[np.ndarray, float]:
            if cc.op == "cpu_seconds":
                return w / max(1, cc.pool.n if cc.pool is not None else 1), 0.0
            if cc.op == "gemm":
                t = w / comp.gemm_rate(cc)
                if cc.bytes_for_gemm is not None:
                    t = np.maximum(t, np.asarray(cc.bytes_for_gemm) / comp.dram.solo_rate(cc.unit, comp.demand(cc)))
                return t, 0.0
            rate = comp.dram.solo_rate(comp.agent(cc), comp.demand(cc))
            factor = 2.0 if cc.op == "memcpy" else 1.0  # a copy reads and writes
            return factor * w / rate, rate

        if c.parallel is None or c.op in ("gemm", "cpu_seconds"):
            t, _ = solo(c, work)
            t = np.where(work > 0, t + c.fixed_s, 0.0)
            other = np.where(work > 0, comp.barrier(c), 0.0)
            total = t + other
            c.account(t, work, busy, dram)
            cat = t if c.category == "compute" else zeros_like(t)
            oth = other + (t if c.category != "compute" else 0.0)
            return StageTime(total, cat, zeros_like(t), oth, busy, dram)
        p = c.parallel
        pw = np.asarray(p.work, dtype=np.float64)
        # each side pays its fixed cost (an NPU call's submit and sync) before it streams; meanwhile the
        # other side has DRAM to itself (as in the event tiers)
        ta, tb = comp.dram.staggered_time(work, comp.demand(c), comp.agent(c), c.fixed_s, pw, comp.demand(p), comp.agent(p), p.fixed_s)
        span = np.maximum(ta, tb)
        other = np.where((work > 0) | (pw > 0), max(comp.barrier(c), comp.barrier(p)), 0.0)
        c.account(ta, work, busy, dram)
        p.account(tb, pw, busy, dram)
        return StageTime(span + other, span, zeros_like(span), other, busy, dram)

    def account(self, t: np.ndarray, work: np.ndarray, busy: dict, dram: dict) -> None:
        """Add the kernel's busy time ``t`` (its unit or every core of its pool) and DRAM bytes."""
        if self.unit == "cpu":
            assert self.pool is not None
            for cid in self.pool.ids():
                busy_add(busy, cid, t)
        else:
            busy_add(busy, self.unit, t)
        if self.op not in ("gemm", "cpu_seconds"):
            busy_add(dram, self.unit, work * (2.0 if self.op == "memcpy" else 1.0))
        elif self.bytes_for_gemm is not None:
            busy_add(dram, self.unit, np.asarray(self.bytes_for_gemm, dtype=np.float64))

    # ------------------------------------------------------------------ layer tier
    def simulate(self, eng, t: int, l: int | None):
        """The kernel (and its parallel partner) as byte streams on the DRAM bus, then the barrier."""
        env = eng.env
        start = env.now
        work = value_at(self.work, t, l)
        pwork = value_at(self.parallel.work, t, l) if self.parallel is not None else 0.0
        if work <= 0 and pwork <= 0:
            return 0.0, 0.0, 0.0
        evs = []
        if work > 0:
            evs.append(env.process(self.stream(eng, work)))
        if self.parallel is not None and pwork > 0:
            evs.append(env.process(self.parallel.stream(eng, pwork)))
        yield simpy.AllOf(env, evs)
        body = env.now - start
        barrier = eng.comp.barrier(self) if work > 0 else 0.0
        if self.parallel is not None:
            barrier = max(barrier, eng.comp.barrier(self.parallel))
        if barrier:
            yield env.timeout(barrier)
            if self.pool is not None:
                eng.on_cores(self.pool, "barrier", env.now - barrier, env.now, stage=self.name)
        if self.category == "compute":
            return body + barrier, body, barrier
        return body + barrier, 0.0, body + barrier

    def stream(self, eng, work: float):
        """``work`` of this kernel on its unit (a SimPy process): its fixed cost, then its bytes on
        the bus (or its operations at the unit's rate)."""
        c = self
        env = eng.env
        t0 = env.now
        if c.fixed_s:
            yield env.timeout(c.fixed_s)
        if c.op == "cpu_seconds":
            yield env.timeout(work / max(1, c.pool.n))
        elif c.op == "gemm":
            floor = None if c.bytes_for_gemm is None else np.asarray(value_at(c.bytes_for_gemm, eng._t, eng._l))  # this instance's bytes
            one = Compute(c.name, c.unit, np.asarray(work), "gemm", c.pool, c.dtype, bytes_for_gemm=floor, gemm_factor=c.gemm_factor, barrier=False)
            r = one.closed_form(eng.comp)
            yield env.timeout(float(r.total))
            for agent, v in r.dram.items():  # its weights still cross DRAM, outside the bus's contention (as StageKind.simulate)
                eng.bus.account(agent, float(np.sum(v)))
        else:
            factor = 2.0 if c.op == "memcpy" else 1.0
            demand = eng.comp.demand(c)
            if np.ndim(demand):
                demand = value_at(demand, eng._t, eng._l)
            yield eng.bus.transfer(c.unit, factor * work, demand)
        eng.events += 2
        dt = env.now - t0
        if c.unit == "cpu":
            for cid in c.pool.ids():
                eng.add_busy(cid, dt)
            eng.on_cores(c.pool, c.name, t0, env.now)
        else:
            eng.add_busy(c.unit, dt)
            eng.on_unit(c.unit, c.name, t0, env.now)

    # ------------------------------------------------------------------ cluster tier's timeline
    def draw(self, rec, comp, t: int, l: int | None, start: float, total: float) -> None:
        args = {"token": t, "layer": l}
        w = value_at(self.work, t, l)
        pw = value_at(self.parallel.work, t, l) if self.parallel is not None else 0.0
        if w <= 0 and pw <= 0:
            return
        if self.parallel is not None:
            p = self.parallel
            ta, tb = comp.dram.staggered_time(np.asarray(w), comp.demand(self), comp.agent(self), self.fixed_s,
                                              np.asarray(pw), comp.demand(p), comp.agent(p), p.fixed_s)
            ta, tb = value_at(ta, t, l), value_at(tb, t, l)  # a batched step's demand is per token ([T])
            if pw > 0:
                rec.on_unit(p.unit, p.name, start, start + tb, **args)
        else:
            ta = total - (comp.barrier(self) if w > 0 else 0.0)
        if w > 0:
            if self.unit == "cpu":
                rec.on_pool(self.pool, self.name, start, start + ta, **args)
                rate = w / ta if ta > 0 else 0.0
                rec.dram_bandwidth("cpu", start, round(rate / 1e9, 3))
                rec.dram_bandwidth("cpu", start + ta, 0.0)
            else:
                rec.on_unit(self.unit, self.name, start, start + ta, **args)
        b = comp.barrier(self) if w > 0 else 0.0
        if self.unit == "cpu" and b > 0:
            rec.on_pool(self.pool, "barrier", start + total - b, start + total, stage=self.name)
