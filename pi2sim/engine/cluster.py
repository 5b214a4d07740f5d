"""Cluster tier: every neuron cluster's I/O and compute, on its own thread and queue slot.

The FFN stages that run PowerInfer-2's neuron-cluster pipeline (``NeuronPipeline`` in ``cluster``
mode) are simulated event by event by :mod:`pi2sim.engine.pipeline_kernel`: one task per cluster
on the compute thread that takes it (each at its own core's rate), one read batch per cluster on
the I/O thread, every request on a UFS queue slot, DRAM shared with the NPU stream. Everything
else in a layer is a dense kernel split dynamically over the pool (or a blocking read, or
faults), whose time the analytic closed forms give exactly, so those stages are not broken into
events. Stages run one after another (the plan's order), which places each on the clock.

Why not SimPy, like the layer tier: with one SimPy event per cluster, a TurboSparse-Mixtral-47B
token is ~3,700 cluster tasks and ran at ~6 simulated tokens per wall-second; the compiled event
loop runs the same schedule hundreds of times faster (benchmarks/README.md). The layer tier
(SimPy, clusters grouped per layer, the pool as one server) stays the independent cross-check;
``tests/test_engine_limits.py`` checks the tiers agree and docs/fidelity.md says where they differ.
"""

from __future__ import annotations

import numpy as np

from .invariants import InvariantViolation, check_pipeline_outcome
from ..specs.device import DeviceSpec
from . import pipeline_kernel as PK
from .components import Components, StageTime, compose, reader_busy
from .cluster_kernel import KernelInputs, kernel_inputs, run_kernel
from .plan import DecodePlan, NeuronPipeline
from .recorder import Recorder
from .result import TimingResult
from .timeline_events import record_window
from .watchdog import stop


def pipeline_time(comp: Components, p: NeuronPipeline, shape: tuple[int, int], check: bool) -> tuple[StageTime, int]:
    """A cluster-mode pipeline stage of every token and layer, event by event; and how many
    events the loop processed."""
    inp = kernel_inputs(comp, p, shape)
    out, busy, _ = run_kernel(inp)
    T, L = shape
    _watchdog(p, out, L)
    if check:
        _check(p, inp, out, shape)
    work = inp.g_hit + inp.g_miss  # gate neurons
    body = out[:, PK.BODY]
    barrier = np.where((work > 0) | (inp.u_hit + inp.u_miss > 0), p.pool.barrier_s, 0.0)
    r = lambda x: x.reshape(T, L)  # noqa: E731
    busy_d: dict[str, np.ndarray] = {}
    for i, cid in enumerate(p.pool.ids()):
        busy_d[cid] = r(busy[:, i])
    reader_busy(comp, p, r(inp.gate_reqs.astype(np.float64)), r(inp.ud_reqs.astype(np.float64)), busy_d)
    dram = {"cpu": r(out[:, PK.CPU_BYTES_G] + out[:, PK.CPU_BYTES_U]), "dma": r(inp.gate_reqs * p.gate_req_size + inp.ud_reqs * p.ud_req_size)}
    if p.parallel is not None:
        busy_d[p.parallel.unit] = r(out[:, PK.NPU_END])
        dram[p.parallel.unit] = r(inp.npu_work)
    st = StageTime(r(body + barrier), r(out[:, PK.COMPUTE]), r(out[:, PK.IO]), r(out[:, PK.OTHER] + barrier), busy_d, dram)
    return st, int(out[:, PK.N_EVENTS].sum())


def _watchdog(p: NeuronPipeline, out: np.ndarray, L: int) -> None:
    """The kernel's own watchdog: a stage whose events stopped making progress, or that ran out of
    events with tasks left (a deadlock), stops the run with the stage named instead of a hang or
    a silently short stage."""
    stuck = np.flatnonzero(out[:, PK.STUCK])
    if len(stuck) == 0:
        return
    s = int(stuck[0])
    why = ("events stopped making progress" if out[s, PK.STUCK] == 1 else
           f"deadlock: no event left with {-out[s, PK.N_TASKS]:.0f} cluster tasks not run")
    stop("cluster tier", why, {"token": s // L, "layer": s % L, "stage": p.name, "events": int(out[s, PK.N_EVENTS]),
                               "tasks_not_run": int(-out[s, PK.N_TASKS]), "simulated_s": float(out[s, PK.BODY])})


def _check(p: NeuronPipeline, inp: KernelInputs, out: np.ndarray, shape: tuple[int, int]) -> None:
    L = shape[1]

    def fail(name: str, mask: np.ndarray, what) -> None:
        s = int(np.flatnonzero(mask)[0])
        raise InvariantViolation(name, what(s), s // L, s % L)
    early = out[:, PK.EARLY] > 1e-12
    if early.any():
        fail("data-before-compute", early, lambda s: f"{p.name}: a loaded cluster's compute started {out[s, PK.EARLY]:.3g} s before its reads completed")
    missing = out[:, PK.N_TASKS] != 0
    if missing.any():
        fail("work-conserved", missing, lambda s: f"{p.name}: {-out[s, PK.N_TASKS]:.0f} cluster tasks never ran")
    check_pipeline_outcome(p.name, lambda s: (s // L, s % L), out[:, PK.CPU_BYTES_G], out[:, PK.CPU_BYTES_U],
                           (inp.g_hit + inp.g_miss) * p.gate_bytes_per_neuron, (inp.u_hit + inp.u_miss) * p.ud_bytes_per_neuron,
                           out[:, PK.ISSUED], out[:, PK.COMPLETED], inp.gate_reqs + inp.ud_reqs)


def run_decode(device: DeviceSpec, plan: DecodePlan, *, progress: bool = False, recorder: Recorder | None = None,
               check: bool = False) -> TimingResult:
    comp = Components(device)
    shape = (plan.n_tokens, plan.n_layers)
    events = 0

    def layer_time(st) -> StageTime:
        nonlocal events
        if st.per_cluster_events:
            r, n = pipeline_time(comp, st, shape, check)
            events += n
            return r
        return st.closed_form(comp)

    layer_times = [layer_time(st) for st in plan.layer_stages]
    token_times = [st.closed_form(comp) for st in plan.token_stages]
    res = compose(plan, layer_times, token_times, "cluster", check=check)
    res.events = events
    if recorder is not None:
        record_window(comp, plan, layer_times, token_times, res.token_s, recorder)
    return res
