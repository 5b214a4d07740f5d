"""The cluster tier's interface to its compiled event loop (:mod:`pi2sim.engine.pipeline_kernel`):
a neuron-pipeline stage flattened over ``[T * L]``, and the call that runs it (optionally
recording every task, batch, request and rate change). The tier (:mod:`pi2sim.engine.cluster`)
and its timeline (:mod:`pi2sim.engine.timeline_events`) both use it; neither imports the other
for it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import pipeline_kernel as PK
from .components import Components
from .compute import batched_rate, sparse_factor
from .plan import NeuronPipeline


@dataclass
class KernelInputs:
    """A cluster-mode pipeline stage flattened over [T * L] for the kernel."""

    g_hit: np.ndarray
    g_miss: np.ndarray
    u_hit: np.ndarray
    u_miss: np.ndarray
    gate_reqs: np.ndarray
    ud_reqs: np.ndarray
    factor: np.ndarray
    per_g: np.ndarray
    per_u: np.ndarray
    lat_g: np.ndarray
    lat_u: np.ndarray
    npu_work: np.ndarray
    thread_rate: np.ndarray
    scalars: tuple

    def take(self, idx: np.ndarray) -> "KernelInputs":
        f = {k: (v[idx] if isinstance(v, np.ndarray) and k != "thread_rate" else v) for k, v in vars(self).items()}
        return KernelInputs(**f)

    def args(self) -> tuple:
        return (self.g_hit, self.g_miss, self.u_hit, self.u_miss, self.gate_reqs, self.ud_reqs, self.factor,
                self.per_g, self.per_u, self.lat_g, self.lat_u, self.npu_work, self.thread_rate, *self.scalars)


def _flat(x, shape) -> np.ndarray:
    """``x`` (a scalar, [T, L] or already flat [T * L]) as a flat float64 array."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1 and a.size == shape[0] * shape[1]:
        return np.ascontiguousarray(a)
    return np.ascontiguousarray(np.broadcast_to(a, shape)).reshape(-1)


def _ints(x, shape) -> np.ndarray:
    return np.rint(_flat(x, shape)).astype(np.int64)


def kernel_inputs(comp: Components, p: NeuronPipeline, shape: tuple[int, int]) -> KernelInputs:
    dev = comp.device
    ufs = comp.ufs
    g_hit, g_miss = _ints(p.gate_hit_n, shape), _ints(p.gate_miss_n, shape)
    rows = np.maximum(_flat(p.rows_total, shape), 1.0)
    factor = np.asarray(sparse_factor((g_hit + g_miss) / rows, dev.cpu.sparse_density_exponent, p.pool.sparse_efficiency), dtype=np.float64)
    if p.batch is not None:  # each row serves several sequences: the same rule per core as the closed form
        e = p.pool.sparse_efficiency
        factor = batched_rate(e * factor, 1.0, _flat(p.batch, shape), dev.cpu.batch_compute_share) / e
    span = _flat(p.span, shape)
    per_g = _flat(ufs.period(p.gate_req_size, span, p.io_class), shape)
    per_u = _flat(ufs.period(p.ud_req_size, span, p.io_class), shape)
    lat_g = _flat(ufs.request_latency(p.gate_req_size, span, p.io_class), shape)
    lat_u = _flat(ufs.request_latency(p.ud_req_size, span, p.io_class), shape)
    if p.parallel is not None:
        npu_work = _flat(p.parallel.work, shape)
        unit = p.parallel.unit
        demands = np.asarray(comp.demand(p.parallel), dtype=np.float64)  # an array when the NPU part is batched (Best-of-N)
        if demands.ndim and np.ptp(demands) > 1e-9 * demands.max():
            from ..errors import InputError

            raise InputError(None, "fidelity", "the analytic or layer tier: the cluster tier's NPU stream has one rate per stage, and this batch changes it", "cluster")
        npu_demand = float(demands.max()) if demands.ndim else float(demands)
        npu_fixed = float(p.parallel.fixed_s)
        npu_cap = comp.dram.agent_cap(unit)
        joint = comp.dram.total_cap({"cpu", unit})
    else:
        npu_work = np.zeros(g_hit.shape)
        npu_demand, npu_fixed, npu_cap, joint = 0.0, 0.0, 0.0, comp.dram.total_cap({"cpu"})
    thread_rate = np.array([core.matvec_bps(p.dtype) * p.pool.sparse_efficiency for core in p.pool.cores], dtype=np.float64)
    scalars = (int(p.cluster_neurons), float(p.gate_bytes_per_neuron), float(p.ud_bytes_per_neuron), bool(p.two_phase),
               float(comp.dram.agent_cap("cpu")), float(npu_cap), float(joint), npu_demand, npu_fixed)
    return KernelInputs(g_hit, g_miss, _ints(p.ud_hit_n, shape), _ints(p.ud_miss_n, shape), _ints(p.gate_reqs, shape), _ints(p.ud_reqs, shape),
                   np.ascontiguousarray(factor.reshape(-1)), per_g, per_u, lat_g, lat_u, npu_work, thread_rate, scalars)


def _no_record():
    return np.zeros((0, 8)), np.zeros((0, 5)), np.zeros((0, 5)), np.zeros((0, 4)), np.zeros(5, np.int64)


def run_kernel(inp: KernelInputs, record: bool = False):
    """Run the event loop over the stages of ``inp``; with ``record``, also return every task,
    batch, request and rate change (the timeline)."""
    S = len(inp.g_hit)
    out = np.zeros((S, PK.N_OUT))
    busy = np.zeros((S, len(inp.thread_rate)))
    if record:  # buffers for every task, batch, request and rate change the stages can have
        k = inp.scalars[0]  # neurons per cluster
        n_tasks = int(np.sum(-(-inp.g_hit // k) + 2 * -(-inp.g_miss // k)))
        n_req = int(np.sum(inp.gate_reqs + inp.ud_reqs))
        n_batches = int(np.sum(2 * -(-inp.g_miss // k)))
        arrays = (np.zeros((n_tasks + 1, 8)), np.zeros((n_batches + 1, 5)), np.zeros((n_req + 1, 5)),
                  np.zeros((4 * (n_tasks + n_batches) + 8 * S + 8, 4)), np.zeros(5, np.int64))
    else:
        arrays = _no_record()
    PK.simulate(*inp.args(), out, busy, record, 0, S, *arrays)
    if arrays[4][4]:
        raise AssertionError(f"cluster tier: {arrays[4][4]} timeline records did not fit the buffers sized for them")
    return out, busy, arrays
