"""The Faults stage: demand paging (mmap), compute that stalls on page faults served by the
compute threads themselves."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..components import StageTime, busy_add, pool_class
from ..compute import CpuPool, batched_rate
from .base import StageKind


@dataclass
class Faults(StageKind):
    """Dense compute over tensors whose missing pages fault in synchronously (mmap). The layer
    tier waits its closed form (the faults of one layer have nothing to overlap with)."""

    name: str
    pool: CpuPool
    dtype: str
    work: np.ndarray  # weight bytes computed
    faults: np.ndarray  # major faults (each a read of ``fault_bytes``)
    fault_bytes: float
    span: np.ndarray | float
    fault_cpu_s: float  # CPU path of one fault
    sequential: bool = True
    batch: np.ndarray | None = None  # sequences each weight serves (Best-of-N): faulted in and streamed once, computed per sequence
    category: str = "compute"

    def closed_form(self, comp) -> StageTime:
        """Dense compute interleaved with synchronous page faults by the compute threads."""
        f = self
        pool = f.pool
        demand = pool.matvec_rate(f.dtype)
        if f.batch is not None:  # the rule of every batched CPU kernel (engine/compute.batched_rate)
            demand = batched_rate(demand, demand, f.batch, comp.device.cpu.batch_compute_share)
        rate = comp.dram.solo_rate("cpu", demand)
        work = np.asarray(f.work, dtype=np.float64)
        n = np.asarray(f.faults, dtype=np.float64)
        C = work / rate
        cls = pool_class(pool)
        t_io = comp.ufs.batch_time(n, f.fault_bytes, f.span, cls, qd=pool.n, n_issuers=pool.n, sequential=f.sequential)
        t_fault_cpu = n * f.fault_cpu_s / max(1, pool.n)
        barrier = np.where(work > 0, pool.barrier_s, 0.0)
        T = C + t_io + t_fault_cpu
        busy: dict[str, np.ndarray] = {}
        for cid in pool.ids():  # blocked waiting for a read is idle time
            busy_add(busy, cid, C + t_fault_cpu)
        busy_add(busy, "ufs", n * comp.ufs.service_time(f.fault_bytes, f.span, f.sequential))
        dram = {"cpu": work, "dma": n * f.fault_bytes}
        return StageTime(T + barrier, C, t_io, t_fault_cpu + barrier, busy, dram)

    def span_label(self) -> str:
        return f"{self.name} (page faults)"

    def flash_traffic(self, shape):
        n = np.broadcast_to(self.faults, shape)
        return n * self.fault_bytes, n
