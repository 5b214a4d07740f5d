"""Event-by-event simulation of the neuron-cluster pipeline (compiled with numba).

One call simulates the FFN stage (a :class:`~pi2sim.engine.plan.NeuronPipeline` in ``cluster``
mode) of every decode token and layer of a run. Each stage starts with idle threads and an idle
I/O thread and ends when its last cluster is computed, so stages are independent and the caller
places them on the clock. Inside a stage, every neuron cluster is an event:

* **Compute threads** (one per core of the pool, each at its own core's sparse-kernel rate) take
  the next task when they go idle, lowest thread first: the Gate compute of a freshly loaded
  cluster first (it releases that cluster's Up/Down reads, keeping the I/O thread busy), else the
  oldest ready task. A cached (hit) cluster is one task: its Gate rows, then its Up/Down rows.
  A loaded (miss) cluster is two: Gate compute once its Gate part has arrived, Up/Down compute
  once the Up/Down part has (two-phase loading), or right after the Gate compute when the whole
  bundle was read at once.
* **The I/O thread** issues one cluster's reads as a batch: ``n`` requests, one every ``period``,
  the last complete ``latency + (n - 1) * period`` after the first issue (the UFS model of
  :mod:`pi2sim.engine.ufs`; up to 32 in flight). Up/Down batches go before pending Gate batches.
* **DRAM**: the threads' streams and the NPU's (hybrid decoding: the NPU computes the hot rows
  after its call's fixed cost) share bandwidth by :meth:`~pi2sim.engine.dram.DramModel.allocate`
  (max-min fair under per-agent and joint caps); every rate is re-allocated when a stream starts
  or ends, and the bytes each stream moved are brought up to date (fluid model).

The stage time splits into compute (the threads' average busy time, or the NPU's time if it ends
later, as in the analytic tier), I/O stall and other: the rest of the stage is time threads sat
idle, split in proportion between idling while reads were outstanding (I/O) and idling with
nothing left to wait for (the tail's load imbalance).

With ``record`` the kernel also writes every task, batch, request and bandwidth change of the
selected stages into preallocated arrays (the timeline); the caller sizes them from the plan, and
a write that would not fit is counted in ``r_count[4]`` instead of made (numba does not check
bounds; the caller treats a count above zero as its own bug).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# task kinds
HIT, MISS_GATE, MISS_UD = 0, 1, 2
# per-stage outputs (columns of ``out``)
(BODY, COMPUTE, IO, OTHER, NPU_END, CPU_BYTES_G, CPU_BYTES_U, ISSUED, COMPLETED, EARLY, N_TASKS, N_EVENTS, STUCK) = range(13)
N_OUT = 13
EPS = 1e-15  # seconds: events closer than this are simultaneous


@njit(cache=True, nogil=True)
def _split_even(total, groups, out):
    """``total`` into ``groups`` near-equal integer parts (the first ones one larger)."""
    q = total // groups
    r = total - q * groups
    for i in range(groups):
        out[i] = q + (1 if i < r else 0)


@njit(cache=True, nogil=True)
def _split_like(total, weights, groups, out):
    """``total`` into integer parts proportional to ``weights`` (cumulative floor: exact sum)."""
    wsum = 0
    for i in range(groups):
        wsum += weights[i]
    if wsum == 0:
        _split_even(total, groups, out)
        return
    acc = 0
    prev = 0
    for i in range(groups):
        acc += weights[i]
        cur = (total * acc) // wsum
        out[i] = cur - prev
        prev = cur


@njit(cache=True, nogil=True)
def _split_requests(total, neurons, groups, out):
    """A stage's ``total`` requests of one kind apportioned to its loaded clusters by their neurons."""
    _split_like(total, neurons, groups, out)


@njit(cache=True, nogil=True)
def _read_done(start, lat, per, n):
    """When the last of ``n`` requests issued from ``start``, one per ``per``, completes."""
    return start + lat + (n - 1) * per


@njit(cache=True, nogil=True)
def _allocate(cpu_demand, npu_demand, cpu_cap, npu_cap, joint_cap):
    """Max-min fair DRAM rates of the CPU and the NPU (``DramModel.allocate`` for two agents)."""
    c = min(cpu_demand, cpu_cap)
    n = min(npu_demand, npu_cap)
    if c <= 0.0:
        return 0.0, n
    if n <= 0.0:
        return c, 0.0
    if c + n <= joint_cap:
        return c, n
    half = joint_cap / 2.0
    if c <= half:
        return c, joint_cap - c
    if n <= half:
        return joint_cap - n, n
    return half, half


@njit(cache=True, nogil=True)
def simulate(
    g_hit, g_miss, u_hit, u_miss, gate_reqs, ud_reqs,  # [S] ints per stage
    factor,  # [S] sparse-kernel speed factor of the stage (density)
    per_g, per_u, lat_g, lat_u,  # [S] UFS period / single-request latency of Gate and Up/Down requests
    npu_work,  # [S] bytes the NPU streams in parallel (0: none)
    thread_rate,  # [n] sparse-kernel demand of each compute thread (bytes/s, before ``factor``)
    k, gate_bpn, ud_bpn, two_phase,
    cpu_cap, npu_cap, joint_cap, npu_demand, npu_fixed,
    out,  # [S, N_OUT] float64
    busy,  # [S, n] busy seconds of each thread in each stage
    record, rec_lo, rec_hi,  # record stages [rec_lo, rec_hi)
    r_task, r_io, r_req, r_bw, r_count,  # record arrays and their fill counters
):
    S = len(g_hit)
    nt = len(thread_rate)
    # per-thread state
    th_task = np.full(nt, -1, np.int64)
    th_rem = np.zeros(nt, np.float64)
    th_rate = np.zeros(nt, np.float64)
    th_start = np.zeros(nt, np.float64)
    for s in range(S):
        rec = record and rec_lo <= s < rec_hi
        n_hit = (g_hit[s] + k - 1) // k if g_hit[s] > 0 else 0
        n_miss = (g_miss[s] + k - 1) // k if g_miss[s] > 0 else 0
        n_tasks = n_hit + 2 * n_miss
        # tasks: kind, bytes (Gate, Up/Down), neurons, data arrival, flow id (timeline)
        t_kind = np.empty(n_tasks, np.int64)
        t_gbytes = np.zeros(n_tasks, np.float64)
        t_ubytes = np.zeros(n_tasks, np.float64)
        t_neur = np.zeros(n_tasks, np.int64)
        t_arrive = np.zeros(n_tasks, np.float64)  # data arrival (checked against each task's start)
        t_flow = np.full(n_tasks, -1, np.int64)
        parts = np.empty(max(n_hit, n_miss, 1), np.int64)
        parts2 = np.empty(max(n_hit, n_miss, 1), np.int64)
        if n_hit > 0:
            _split_even(g_hit[s], n_hit, parts)
            _split_like(u_hit[s], parts, n_hit, parts2)
            for i in range(n_hit):
                t_kind[i] = HIT
                t_gbytes[i] = parts[i] * gate_bpn
                t_ubytes[i] = parts2[i] * ud_bpn
                t_neur[i] = parts[i]
        m_gr = np.empty(max(n_miss, 1), np.int64)
        m_ur = np.empty(max(n_miss, 1), np.int64)
        if n_miss > 0:
            _split_even(g_miss[s], n_miss, parts)
            _split_like(u_miss[s], parts, n_miss, parts2)
            _split_requests(gate_reqs[s], parts, n_miss, m_gr)
            _split_requests(ud_reqs[s], parts2 if u_miss[s] > 0 else parts, n_miss, m_ur)
            for i in range(n_miss):
                a = n_hit + 2 * i
                t_kind[a] = MISS_GATE
                t_gbytes[a] = parts[i] * gate_bpn
                t_neur[a] = parts[i]
                t_kind[a + 1] = MISS_UD
                t_ubytes[a + 1] = parts2[i] * ud_bpn
                t_neur[a + 1] = parts2[i]
        # queues (FIFO arrays of task ids)
        ready = np.empty(n_tasks + 1, np.int64)
        r_head = 0
        r_tail = 0
        for i in range(n_hit):
            ready[r_tail] = i
            r_tail += 1
        urgent = np.empty(n_miss + 1, np.int64)
        u_head = 0
        u_tail = 0
        # I/O thread: pending Gate batches (miss clusters in order) and Up/Down batches
        gq = np.empty(n_miss + 1, np.int64)
        gq_head = 0
        gq_tail = 0
        for i in range(n_miss):
            gq[gq_tail] = i
            gq_tail += 1
        uq = np.empty(n_miss + 1, np.int64)
        uq_head = 0
        uq_tail = 0
        io_free = 0.0
        # read batches in flight: when they complete, the task they release, their requests
        f_time = np.empty(2 * n_miss + 1, np.float64)
        f_task = np.empty(2 * n_miss + 1, np.int64)
        f_n = np.empty(2 * n_miss + 1, np.int64)
        n_f = 0
        # NPU
        npu_rem = npu_work[s]
        npu_on = False
        npu_end = 0.0
        npu_starts = npu_fixed if npu_rem > 0 else -1.0
        done = 0
        now = 0.0
        compute_t = 0.0
        io_t = 0.0
        other_t = 0.0
        gbytes_done = 0.0
        ubytes_done = 0.0
        issued = 0
        completed = 0
        early = 0.0
        n_events = 0
        max_events = 64 * (n_tasks + 4) + 1000
        last_cpu_rate = -1.0
        last_npu_rate = -1.0
        for i in range(nt):
            th_task[i] = -1
        while True:
            # 1. the I/O thread issues the next batch when it is free (Up/Down first)
            while io_free <= now + EPS and (uq_head < uq_tail or gq_head < gq_tail):
                if uq_head < uq_tail:
                    c = uq[uq_head]
                    uq_head += 1
                    n = m_ur[c]
                    per = per_u[s]
                    lat = lat_u[s]
                    task = n_hit + 2 * c + 1
                    kind = 1
                else:
                    c = gq[gq_head]
                    gq_head += 1
                    n = m_gr[c] + (0 if two_phase else m_ur[c])
                    per = per_g[s]
                    lat = lat_g[s]
                    task = n_hit + 2 * c
                    kind = 0
                start = max(now, io_free)
                if n <= 0:
                    t_arrive[task] = start
                    f_time[n_f] = start
                else:
                    t_arrive[task] = start + lat + (n - 1) * per  # when the weights are in DRAM
                    f_time[n_f] = _read_done(start, lat, per, n)  # when the task is released
                    io_free = start + n * per
                    issued += n
                    if rec and (r_count[1] >= r_io.shape[0] or r_count[2] + n > r_req.shape[0]):
                        r_count[4] += 1  # would not fit: counted, not written
                    elif rec:
                        j = r_count[1]
                        r_io[j, 0] = s
                        r_io[j, 1] = kind
                        r_io[j, 2] = n
                        r_io[j, 3] = start
                        r_io[j, 4] = start + n * per
                        r_count[1] = j + 1
                        for q in range(n):
                            jj = r_count[2]
                            r_req[jj, 0] = s
                            r_req[jj, 1] = kind
                            r_req[jj, 2] = start + q * per
                            r_req[jj, 3] = start + q * per + lat
                            r_req[jj, 4] = j  # the batch
                            r_count[2] = jj + 1
                        t_flow[task] = j
                f_task[n_f] = task
                f_n[n_f] = n
                n_f += 1
            # 2. idle threads take tasks: loaded Gate parts first, then the oldest ready task
            for i in range(nt):
                if th_task[i] >= 0:
                    continue
                if u_head < u_tail:
                    task = urgent[u_head]
                    u_head += 1
                elif r_head < r_tail:
                    task = ready[r_head]
                    r_head += 1
                else:
                    break
                th_task[i] = task
                th_rem[i] = t_gbytes[task] + t_ubytes[task]
                th_start[i] = now
                if t_arrive[task] > now + EPS:
                    early = max(early, t_arrive[task] - now)
            # 3. rates: the threads' streams and the NPU share DRAM
            cpu_demand = 0.0
            active = 0
            for i in range(nt):
                if th_task[i] >= 0:
                    cpu_demand += thread_rate[i] * factor[s]
                    active += 1
            if not npu_on and npu_starts >= 0 and npu_starts <= now + EPS and npu_rem > 0:
                npu_on = True
            cpu_rate, npu_rate = _allocate(cpu_demand, npu_demand if npu_on else 0.0, cpu_cap, npu_cap, joint_cap)
            scale = cpu_rate / cpu_demand if cpu_demand > 0 else 0.0
            for i in range(nt):
                if th_task[i] >= 0:
                    th_rate[i] = thread_rate[i] * factor[s] * scale
            if rec and (cpu_rate != last_cpu_rate or npu_rate != last_npu_rate):
                j = r_count[3]
                if j >= r_bw.shape[0]:
                    r_count[4] += 1
                else:
                    r_bw[j, 0] = s
                    r_bw[j, 1] = now
                    r_bw[j, 2] = cpu_rate
                    r_bw[j, 3] = npu_rate
                    r_count[3] = j + 1
            last_cpu_rate = cpu_rate
            last_npu_rate = npu_rate
            # 4. the next event
            nxt = np.inf
            for i in range(nt):
                if th_task[i] >= 0:
                    if th_rate[i] > 0:
                        nxt = min(nxt, now + th_rem[i] / th_rate[i])
                    elif th_rem[i] <= 0:
                        nxt = now
            for q in range(n_f):
                nxt = min(nxt, f_time[q])
            if io_free > now + EPS and (uq_head < uq_tail or gq_head < gq_tail):
                nxt = min(nxt, io_free)
            if npu_rem > 0:
                if npu_on and npu_rate > 0:
                    nxt = min(nxt, now + npu_rem / npu_rate)
                elif not npu_on:
                    nxt = min(nxt, npu_starts)
            if nxt == np.inf:
                break
            # 5. advance: progress, and what the idle threads were doing meanwhile
            dt = nxt - now
            if dt > 0:
                idle = nt - active
                if idle > 0:
                    share = dt * idle / nt
                    # idle with nothing ready: waiting for reads (queued or in flight), for the NPU, or done
                    if n_f > 0 or uq_head < uq_tail or gq_head < gq_tail:
                        io_t += share
                    elif npu_rem > 0:
                        compute_t += share
                    else:
                        other_t += share
                compute_t += dt * active / nt
                for i in range(nt):
                    if th_task[i] >= 0:
                        th_rem[i] -= th_rate[i] * dt
                        busy[s, i] += dt
                if npu_on:
                    npu_rem -= npu_rate * dt
            now = nxt
            n_events += 1
            if n_events > max_events:  # cannot happen unless the loop stopped making progress
                out[s, STUCK] = 1.0
                break
            # 6. events at `now`: finished tasks (by thread), completed batches (by issue), NPU
            for i in range(nt):
                task = th_task[i]
                if task < 0 or th_rem[i] > max(1e-9 * (t_gbytes[task] + t_ubytes[task]), 1e-6):
                    continue
                th_task[i] = -1
                done += 1
                gbytes_done += t_gbytes[task]
                ubytes_done += t_ubytes[task]
                if rec and r_count[0] >= r_task.shape[0]:
                    r_count[4] += 1
                elif rec:
                    j = r_count[0]
                    r_task[j, 0] = s
                    r_task[j, 1] = i
                    r_task[j, 2] = t_kind[task]
                    r_task[j, 3] = t_neur[task]
                    r_task[j, 4] = th_start[i]
                    r_task[j, 5] = now
                    r_task[j, 6] = t_flow[task]
                    r_task[j, 7] = task
                    r_count[0] = j + 1
                if t_kind[task] == MISS_GATE:
                    ud = task + 1
                    c = (task - n_hit) // 2
                    if t_neur[ud] == 0 and (m_ur[c] == 0 or not two_phase):
                        done += 1  # false positives only: no Up/Down rows to read or compute
                    elif two_phase:
                        uq[uq_tail] = c
                        uq_tail += 1
                    else:  # the whole bundle was read with the Gate part
                        t_arrive[ud] = t_arrive[task]
                        ready[r_tail] = ud
                        r_tail += 1
            q = 0
            while q < n_f:
                if f_time[q] <= now + EPS:
                    task = f_task[q]
                    completed += f_n[q]
                    if t_kind[task] == MISS_GATE and two_phase:
                        urgent[u_tail] = task
                        u_tail += 1
                    else:
                        ready[r_tail] = task
                        r_tail += 1
                    # remove (keep issue order)
                    for qq in range(q, n_f - 1):
                        f_time[qq] = f_time[qq + 1]
                        f_task[qq] = f_task[qq + 1]
                        f_n[qq] = f_n[qq + 1]
                    n_f -= 1
                else:
                    q += 1
            if npu_on and npu_rem <= max(1e-9 * npu_work[s], 1e-6):
                npu_rem = 0.0
                npu_on = False
                npu_end = now
        # critical path: compute is the threads' average busy time, or the NPU's when it ends
        # later (as in the analytic tier); the rest of the stage is idle time, split between
        # waiting for reads and the tail's load imbalance in proportion to how it was spent
        crit = min(now, max(compute_t, npu_end))
        rest = now - crit
        out[s, BODY] = now
        out[s, COMPUTE] = crit
        out[s, IO] = rest * io_t / (io_t + other_t) if io_t + other_t > 0 else 0.0
        out[s, OTHER] = rest - out[s, IO]
        out[s, NPU_END] = npu_end
        out[s, CPU_BYTES_G] = gbytes_done
        out[s, CPU_BYTES_U] = ubytes_done
        out[s, ISSUED] = issued
        out[s, COMPLETED] = completed
        out[s, EARLY] = early
        out[s, N_TASKS] = done - n_tasks  # 0 when every task ran
        if done < n_tasks and out[s, STUCK] == 0:
            out[s, STUCK] = 2.0  # nothing left to happen, tasks left undone: a deadlock
        out[s, N_EVENTS] = n_events
