"""The layer tier's SimPy process of a ``cluster``-mode neuron pipeline (one layer of one token).

Each layer's clusters are grouped into a few tasks per kind (hit / miss), and the pool is one
server that takes ready tasks and streams their bytes at the pool's rate (dynamic work split).
The Gate compute of a freshly loaded cluster goes first, because it releases that cluster's
Up/Down reads and keeps the I/O thread busy; everything else is FIFO. The I/O thread issues a
batch of k requests in ``k * period`` and sees the last complete ``latency + (k - 1) * period``
after the first issue (the queue keeps up to 32 in flight, so latencies overlap); Up/Down batches
take priority over pending Gate batches, so clusters finish early.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from ..compute import batched_rate, sparse_factor
from ..invariants import InvariantViolation, check_pipeline_outcome
from ..recorder import cpu_track
from .base import value_at as _at
from .compute import Compute

LAYER_GROUPS = 4  # tasks per kind (hit / miss) per layer in the layer tier


def simulate(p, eng, t: int, l: int):
    """One layer's pipeline ``p`` on the layer tier's engine ``eng``; returns (duration, compute
    part, other part)."""
    env = eng.env
    start = env.now
    g_hit, g_miss = int(_at(p.gate_hit_n, t, l)), int(_at(p.gate_miss_n, t, l))
    u_hit, u_miss = int(_at(p.ud_hit_n, t, l)), int(_at(p.ud_miss_n, t, l))
    G, U = _at(p.gate_reqs, t, l), _at(p.ud_reqs, t, l)
    span = _at(p.span, t, l) if np.ndim(p.span) else float(p.span)
    pool = p.pool
    rows = max(1.0, _at(p.rows_total, t, l) if np.ndim(p.rows_total) else float(p.rows_total))
    demand = pool.matvec_rate(p.dtype, sparse=True) * float(
        sparse_factor((g_hit + g_miss) / rows, eng.device.cpu.sparse_density_exponent, pool.sparse_efficiency)
    )
    if p.batch is not None:
        demand = float(batched_rate(demand, pool.matvec_rate(p.dtype), _at(p.batch, t, l), eng.device.cpu.batch_compute_share))
    k = p.cluster_neurons
    work_total = (g_hit + g_miss) * p.gate_bytes_per_neuron + (u_hit + u_miss) * p.ud_bytes_per_neuron
    parallel_ev = None
    if p.parallel is not None and _at(p.parallel.work, t, l) > 0:
        parallel_ev = env.process(p.parallel.stream(eng, _at(p.parallel.work, t, l)))
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
    rec = eng.rec if eng.rec is not None and eng.rec.active else None
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
    io = _IoThread(eng, p, span, push) if miss_groups else None
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
            if eng.check:
                if ready_at is not None and t0 < ready_at - 1e-12:
                    raise InvariantViolation("data-before-compute", f"{label} starts at {t0:.9f} s, its reads complete at {ready_at:.9f} s", t, l)
                computed[kind] += nbytes
            if nbytes > 0:
                yield eng.bus.transfer("cpu", nbytes, demand)
                eng.events += 1
            cpu_busy[0] += env.now - t0
            done_tasks[0] += 1
            if rec is not None and env.now > t0:
                eng.on_cores(pool, label, t0, env.now)
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
    if eng.check:
        check_pipeline_outcome(p.name, lambda i: (t, l), computed["g"], computed["u"], (g_hit + g_miss) * p.gate_bytes_per_neuron,
                               (u_hit + u_miss) * p.ud_bytes_per_neuron, io.issued if io is not None else 0,
                               io.completed if io is not None else 0, int(round(G)) + int(round(U)))
    body = env.now - start
    barrier = pool.barrier_s if work_total > 0 else 0.0
    if barrier:
        yield env.timeout(barrier)
        eng.on_cores(pool, "barrier", env.now - barrier, env.now, stage=p.name)
    for cid in pool.ids():
        eng.add_busy(cid, cpu_busy[0])
    compute = min(body, cpu_busy[0] if parallel_ev is None else max(cpu_busy[0], _last_parallel(eng, p, t, l)))
    return body + barrier, compute, barrier


def _last_parallel(eng, p, t: int, l: int) -> float:
    # NPU stream time for the split (the compute bound of the stage when the NPU is slower)
    c = p.parallel
    r = Compute(c.name, c.unit, np.asarray(_at(c.work, t, l)), c.op, fixed_s=c.fixed_s).closed_form(eng.comp)
    return float(r.total)


class _IoThread:
    """The I/O thread and the UFS device as a request pipeline (period in, latency out)."""

    def __init__(self, eng, p, span: float, push):
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
        if rec.coarse:  # the batch as one busy span, from its first issue to its last completion
            rec.ufs_batch(f"{n} {what} reads", now, now + (n - 1) * per + lat, token=e._t, layer=e._l)
            return None
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

