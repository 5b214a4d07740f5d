"""The NeuronPipeline stage: the FFN of a sparse, partly cached layer.

CPU work on neurons whose weights are in DRAM ("hit") and on neurons read from flash ("miss"),
with the flash requests, executed in one of four overlap modes (``cluster``: PowerInfer-2's
neuron-cluster pipeline, one I/O thread; ``matrix``: overlap inside a matrix, barrier between
matrices; ``sync``: the compute threads block on their own reads; ``serial``: one asynchronous
reader fetches all the layer's missing neurons at full queue depth, then the layer computes).

In ``cluster`` mode the event tiers simulate the pipeline (the layer tier in SimPy,
:mod:`~pi2sim.engine.stages.neuron_pipeline_des`; the cluster tier with its compiled kernel); the
other modes are barrier-separated phases with nothing to interleave inside a layer, so the event
tiers wait their closed form, one layer at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..components import StageTime, busy_add, pool_class, reader_busy, zeros_like
from ..compute import CpuPool, batched_rate, sparse_factor
from . import neuron_pipeline_des
from .base import StageKind
from .compute import Compute


@dataclass
class NeuronPipeline(StageKind):
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
    batch: np.ndarray | None = None  # sequences each computed row serves (Best-of-N): gathered once, computed per sequence
    category: str = "compute"

    def closed_form(self, comp) -> StageTime:
        """The layer's FFN over every token and layer: the larger of the compute bound and the I/O
        bound plus the work that must follow the last read (the tail), by overlap mode."""
        p = self
        pool = p.pool
        ufs = comp.ufs
        rows = np.maximum(np.asarray(p.rows_total, dtype=np.float64), 1.0)
        density = np.asarray(p.gate_hit_n + p.gate_miss_n, dtype=np.float64) / rows
        demand = pool.matvec_rate(p.dtype, sparse=True) * sparse_factor(density, comp.device.cpu.sparse_density_exponent, pool.sparse_efficiency)
        demand = batched_rate(demand, pool.matvec_rate(p.dtype), p.batch, comp.device.cpu.batch_compute_share)
        work_hit = np.asarray(p.gate_hit_bytes + p.ud_hit_bytes, dtype=np.float64)
        work_miss = np.asarray(p.gate_miss_bytes + p.ud_miss_bytes, dtype=np.float64)
        work = work_hit + work_miss
        busy: dict[str, np.ndarray] = {}
        dram: dict[str, np.ndarray] = {}
        G = np.asarray(p.gate_reqs, dtype=np.float64)
        U = np.asarray(p.ud_reqs, dtype=np.float64)
        n_req = G + U
        # CPU rate while computing: shared with the NPU's hot rows when they run concurrently
        if p.parallel is not None:
            npw = np.asarray(p.parallel.work, dtype=np.float64)
            # the NPU call's fixed cost comes first; the CPU streams alone meanwhile (as in the event tiers)
            t_cpu_all, t_npu = comp.dram.staggered_time(work, demand, "cpu", 0.0, npw, comp.demand(p.parallel), p.parallel.unit, p.parallel.fixed_s)
            with np.errstate(invalid="ignore", divide="ignore"):
                eff_rate = np.where(t_cpu_all > 0, work / np.maximum(t_cpu_all, 1e-30), comp.dram.solo_rate("cpu", demand))
            p.parallel.account(t_npu, npw, busy, dram)
        else:
            eff_rate = np.broadcast_to(comp.dram.solo_rate("cpu", demand), np.shape(work)).astype(np.float64)
            t_npu = zeros_like(work)
        C = work / eff_rate
        per_thread = eff_rate / max(1, pool.n)
        k = p.cluster_neurons
        gc_last = np.minimum(k, np.maximum(p.gate_miss_n, 0)) * p.gate_bytes_per_neuron / per_thread
        udc_last = np.minimum(k, np.maximum(p.ud_miss_n, 0)) * p.ud_bytes_per_neuron / per_thread
        if p.mode in ("cluster", "matrix"):
            per_g = ufs.period(p.gate_req_size, p.span, p.io_class)
            per_u = ufs.period(p.ud_req_size, p.span, p.io_class)
            lat_g = ufs.request_latency(p.gate_req_size, p.span, p.io_class)  # one request on an idle device
            lat_u = ufs.request_latency(p.ud_req_size, p.span, p.io_class)
            if p.mode == "cluster":
                # the single I/O thread streams every request; the pipeline ends with the last read
                # plus the Up/Down compute of the cluster it completes
                first_lat = np.where(G > 0, lat_g, lat_u)
                first_per = np.where(G > 0, per_g, per_u)
                stream = G * per_g + U * per_u - first_per
                io_bound = np.where(n_req > 0, first_lat + stream + udc_last, 0.0)
                T = np.maximum(C, io_bound)
                barriers = np.where(work > 0, pool.barrier_s, 0.0)
            else:  # matrix: gate matrix, barrier, up/down matrix, barrier
                Cg = np.asarray(p.gate_hit_bytes + p.gate_miss_bytes) / eff_rate
                Cu = np.asarray(p.ud_hit_bytes + p.ud_miss_bytes) / eff_rate
                tg = np.where(G > 0, lat_g + (G - 1) * per_g + gc_last, 0.0)
                tu = np.where(U > 0, lat_u + (U - 1) * per_u + udc_last, 0.0)
                T = np.maximum(Cg, tg) + np.maximum(Cu, tu)
                barriers = np.where(work > 0, 2 * pool.barrier_s, 0.0)
            reader_busy(comp, p, G, U, busy)
        elif p.mode == "serial":  # one asynchronous reader fetches everything, then the layer computes
            tg = ufs.batch_time(n_req, (p.gate_req_size + p.ud_req_size) / 2, p.span, p.io_class, qd=p.io_qd)
            T = C + tg
            barriers = np.where(work > 0, pool.barrier_s, 0.0)
            reader_busy(comp, p, G, U, busy)
        else:  # sync: compute threads block on their own reads
            svc_g = ufs.service_time(p.gate_req_size, p.span)
            svc_u = ufs.service_time(p.ud_req_size, p.span)
            cls = pool_class(pool)
            if p.two_phase:  # Gate part, compute, then the Up/Down part: one request in flight per thread
                tg = ufs.batch_time(G, p.gate_req_size, p.span, cls, qd=pool.n, n_issuers=pool.n)
                tu = ufs.batch_time(U, p.ud_req_size, p.span, cls, qd=pool.n, n_issuers=pool.n)
            else:  # a neuron's requests go out together (e.g. both 4 KB halves of a bundle, PI2 §4.4)
                with np.errstate(invalid="ignore", divide="ignore"):
                    size = np.where(n_req > 0, (G * p.gate_req_size + U * p.ud_req_size) / np.maximum(n_req, 1e-30), p.gate_req_size)
                tg = ufs.batch_time(n_req, size, p.span, cls, qd=pool.n * max(1, p.sync_inflight), n_issuers=pool.n)
                tu = 0.0
            T = C + tg + tu
            barriers = np.where(work > 0, 2 * pool.barrier_s, 0.0)
            busy_add(busy, "ufs", G * svc_g + U * svc_u)
            for cid in pool.ids():  # a thread blocked on its read is idle; it pays the issue cost only
                busy_add(busy, cid, n_req * comp.device.storage.issue_cost.of(cls) / pool.n)
        T = np.maximum(T, t_npu)
        for cid in pool.ids():
            busy_add(busy, cid, C)
        busy_add(dram, "cpu", work)
        busy_add(dram, "dma", G * p.gate_req_size + U * p.ud_req_size)
        compute = np.minimum(T, np.maximum(C, t_npu))
        io = T - compute
        return StageTime(T + barriers, compute, io, barriers, busy, dram)

    # ------------------------------------------------------------------ event tiers
    @property
    def per_cluster_events(self) -> bool:
        return self.mode == "cluster"

    def simulate(self, eng, t: int, l: int | None):
        if self.mode == "cluster":
            return (yield from neuron_pipeline_des.simulate(self, eng, t, l))
        return (yield from super().simulate(eng, t, l))

    def span_label(self) -> str:
        return f"{self.name} ({self.mode} mode)"

    # ------------------------------------------------------------------ accounting
    def flash_traffic(self, shape):
        g, u = np.broadcast_to(self.gate_reqs, shape), np.broadcast_to(self.ud_reqs, shape)
        return g * self.gate_req_size + u * self.ud_req_size, g + u

    def plan_checks(self, shape):
        """Reads follow misses: no reads without missed neurons, and the same requests per missed
        neuron everywhere (the flash layout's)."""
        g_n = np.broadcast_to(self.gate_miss_n, shape)
        u_n = np.broadcast_to(self.ud_miss_n if self.two_phase else self.gate_miss_n, shape)
        for what, reqs, n in (("Gate", self.gate_reqs, g_n), ("Up/Down", self.ud_reqs, u_n)):
            reqs = np.broadcast_to(reqs, shape).astype(np.float64)
            yield "flash-accounting", (n > 0) | (reqs == 0), f"{self.name}: no {what} reads without missed neurons"
            if (n > 0).any():
                per = float(np.median(reqs[n > 0] / n[n > 0]))  # the layout's requests per neuron
                yield "flash-accounting", np.isclose(reqs, per * n), f"{self.name}: {what} reads = missed neurons x {per:g} requests per neuron"
