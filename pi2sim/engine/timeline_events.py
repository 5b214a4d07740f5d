"""The cluster tier's timeline: the records of a window of decode tokens.

Stages run one after another, so a stage's start is the sum of the durations before it. Every
stage but a cluster pipeline draws its own slices (:meth:`~pi2sim.engine.stages.base.StageKind.draw`:
a dense kernel one slice per core of its pool, the NPU's part its own slice); the
neuron-cluster pipelines of the window are simulated again with recording on
(:mod:`pi2sim.engine.pipeline_kernel`), which gives every cluster task on its thread, every read
batch on the I/O thread, every request on a UFS queue slot and every change of the DRAM rates.
"""

from __future__ import annotations

import numpy as np

from . import pipeline_kernel as PK
from .components import Components, StageTime
from .cluster_kernel import kernel_inputs, run_kernel
from .plan import DecodePlan, NeuronPipeline
from .plan import value_at as _at
from .recorder import Recorder, cpu_track

TASK_NAMES = {PK.HIT: "cluster, cached", PK.MISS_GATE: "gate, loaded", PK.MISS_UD: "up/down, loaded"}


def _pipeline(rec: Recorder, comp: Components, p: NeuronPipeline, stages: list[tuple[int, int, float]], shape) -> None:
    """Simulate the window's pipeline stages again with recording on and place their records."""
    inp = kernel_inputs(comp, p, shape)
    L = shape[1]
    idx = np.array([t * L + l for t, l, _ in stages], dtype=np.int64)
    sub = inp.take(idx)
    out, _, (r_task, r_io, r_req, r_bw, r_count) = run_kernel(sub, record=True)
    starts = np.array([s0 for _, _, s0 in stages])
    io_track = cpu_track(p.io_core, "io" if p.io_core in p.pool.ids() else None)
    cores = p.pool.ids()
    k_of = {0: "gate", 1: "up/down"}
    if rec.coarse:
        _pipeline_spans(rec, stages, starts, (r_task, r_io, r_req, r_count), io_track, cores)
    else:
        _pipeline_detail(rec, p, stages, starts, (r_task, r_io, r_req, r_bw, r_count), io_track, cores, k_of)
    for s, (t, l, s0) in enumerate(stages):
        rec.begin_token(t)
        body = out[s, PK.BODY]
        rec.dram_bandwidth("cpu", s0 + body, 0.0)
        if p.parallel is not None and out[s, PK.NPU_END] > 0:
            rec.on_unit(p.parallel.unit, p.parallel.name, s0, s0 + out[s, PK.NPU_END], token=t, layer=l)
            rec.dram_bandwidth(p.parallel.unit, s0 + out[s, PK.NPU_END], 0.0)
        g = sub.g_hit[s] + sub.g_miss[s]
        if g > 0:
            rec.hit_rate(s0, round(float(sub.g_hit[s]) / g, 4))
        if p.pool.barrier_s and (g > 0 or sub.u_hit[s] + sub.u_miss[s] > 0):
            rec.on_pool(p.pool, "barrier", s0 + body, s0 + body + p.pool.barrier_s, stage=p.name)


def _merged(keys: np.ndarray, t0: np.ndarray, t1: np.ndarray):
    """The union of intervals [t0, t1) per key: (key, start, end) of each maximal busy run."""
    if len(keys) == 0:
        return []
    order = np.lexsort((t0, keys))
    k, a, b = keys[order], t0[order], t1[order]
    # running maximum of the ends within each key: the offset keeps the sorted keys' values apart
    off = float(b.max() - min(a.min(), 0.0) + 1.0)
    run = np.maximum.accumulate(b + k * off) - k * off
    first = np.flatnonzero(np.r_[True, (k[1:] != k[:-1]) | (a[1:] > run[:-1] + 1e-12)])
    return zip(k[first].tolist(), a[first].tolist(), np.maximum.reduceat(b, first).tolist())


def _pipeline_spans(rec: Recorder, stages, starts, records, io_track: str, cores: list[str]) -> None:
    """A coarse recorder's view of the window's pipeline stages: each core's, the I/O thread's and
    the UFS queue's busy runs (the union of their tasks, issues and requests), no single records."""
    r_task, r_io, r_req, r_count = records
    n_task, n_io, n_req = int(r_count[0]), int(r_count[1]), int(r_count[2])
    C = len(cores)
    tasks = r_task[:n_task]
    for key, a, b in _merged(tasks[:, 0].astype(np.int64) * C + tasks[:, 1].astype(np.int64), tasks[:, 4], tasks[:, 5]):
        s, i = divmod(key, C)
        t, l, _ = stages[s]
        rec.begin_token(t)
        rec.slice(cpu_track(cores[i]), "neuron clusters", starts[s] + a, starts[s] + b, token=t, layer=l)
    io = r_io[:n_io]
    for s, a, b in _merged(io[:, 0].astype(np.int64), io[:, 3], io[:, 4]):
        t, l, _ = stages[s]
        rec.begin_token(t)
        rec.slice(io_track, "issue reads", starts[s] + a, starts[s] + b, token=t, layer=l)
    req = r_req[:n_req]
    for s, a, b in _merged(req[:, 0].astype(np.int64), req[:, 2], req[:, 3]):
        t, l, _ = stages[s]
        rec.begin_token(t)
        rec.ufs_batch("reads", starts[s] + a, starts[s] + b, token=t, layer=l)


def _pipeline_detail(rec: Recorder, p: NeuronPipeline, stages, starts, records, io_track: str, cores: list[str], k_of: dict) -> None:
    """Every request, I/O issue, task and bandwidth change of the window's pipeline stages."""
    r_task, r_io, r_req, r_bw, r_count = records
    # requests first (their queue slots are the flows' sources), batch by batch in issue order
    last_req: dict[int, tuple[str, float]] = {}
    batch_of_req = r_req[: r_count[2], 4].astype(np.int64)
    for j in range(int(r_count[2])):
        s = int(r_req[j, 0])
        t, l, _ = stages[s]
        rec.begin_token(t)
        b = int(batch_of_req[j])
        size = p.gate_req_size if int(r_req[j, 1]) == 0 else p.ud_req_size
        track = rec.ufs_request(starts[s] + r_req[j, 2], starts[s] + r_req[j, 3], f"{k_of[int(r_req[j, 1])]} read {size / 1024:g} KiB", token=t, layer=l)
        last_req[b] = (track, starts[s] + r_req[j, 3] - 1e-9)  # its completion, inside its slice (Perfetto binds flows to enclosing slices)
    flows: dict[int, int | None] = {}
    for j in range(int(r_count[1])):
        s = int(r_io[j, 0])
        t, l, _ = stages[s]
        rec.begin_token(t)
        what = k_of[int(r_io[j, 1])]
        rec.slice(io_track, f"issue {int(r_io[j, 2])} {what} reads", starts[s] + r_io[j, 3], starts[s] + r_io[j, 4], token=t, layer=l)
        if j in last_req:
            flows[j] = rec.flow_start(*last_req[j])
    for j in range(int(r_count[0])):
        s = int(r_task[j, 0])
        t, l, _ = stages[s]
        rec.begin_token(t)
        kind, n = int(r_task[j, 2]), int(r_task[j, 3])
        track = cpu_track(cores[int(r_task[j, 1])])
        t0 = starts[s] + r_task[j, 4]
        rec.slice(track, f"{TASK_NAMES[kind]} ({n} neurons)", t0, starts[s] + r_task[j, 5], token=t, layer=l, cluster=int(r_task[j, 7]))
        if r_task[j, 6] >= 0:
            rec.flow_end(flows.get(int(r_task[j, 6])), track, t0)
    for j in range(int(r_count[3])):
        s = int(r_bw[j, 0])
        t, l, _ = stages[s]
        rec.begin_token(t)
        rec.dram_bandwidth("cpu", starts[s] + r_bw[j, 1], round(r_bw[j, 2] / 1e9, 3))
        if p.parallel is not None:
            rec.dram_bandwidth(p.parallel.unit, starts[s] + r_bw[j, 1], round(r_bw[j, 3] / 1e9, 3))


def record_window(comp: Components, plan: DecodePlan, layer_times: list[StageTime], token_times: list[StageTime],
                  token_s: np.ndarray, rec: Recorder) -> None:
    """Records of the recorder's token window; ``token_s`` are the run's token latencies."""
    T, L = plan.n_tokens, plan.n_layers
    rec.core_order = [c.id for c in comp.device.cores()]
    first = min(rec.first_token, T)
    stop = T if rec.stop_token is None else min(rec.stop_token, T)

    def total(r: StageTime, t: int, l: int | None) -> float:
        return _at(np.broadcast_to(r.total, (T, L) if l is not None else (T,)), t, l)

    t_start = np.concatenate([[0.0], np.cumsum(token_s)])
    pipelines: dict[int, list[tuple[int, int, float]]] = {}
    for t in range(first, stop):
        rec.begin_token(t)
        now = t_start[t]
        for l in range(L):
            l_start = now
            if plan.dram_resident_bytes is not None:
                rec.dram_resident(now, round(float(plan.dram_resident_bytes[t, l]) / 1e9, 4))
            for i, st in enumerate(plan.layer_stages):
                d = total(layer_times[i], t, l)
                if st.per_cluster_events:
                    pipelines.setdefault(i, []).append((t, l, now))
                else:
                    st.draw(rec, comp, t, l, now, d)
                now += d
            rec.layer_span(l, l_start, now, token=t, layer=l)
        for i, st in enumerate(plan.token_stages):
            d = total(token_times[i], t, None)
            st.draw(rec, comp, t, None, now, d)
            now += d
        rec.token_span(t, t_start[t], now, token=t, latency_ms=round((now - t_start[t]) * 1e3, 4))
    for i, stages in pipelines.items():
        _pipeline(rec, comp, plan.layer_stages[i], stages, (T, L))
