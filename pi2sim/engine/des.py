"""Layer tier: execute a :class:`~pi2sim.engine.plan.DecodePlan` in SimPy.

Resources (one per hardware unit):

* **DRAM**: a :class:`~pi2sim.engine.fluid_bus.FluidBus`; every CPU/NPU kernel is a byte stream on it,
  so concurrent CPU and NPU work share bandwidth as measured (43.9 / 56 / 59.6 GB/s).
* **CPU pool**: the compute threads, as one server that takes ready tasks and streams their
  bytes at the pool's rate (dynamic work split; the cluster tier keeps one task per cluster, the
  layer tier groups clusters). The Gate compute of a freshly loaded cluster goes first, because
  it releases that cluster's Up/Down reads and keeps the I/O thread busy; everything else is FIFO.
* **I/O thread + UFS**: one issuer that issues a batch of k requests in ``k * period`` and sees
  the last complete ``latency + (k - 1) * period`` after the first issue (the queue keeps up to
  32 in flight, so latencies overlap); Up/Down batches take priority over pending Gate batches,
  so clusters finish early.
* **NPU**: a byte stream on the bus (its hot rows / attention heads), concurrent with the CPU.

Granularity: each layer's clusters are grouped into a few tasks per kind (hit / miss), and the
pool is one server. The cluster tier (:mod:`pi2sim.engine.cluster`) simulates every cluster on
its own thread with a compiled event loop; this SimPy model, written independently, is its
cross-check. Both report the same critical-path split as the analytic tier: compute (CPU busy in
the stage), I/O stall (the rest of the stage), other (barriers and fixed costs).
"""

from __future__ import annotations

import math
import sys
from collections import deque

import numpy as np
import simpy

from ..specs.device import DeviceSpec
from .components import Components
from .compute import sparse_factor
from .fluid_bus import FluidBus
from .plan import Compute, DecodePlan, Faults, Flash, NeuronPipeline
from .plan import value_at as _at
from .invariants import InvariantViolation, check_pipeline_outcome
from .recorder import Recorder, cpu_track
from .result import TimingResult
from .watchdog import Watchdog

LAYER_GROUPS = 4  # tasks per kind (hit / miss) per layer in the layer tier


class _Engine:
    def __init__(self, device: DeviceSpec, recorder: Recorder | None = None, check: bool = False):
        self.device = device
        self.comp = Components(device)
        self.env = simpy.Environment()
        self.bus = FluidBus(self.env, self.comp.dram)
        self.rec = recorder
        self.check = check
        if recorder is not None:
            recorder.core_order = [c.id for c in device.cores()]
            self.bus.on_rates = self._record_bandwidth
        self.busy: dict[str, float] = {}
        self.io_free_at = 0.0
        self.events = 0
        self._t, self._l = 0, None

    def add_busy(self, key: str, v: float) -> None:
        self.busy[key] = self.busy.get(key, 0.0) + v

    # ------------------------------------------------------------------ timeline
    def _record_bandwidth(self, rates: dict[str, float]) -> None:
        self._bw_agents = getattr(self, "_bw_agents", set()) | set(rates)
        for agent in sorted(self._bw_agents):  # agents seen so far; 0 once they stop streaming
            self.rec.dram_bandwidth(agent, self.env.now, round(rates.get(agent, 0.0) / 1e9, 3))

    def on_cores(self, pool, name: str, start: float, end: float, **args) -> None:
        """A pool kernel: the dynamic work split runs it on every core of the pool at once."""
        if self.rec is not None and self.rec.active:
            for cid in pool.ids():
                self.rec.on_core(cid, name, start, end, token=self._t, layer=self._l, **args)

    def on_unit(self, unit: str, name: str, start: float, end: float, **args) -> None:
        if self.rec is not None:
            self.rec.on_unit(unit, name, start, end, token=self._t, layer=self._l, **args)

    # ------------------------------------------------------------------ stages
    def compute(self, c: Compute, t: int, l: int | None):
        """Run a Compute stage; returns (duration, compute part, other part)."""
        env = self.env
        start = env.now
        work = _at(c.work, t, l)
        pwork = _at(c.parallel.work, t, l) if c.parallel is not None else 0.0
        if work <= 0 and pwork <= 0:
            return 0.0, 0.0, 0.0
        evs = []
        if work > 0:
            evs.append(env.process(self._stream(c, work)))
        if c.parallel is not None and pwork > 0:
            evs.append(env.process(self._stream(c.parallel, pwork)))
        yield simpy.AllOf(env, evs)
        body = env.now - start
        barrier = self.comp.barrier(c) if work > 0 else 0.0
        if c.parallel is not None:
            barrier = max(barrier, self.comp.barrier(c.parallel))
        if barrier:
            yield env.timeout(barrier)
            if c.pool is not None:
                self.on_cores(c.pool, "barrier", env.now - barrier, env.now, stage=c.name)
        if c.category == "compute":
            return body + barrier, body, barrier
        return body + barrier, 0.0, body + barrier

    def _stream(self, c: Compute, work: float):
        env = self.env
        t0 = env.now
        if c.fixed_s:
            yield env.timeout(c.fixed_s)
        if c.op == "cpu_seconds":
            yield env.timeout(work / max(1, c.pool.n))
        elif c.op == "gemm":
            from .analytic import compute_time

            yield env.timeout(float(compute_time(self.comp, Compute(c.name, c.unit, np.asarray(work), "gemm", c.pool, c.dtype, bytes_for_gemm=c.bytes_for_gemm, gemm_factor=c.gemm_factor, barrier=False)).total))
        else:
            factor = 2.0 if c.op == "memcpy" else 1.0
            demand = self.comp.demand(c)
            if np.ndim(demand):
                demand = _at(demand, self._t, self._l)
            yield self.bus.transfer(c.unit, factor * work, demand)
        self.events += 2
        dt = env.now - t0
        if c.unit == "cpu":
            for cid in c.pool.ids():
                self.add_busy(cid, dt)
            self.on_cores(c.pool, c.name, t0, env.now)
        else:
            self.add_busy(c.unit, dt)
            self.on_unit(c.unit, c.name, t0, env.now)

    def flash(self, f: Flash, t: int, l: int | None):
        n = _at(f.requests, t, l)
        if n <= 0:
            return 0.0, 0.0, 0.0
        span = _at(f.span, t, l) if np.ndim(f.span) else float(f.span)
        dt = float(self.comp.ufs.batch_time(n, f.size, span, f.issuer_class, f.qd, f.n_issuers, f.sequential))
        self.add_busy("ufs", n * float(self.comp.ufs.service_time(f.size, span, f.sequential)))
        for cid in f.issuer_cores:
            self.add_busy(cid, float(self.comp.ufs.issuer_busy(n, f.issuer_class)) / max(1, len(f.issuer_cores)))
        yield self.env.timeout(dt)
        self.events += 1
        if self.rec is not None:
            for cid in f.issuer_cores:
                self.rec.on_core(cid, f"{f.name}: issue {int(n)} reads", self.env.now - dt, self.env.now, token=t, layer=l)
            self.rec.ufs_batch(f"{f.name}: {int(n)} x {f.size / 1024:g} KiB", self.env.now - dt, self.env.now, token=t, layer=l)
        return dt, 0.0, 0.0

    def faults(self, f: Faults, t: int, l: int):
        """Demand paging: the same closed form as the analytic tier (no overlap to simulate)."""
        from .analytic import faults_time

        r = faults_time(self.comp, Faults(f.name, f.pool, f.dtype, np.asarray(_at(f.work, t, l)), np.asarray(_at(f.faults, t, l)),
                                          f.fault_bytes, _at(f.span, t, l) if np.ndim(f.span) else f.span, f.fault_cpu_s, f.sequential))
        dt = float(r.total)
        for k, v in r.busy.items():
            self.add_busy(k, float(v))
        yield self.env.timeout(dt)
        self.events += 1
        self.on_cores(f.pool, f"{f.name} (page faults)", self.env.now - dt, self.env.now)
        return dt, float(r.compute), float(r.other)

    def pipeline(self, p: NeuronPipeline, t: int, l: int):
        env = self.env
        start = env.now
        g_hit, g_miss = int(_at(p.gate_hit_n, t, l)), int(_at(p.gate_miss_n, t, l))
        u_hit, u_miss = int(_at(p.ud_hit_n, t, l)), int(_at(p.ud_miss_n, t, l))
        G, U = _at(p.gate_reqs, t, l), _at(p.ud_reqs, t, l)
        span = _at(p.span, t, l) if np.ndim(p.span) else float(p.span)
        pool = p.pool
        rows = max(1.0, _at(p.rows_total, t, l) if np.ndim(p.rows_total) else float(p.rows_total))
        demand = pool.matvec_rate(p.dtype, sparse=True) * float(
            sparse_factor((g_hit + g_miss) / rows, self.device.cpu.sparse_density_exponent, pool.sparse_efficiency)
        )
        k = p.cluster_neurons
        work_total = (g_hit + g_miss) * p.gate_bytes_per_neuron + (u_hit + u_miss) * p.ud_bytes_per_neuron
        parallel_ev = None
        if p.parallel is not None and _at(p.parallel.work, t, l) > 0:
            parallel_ev = env.process(self._stream(p.parallel, _at(p.parallel.work, t, l)))
        if work_total <= 0 and G + U <= 0:
            if parallel_ev is not None:
                yield parallel_ev
            return env.now - start, env.now - start, 0.0
        n_hit_clusters = math.ceil(g_hit / k) if g_hit else 0
        n_miss_clusters = math.ceil(g_miss / k) if g_miss else 0
        gh, gm = min(LAYER_GROUPS, n_hit_clusters), min(LAYER_GROUPS, n_miss_clusters)
        hit_groups = _split(g_hit, u_hit, gh)
        miss_groups = _split(g_miss, u_miss, gm)
        miss_reqs = _split(int(round(G)), int(round(U)), gm)
        cpu_busy = [0.0]
        computed = {"g": 0.0, "u": 0.0}  # bytes the worker computed, by kind (work-conserved check)
        rec = self.rec if self.rec is not None and self.rec.active else None
        if rec is not None and g_hit + g_miss > 0:
            rec.hit_rate(env.now, round(g_hit / (g_hit + g_miss), 4))
        ready: deque = deque()
        urgent: deque = deque()  # Gate compute of loaded clusters: it releases their Up/Down reads
        wake = [env.event()]
        done_tasks = [0]
        n_tasks = 2 * len(hit_groups) + 2 * len(miss_groups)

        def push(task, flow=None, ready_at=None) -> None:
            task = (*task[:4], flow, ready_at)
            (urgent if (task[0] == "g" and task[2] is not None and p.two_phase) else ready).append(task)
            if not wake[0].triggered:
                wake[0].succeed()

        # task: (kind "g"/"u", bytes, follow-up of a loaded Gate part, timeline label, flow id, weights ready at)
        for gn, un in hit_groups:
            ready.append(("g", gn * p.gate_bytes_per_neuron, None, f"gate, cached ({gn} neurons)", None, None))
            ready.append(("u", un * p.ud_bytes_per_neuron, None, f"up/down, cached ({un} neurons)", None, None))
        io = _IoThread(self, p, span, push) if miss_groups else None
        for i, ((gn, un), (gr, ur)) in enumerate(zip(miss_groups, miss_reqs)):
            # two-phase: Gate part now, Up/Down part after the Gate compute; one-phase: the whole bundle now
            first = gr if p.two_phase else gr + ur
            io.submit_gate(first, ("g", gn * p.gate_bytes_per_neuron, (i, ur, un * p.ud_bytes_per_neuron, un), f"gate, loaded ({gn} neurons)", None))
        if io is not None:
            env.process(io.run())

        def worker():
            while done_tasks[0] < n_tasks:
                while not ready and not urgent:
                    wake[0] = env.event()
                    yield wake[0]
                kind, nbytes, follow, label, flow, ready_at = (urgent or ready).popleft()
                t0 = env.now
                if self.check:
                    if ready_at is not None and t0 < ready_at - 1e-12:
                        raise InvariantViolation("data-before-compute", f"{label} starts at {t0:.9f} s, its reads complete at {ready_at:.9f} s", t, l)
                    computed[kind] += nbytes
                if nbytes > 0:
                    yield self.bus.transfer("cpu", nbytes, demand)
                    self.events += 1
                cpu_busy[0] += env.now - t0
                done_tasks[0] += 1
                if rec is not None and env.now > t0:
                    self.on_cores(pool, label, t0, env.now)
                    rec.flow_end(flow, cpu_track(pool.ids()[0]), t0)
                if kind == "g" and follow is not None:
                    i, ur, ubytes, un = follow
                    task = ("u", ubytes, None, f"up/down, loaded ({un} neurons)", None)
                    if p.two_phase:
                        io.submit_ud(ur, task)
                    else:
                        io.ud_after_gate(i, ur, task)

        yield env.process(worker())
        if parallel_ev is not None:
            yield parallel_ev
        if self.check:
            check_pipeline_outcome(p.name, lambda i: (t, l), computed["g"], computed["u"], (g_hit + g_miss) * p.gate_bytes_per_neuron,
                                   (u_hit + u_miss) * p.ud_bytes_per_neuron, io.issued if io is not None else 0,
                                   io.completed if io is not None else 0, int(round(G)) + int(round(U)))
        body = env.now - start
        barrier = pool.barrier_s if work_total > 0 else 0.0
        if barrier:
            yield env.timeout(barrier)
            self.on_cores(pool, "barrier", env.now - barrier, env.now, stage=p.name)
        for cid in pool.ids():
            self.add_busy(cid, cpu_busy[0])
        compute = min(body, cpu_busy[0] if parallel_ev is None else max(cpu_busy[0], self._last_parallel(p, t, l)))
        return body + barrier, compute, barrier

    def _last_parallel(self, p: NeuronPipeline, t: int, l: int) -> float:
        # NPU stream time for the split (the compute bound of the stage when the NPU is slower)
        from .analytic import compute_time

        c = p.parallel
        r = compute_time(self.comp, Compute(c.name, c.unit, np.asarray(_at(c.work, t, l)), c.op, fixed_s=c.fixed_s))
        return float(r.total)

    def closed_form_pipeline(self, p: NeuronPipeline, t: int, l: int):
        """``matrix``, ``sync`` and ``serial`` modes: barrier-separated phases with nothing to interleave
        inside a layer, so the event tiers use the analytic phase times (same formulas, one layer at
        a time)."""
        from .analytic import pipeline_time

        one = _slice_pipeline(p, t, l)
        r = pipeline_time(self.comp, one)
        for k, v in r.busy.items():
            self.add_busy(k, float(np.sum(v)))
        dt = float(np.sum(r.total))
        yield self.env.timeout(dt)
        self.events += 1
        self.on_cores(p.pool, f"{p.name} ({p.mode} mode)", self.env.now - dt, self.env.now)
        return dt, float(np.sum(r.compute)), float(np.sum(r.other))


class _IoThread:
    """The I/O thread and the UFS device as a request pipeline (period in, latency out)."""

    def __init__(self, eng: _Engine, p: NeuronPipeline, span: float, push):
        self.eng = eng
        self.p = p
        self.push = push
        ufs = eng.comp.ufs
        st = eng.device.storage
        self.c = st.issue_cost.of(p.io_class)
        self.per_g = float(ufs.period(p.gate_req_size, span, p.io_class))
        self.per_u = float(ufs.period(p.ud_req_size, span, p.io_class))
        self.svc_g = float(ufs.service_time(p.gate_req_size, span))
        self.svc_u = float(ufs.service_time(p.ud_req_size, span))
        self.lat_g = float(ufs.request_latency(p.gate_req_size, span, p.io_class))
        self.lat_u = float(ufs.request_latency(p.ud_req_size, span, p.io_class))
        self.gates: deque = deque()
        self.uds: deque = deque()
        self.wake = eng.env.event()
        self.remaining = 0  # batches still to issue, including Up/Down batches not yet submitted
        self.issued = 0  # requests issued / completed (requests-complete check)
        self.completed = 0

    def submit_gate(self, n: int, task) -> None:
        self.gates.append((n, task))
        # two-phase: this group will also submit one Up/Down batch after its Gate compute
        self.remaining += 2 if self.p.two_phase else 1

    def submit_ud(self, n: int, task) -> None:
        self.uds.append((n, task))
        if not self.wake.triggered:
            self.wake.succeed()

    def ud_after_gate(self, i: int, n: int, task) -> None:
        # one-phase loads: the Up/Down part was read with the Gate part
        self.eng.env.process(self._deliver_now(task))

    def _deliver_now(self, task):
        yield self.eng.env.timeout(0)
        self.push(task, None, self.eng.env.now)

    def run(self):
        env = self.eng.env
        p = self.p
        while self.remaining > 0:
            if self.uds:
                n, task = self.uds.popleft()
                per, lat, svc, size = self.per_u, self.lat_u, self.svc_u, p.ud_req_size
            elif self.gates:
                n, task = self.gates.popleft()
                per, lat, svc, size = self.per_g, self.lat_g, self.svc_g, p.gate_req_size
            else:
                self.wake = env.event()
                yield self.wake
                continue
            self.remaining -= 1
            if n <= 0:
                self.push(task)
                continue
            start = max(env.now, self.eng.io_free_at)
            if start > env.now:
                yield env.timeout(start - env.now)
            self.eng.add_busy(p.io_core, n * self.c)
            self.eng.add_busy("ufs", n * svc)
            flow = self._record(n, per, lat, size, task)
            self.issued += int(n)
            self._schedule_completion(task, flow, int(n), lat + (n - 1) * per)
            self.eng.io_free_at = env.now + n * per
            self.eng.events += 2
            yield env.timeout(n * per)

    def _schedule_completion(self, task, flow, n: int, after_s: float) -> None:
        """The batch's last request completes ``after_s`` from now; then its compute task is ready."""
        at = self.eng.env.now + after_s
        done = self.eng.env.timeout(after_s)
        done.callbacks.append(lambda _e: self._complete(task, flow, n, at))

    def _complete(self, task, flow, n: int, at: float) -> None:
        self.completed += n
        self.push(task, flow, at)

    def _record(self, n: int, per: float, lat: float, size: float, task) -> int | None:
        """Timeline: the I/O thread issuing the batch on its core, each request on a UFS queue slot,
        a flow from the batch's last completion to the compute that consumes it."""
        rec = self.eng.rec
        if rec is None or not rec.active:
            return None
        now = self.eng.env.now
        what = "gate" if task[0] == "g" else "up/down"
        e = self.eng
        # the I/O thread's own track; if its core also runs compute threads, a second track on that core
        core = cpu_track(self.p.io_core, "io" if self.p.io_core in self.p.pool.ids() else None)
        rec.slice(core, f"issue {n} {what} reads", now, now + n * per, token=e._t, layer=e._l)
        track = None
        for i in range(int(n)):
            track = rec.ufs_request(now + i * per, now + i * per + lat, f"{what} read {size / 1024:g} KiB", token=e._t, layer=e._l)
        return rec.flow_start(track, now + (n - 1) * per)


def _split(a: int, b: int, groups: int) -> list[tuple[int, int]]:
    """Split counts a (and proportionally b) into ``groups`` near-equal parts (deterministic)."""
    if groups <= 0:
        return []
    qa, ra = divmod(a, groups)
    parts_a = [qa + (1 if i < ra else 0) for i in range(groups)]
    out, used = [], 0
    for i, pa in enumerate(parts_a):
        if i == groups - 1:
            pb = b - used
        else:
            pb = int(round(b * pa / a)) if a else b // groups
            pb = min(pb, b - used)
        used += pb
        out.append((pa, pb))
    return out


def _slice_pipeline(p: NeuronPipeline, t: int, l: int) -> NeuronPipeline:
    from dataclasses import replace

    def one(x):
        return np.asarray(_at(x, t, l))

    return replace(
        p,
        gate_hit_bytes=one(p.gate_hit_bytes), gate_miss_bytes=one(p.gate_miss_bytes),
        ud_hit_bytes=one(p.ud_hit_bytes), ud_miss_bytes=one(p.ud_miss_bytes),
        gate_hit_n=one(p.gate_hit_n), gate_miss_n=one(p.gate_miss_n), ud_hit_n=one(p.ud_hit_n), ud_miss_n=one(p.ud_miss_n),
        gate_reqs=one(p.gate_reqs), ud_reqs=one(p.ud_reqs), span=one(p.span) if np.ndim(p.span) else p.span,
        parallel=None if p.parallel is None else replace(p.parallel, work=one(p.parallel.work)),
        rows_total=one(p.rows_total) if np.ndim(p.rows_total) else p.rows_total,
    )


def run_decode(device: DeviceSpec, plan: DecodePlan, *, progress: bool = False,
               recorder: Recorder | None = None, check: bool = False, watchdog: Watchdog | None = None) -> TimingResult:
    """Execute the plan; ``recorder`` (optional) collects the timeline of its token window;
    ``check`` asserts the invariants that need the clock (:mod:`pi2sim.engine.invariants`)."""
    eng = _Engine(device, recorder, check)
    dog = watchdog if watchdog is not None else Watchdog()
    dog.eng = eng
    env = eng.env
    T, L = plan.n_tokens, plan.n_layers
    token = np.zeros(T)
    cmp_ = np.zeros(T)
    io = np.zeros(T)
    oth = np.zeros(T)
    stage_s: dict[str, np.ndarray] = {}

    def record(t: int, name: str, dt: float, c: float, o: float) -> None:
        token[t] += dt
        cmp_[t] += c
        oth[t] += o
        io[t] += max(0.0, dt - c - o)
        stage_s.setdefault(name, np.zeros(T))[t] += dt

    last_now = [0.0]

    def run_stage(st, t: int, l: int | None):
        eng._t, eng._l = t, l
        dog.enter(t, l, st.name)
        if check and env.now < last_now[0]:
            raise InvariantViolation("monotonic-clock", f"stage {st.name} starts at {env.now} s, after one ended at {last_now[0]} s", t, l)
        r = yield from _run_stage(st, t, l)
        if check and (r[0] < 0 or env.now < last_now[0]):
            raise InvariantViolation("monotonic-clock", f"stage {st.name} took {r[0]} s", t, l)
        last_now[0] = env.now
        return r

    def _run_stage(st, t: int, l: int | None):
        if isinstance(st, Compute):
            r = yield from eng.compute(st, t, l)
        elif isinstance(st, Flash):
            r = yield from eng.flash(st, t, l)
        elif isinstance(st, Faults):
            r = yield from eng.faults(st, t, l)
        elif isinstance(st, NeuronPipeline):
            if st.mode == "cluster":
                r = yield from eng.pipeline(st, t, l)
            else:
                r = yield from eng.closed_form_pipeline(st, t, l)
        else:
            raise TypeError(type(st))
        return r

    rec = eng.rec
    tokens_done = [0]

    def decoder():
        for t in range(T):
            if rec is not None:
                rec.begin_token(t)
                t_start = env.now
                resident = plan.dram_resident_bytes
            for l in range(L):
                if rec is not None:
                    l_start = env.now
                    if resident is not None:
                        rec.dram_resident(env.now, round(float(resident[t, l]) / 1e9, 4))
                for st in plan.layer_stages:
                    dt, c, o = yield from run_stage(st, t, l)
                    record(t, st.name, dt, c, o)
                if rec is not None:
                    rec.layer_span(l, l_start, env.now, token=t, layer=l)
            for st in plan.token_stages:
                dt, c, o = yield from run_stage(st, t, None)
                record(t, st.name, dt, c, o)
            tokens_done[0] = t + 1
            if rec is not None:
                rec.token_span(t, t_start, env.now, token=t, latency_ms=round((env.now - t_start) * 1e3, 4))
            if progress and (t + 1) % max(1, T // 10) == 0:
                print(f"\r[pi2sim] decode {t + 1}/{T} tokens", end="", file=sys.stderr, flush=True)

    proc = env.process(decoder())
    dog.drive()
    if progress:
        print(file=sys.stderr)
    if not proc.triggered:
        dog.fire(f"deadlock: layer tier has no pending events with the decoder unfinished ({tokens_done[0]}/{T} tokens done)")
    res = TimingResult("layer", token, cmp_, io, oth, stage_s, eng.busy, dict(eng.bus.bytes_by_agent))
    res.events = eng.events
    res.check_split(rtol=1e-6)
    return res
