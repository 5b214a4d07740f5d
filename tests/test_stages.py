"""Every stage kind carries its own behaviour (pi2sim/engine/stages): each is checked here on the
stages real policies plan, one kind at a time, so a new kind is held to the same rules."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import pi2sim.simulation as S
from pi2sim.engine import tiers
from pi2sim.engine.components import Components
from pi2sim.engine.plan import DecodePlan
from pi2sim.engine.stages import KINDS, NeuronPipeline, StageKind


def _stages():
    """One plan per policy that uses a kind: PowerInfer-2 (compute kernels, the neuron pipeline),
    LLM in a Flash (blocking reads), llama.cpp under memory pressure (page faults), SmallThinker
    with a small expert cache (reads prefetched during attention)."""
    runs = [
        dict(policy="powerinfer2", ffn_offload=0.5),
        dict(policy="powerinfer2", ffn_offload=0.5, set_values={"pipeline": "sync"}),
        dict(policy="llm-in-a-flash"),
        dict(policy="llamacpp", memory_gb=0.32, set_values={"build": "2024"}),  # the paper's build maps the file: faults
        dict(policy="smallthinker", model="smallthinker-4b-a0.6b", memory_gb=0.8, device="oneplus13"),  # expert reads during attention
    ]
    out = []
    for kw in runs:
        sv = kw.pop("set_values", {})
        kw.setdefault("model", "smollm2-135m")
        r = S.simulate(decode_tokens=4, fidelity="analytic", **kw, **sv)
        plan = r.policy.decode_plan(r.access, r.memory)
        out += [(r.device, plan, st, True) for st in plan.layer_stages]
        out += [(r.device, plan, st, False) for st in plan.token_stages]
    return out


STAGES = _stages()


def test_every_kind_has_a_closed_form_and_the_plans_use_them_all():
    for kind in KINDS:
        assert issubclass(kind, StageKind) and kind.closed_form is not StageKind.closed_form
    assert {type(st) for _, _, st, _ in STAGES} == set(KINDS)


def _alone(plan: DecodePlan, st, per_layer: bool) -> DecodePlan:
    return DecodePlan(plan.n_tokens, plan.n_layers, [st] if per_layer else [], [] if per_layer else [st])


@pytest.mark.parametrize("i", range(len(STAGES)), ids=lambda i: f"{type(STAGES[i][2]).__name__}-{STAGES[i][2].name}")
def test_one_instance_is_the_closed_form_at_that_instance(i):
    """``at(t, l)`` keeps exactly one instance's amounts: its closed form is the full closed form
    there (the layer tier waits this for kinds without internal overlap)."""
    device, plan, st, per_layer = STAGES[i]
    comp = Components(device)
    full = st.closed_form(comp)
    shape = (plan.n_tokens, plan.n_layers) if per_layer else (plan.n_tokens,)
    t, l = plan.n_tokens - 1, (plan.n_layers - 1 if per_layer else None)
    one = st.at(t, l).closed_form(comp)
    for part in ("total", "compute", "io", "other"):
        want = np.broadcast_to(getattr(full, part), shape)[(t, l) if per_layer else (t,)]
        assert float(np.sum(getattr(one, part))) == pytest.approx(float(want), rel=1e-12, abs=1e-15), part


@pytest.mark.parametrize("i", range(len(STAGES)), ids=lambda i: f"{type(STAGES[i][2]).__name__}-{STAGES[i][2].name}")
def test_every_tier_runs_the_kind_alone(i):
    """A plan of this one stage: every tier gives each token a latency that adds up, and the tiers
    agree exactly where the stage has nothing to interleave (everything but the cluster pipeline,
    which the event tiers simulate)."""
    device, plan, st, per_layer = STAGES[i]
    one = _alone(plan, st, per_layer)
    got = {name: tiers.run_decode(name, device, one, check=True) for name in tiers.NAMES}
    for res in got.values():
        assert np.allclose(res.compute_s + res.io_s + res.other_s, res.token_s, rtol=1e-9, atol=1e-15)
    a = got["analytic"].token_s
    for name, res in got.items():
        rel = 0.15 if (isinstance(st, NeuronPipeline) and st.per_cluster_events) else 1e-9
        assert np.allclose(res.token_s, a, rtol=rel, atol=1e-12), (name, res.token_s, a)


@pytest.mark.parametrize("i", range(len(STAGES)), ids=lambda i: f"{type(STAGES[i][2]).__name__}-{STAGES[i][2].name}")
def test_flash_traffic_is_what_the_closed_form_moves(i):
    """The bytes a stage says it reads from flash are the DMA bytes its closed form moves into DRAM."""
    device, plan, st, per_layer = STAGES[i]
    shape = (plan.n_tokens, plan.n_layers) if per_layer else (plan.n_tokens,)
    nbytes, reads = st.flash_traffic(shape)
    dma = np.broadcast_to(st.closed_form(Components(device)).dram.get("dma", 0.0), shape)
    assert np.allclose(nbytes, dma, rtol=1e-12)
    assert (reads >= 0).all() and ((reads > 0) == (nbytes > 0)).all()


def test_a_broken_neuron_pipeline_fails_its_own_plan_checks():
    """Reads without a missed neuron: the stage's own plan checks say so (flash-accounting)."""
    device, plan, st, per_layer = next(s for s in STAGES if isinstance(s[2], NeuronPipeline))
    shape = (plan.n_tokens, plan.n_layers)
    assert all(np.asarray(ok).all() for _, ok, _ in st.plan_checks(shape))
    bad = replace(st, gate_miss_n=np.zeros(shape), ud_miss_n=np.zeros(shape), gate_reqs=np.ones(shape))
    failing = [name for name, ok, _ in bad.plan_checks(shape) if not np.asarray(ok).all()]
    assert failing == ["flash-accounting"]
