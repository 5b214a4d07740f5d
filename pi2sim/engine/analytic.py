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
from .components import Components, compose
from .plan import DecodePlan, PrefillPlan
from .result import PrefillTiming, TimingResult


def run_decode(device: DeviceSpec, plan: DecodePlan, *, progress: bool = False, recorder=None, check: bool = False) -> TimingResult:
    """The analytic tier: every stage's closed form (no events, so no timeline: ``recorder`` must be None)."""
    if recorder is not None:
        raise ValueError("the analytic tier has no events to record")
    comp = Components(device)
    return compose(plan, [st.closed_form(comp) for st in plan.layer_stages], [st.closed_form(comp) for st in plan.token_stages], "analytic", check)


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
    dram: dict[str, float] = {}

    def ledger(r, per_layer: bool) -> None:  # a per-layer stage's scalar is paid by every layer
        for into, parts in ((busy, r.busy), (dram, r.dram)):
            for k, v in parts.items():
                into[k] = into.get(k, 0.0) + float(np.sum(np.broadcast_to(v, (L,)) if per_layer else v))

    for c in plan.compute:
        r = c.closed_form(comp)
        compute += np.broadcast_to(r.total, (L,))
        ledger(r, True)
    load = np.zeros(L)
    if plan.load is not None:
        r = plan.load.closed_form(comp)
        load = np.broadcast_to(r.total, (L,)).astype(np.float64)
        ledger(r, True)
    head = 0.0
    for c in plan.head:
        r = c.closed_form(comp)
        head += float(np.sum(r.total))
        ledger(r, False)
    if plan.pipelined:
        nxt = np.r_[load[1:], 0.0]
        per_layer = np.maximum(compute, nxt)
        total = load[0] + per_layer.sum() + head
        exposed_io = load[0] + np.maximum(nxt - compute, 0.0).sum()
    else:
        total = load.sum() + compute.sum() + head
        exposed_io = load.sum()
    split = {"compute": float(total - exposed_io), "io": float(exposed_io), "other": 0.0}
    return PrefillTiming(float(total), split, busy, dram)
