"""Analytic tier: closed-form time of every stage, vectorised over all tokens and layers.

No event queue: each stage's duration is computed from its amounts with the same component
models the event tiers use (UFS closed form, DRAM water-filling, CPU pool rates). Where stages
overlap internally (the neuron-cluster pipeline), the duration is the larger of the compute
bound and the I/O bound plus the work that must follow the last read (the pipeline's tail).

This is exact for the uncontended limits (everything cached: compute bound; compute free: flash
bound) and is what sweeps and the planner use; the event tiers add queueing and ordering effects
between those limits (see docs/fidelity.md).
"""

from __future__ import annotations

import numpy as np

from ..specs.device import DeviceSpec
from .components import Components, StageTime, busy_add, compose, pool_class, reader_busy, zeros_like
from .compute import sparse_factor
from .plan import Compute, DecodePlan, Faults, Flash, NeuronPipeline, PrefillPlan
from .result import PrefillTiming, TimingResult


def compute_time(comp: Components, c: Compute) -> StageTime:
    """Duration of a Compute stage (and its parallel partner)."""
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
        _account(c, t, work, busy, dram)
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
    _account(c, ta, work, busy, dram)
    _account(p, tb, pw, busy, dram)
    return StageTime(span + other, span, zeros_like(span), other, busy, dram)


def _account(c: Compute, t: np.ndarray, work: np.ndarray, busy: dict, dram: dict) -> None:
    if c.unit == "cpu":
        assert c.pool is not None
        for cid in c.pool.ids():
            busy_add(busy, cid, t)
    else:
        busy_add(busy, c.unit, t)
    if c.op not in ("gemm", "cpu_seconds"):
        busy_add(dram, c.unit, work * (2.0 if c.op == "memcpy" else 1.0))
    elif c.bytes_for_gemm is not None:
        busy_add(dram, c.unit, np.asarray(c.bytes_for_gemm, dtype=np.float64))


def flash_time(comp: Components, f: Flash) -> StageTime:
    n = np.asarray(f.requests, dtype=np.float64)
    t = comp.ufs.batch_time(n, f.size, f.span, f.issuer_class, f.qd, f.n_issuers, f.sequential)
    busy: dict[str, np.ndarray] = {}
    svc = comp.ufs.service_time(f.size, f.span, f.sequential)
    busy_add(busy, "ufs", n * svc)
    for cid in f.issuer_cores:
        busy_add(busy, cid, comp.ufs.issuer_busy(n, f.issuer_class) / max(1, len(f.issuer_cores)))
    dram = {"dma": n * f.size}
    z = zeros_like(t)
    return StageTime(t, z, t, z.copy(), busy, dram)


def pipeline_time(comp: Components, p: NeuronPipeline) -> StageTime:
    """The FFN of a sparse, partly cached layer (see :class:`~pi2sim.engine.plan.NeuronPipeline`)."""
    pool = p.pool
    ufs = comp.ufs
    rows = np.maximum(np.asarray(p.rows_total, dtype=np.float64), 1.0)
    density = np.asarray(p.gate_hit_n + p.gate_miss_n, dtype=np.float64) / rows
    demand = pool.matvec_rate(p.dtype, sparse=True) * sparse_factor(density, comp.device.cpu.sparse_density_exponent, pool.sparse_efficiency)
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
        _account(p.parallel, t_npu, npw, busy, dram)
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


def faults_time(comp: Components, f: Faults) -> StageTime:
    """Dense compute interleaved with synchronous page faults by the compute threads."""
    pool = f.pool
    demand = pool.matvec_rate(f.dtype)
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


def stage_time(comp: Components, st) -> StageTime:
    if isinstance(st, Compute):
        return compute_time(comp, st)
    if isinstance(st, Flash):
        return flash_time(comp, st)
    if isinstance(st, NeuronPipeline):
        return pipeline_time(comp, st)
    if isinstance(st, Faults):
        return faults_time(comp, st)
    raise TypeError(type(st))


def run_decode(device: DeviceSpec, plan: DecodePlan, *, progress: bool = False, recorder=None, check: bool = False) -> TimingResult:
    """The analytic tier: every stage's closed form (no events, so no timeline: ``recorder`` must be None)."""
    if recorder is not None:
        raise ValueError("the analytic tier has no events to record")
    comp = Components(device)
    return compose(plan, [stage_time(comp, st) for st in plan.layer_stages], [stage_time(comp, st) for st in plan.token_stages], "analytic", check)


def run_prefill(device: DeviceSpec, plan: PrefillPlan) -> PrefillTiming:
    """Prefill time, its compute/io/other split, and busy times.

    Layer i computes while layer i+1's offloaded weights stream in (``pipelined``): the loader
    runs ahead by one layer, so the time is ``load_0 + sum_i max(compute_i, load_{i+1})`` plus the
    head; without pipelining loads and compute alternate.
    """
    comp = Components(device)
    L = plan.n_layers
    compute = np.zeros(L)
    busy: dict[str, float] = {}
    for c in plan.compute:
        r = compute_time(comp, c)
        compute += np.broadcast_to(r.total, (L,))
        for k, v in r.busy.items():
            busy[k] = busy.get(k, 0.0) + float(np.sum(v))
    load = np.zeros(L)
    if plan.load is not None:
        r = flash_time(comp, plan.load)
        load = np.broadcast_to(r.total, (L,)).astype(np.float64)
        for k, v in r.busy.items():
            busy[k] = busy.get(k, 0.0) + float(np.sum(v))
    head = 0.0
    for c in plan.head:
        r = compute_time(comp, c)
        head += float(np.sum(r.total))
        for k, v in r.busy.items():
            busy[k] = busy.get(k, 0.0) + float(np.sum(v))
    if plan.pipelined:
        nxt = np.r_[load[1:], 0.0]
        per_layer = np.maximum(compute, nxt)
        total = load[0] + per_layer.sum() + head
        exposed_io = load[0] + np.maximum(nxt - compute, 0.0).sum()
    else:
        total = load.sum() + compute.sum() + head
        exposed_io = load.sum()
    split = {"compute": float(total - exposed_io), "io": float(exposed_io), "other": 0.0}
    return PrefillTiming(float(total), split, busy)
