"""Analytic limits every tier must reproduce exactly (checked against formulas written here, not
against the engine's own helpers)."""

from __future__ import annotations

import numpy as np
import pytest

import pi2sim.simulation as S
from pi2sim.specs.device import load_device

FAST_CPU = {f"cpu.clusters.{i}.{k}": "200 GB/s" for i in range(4) for k in ("matvec_int4", "matvec_fp16", "memcpy")}
FAST_CPU |= {"cpu.sparse_efficiency": 1.0, "cpu.barrier": "0 us"}
FAST_DRAM = {f"dram.{k}": "9000 GB/s" for k in ("bw_theoretical", "bw_cpu", "bw_npu", "bw_cpu_npu", "bw_gpu")}
TIERS = ["analytic", "layer", "cluster"]


def _run(fid, **kw):
    base = dict(model="smollm2-135m", decode_tokens=24, fidelity=fid, preset="v1")
    base.update(kw)
    return S.simulate(**base)


@pytest.mark.parametrize("fid", TIERS)
def test_compute_free_is_flash_bound(fid):
    """Compute and DRAM made (practically) free: each layer's FFN takes exactly the time of its
    flash requests, latency + (n - 1) x period, and nothing else costs time."""
    r = _run(fid, ffn_offload=0.9, device_overrides=FAST_CPU | FAST_DRAM)
    plan = r.policy.decode_plan(r.access)
    pipe = [s for s in plan.layer_stages if s.name == "ffn"][0]
    st = load_device("oneplus12").storage
    n = pipe.gate_reqs + pipe.ud_reqs
    assert n.sum() > 1000  # the limit is exercised
    span = pipe.span
    svc = st.request_service_s * np.maximum(1.0, span / st.span_reference_bytes) ** st.span_exponent + 4096 / st.bw_random_bps
    c = st.issue_cost.big_s
    period = np.maximum(np.maximum(c, svc), (c + svc + st.latency_s) / st.queue_depth)
    expected = np.where(n > 0, c + svc + st.latency_s + (n - 1) * period, 0.0).sum(axis=1)
    got = r.tokens["ffn_ms"].to_numpy() / 1e3
    np.testing.assert_allclose(got, expected, rtol=2e-3)
    assert r.summary["critical_path"]["io_stall"] > 0.99


@pytest.mark.parametrize("fid", TIERS)
def test_everything_in_memory_is_dram_bound(fid):
    """All FFN weights cached and compute free except for DRAM: no flash reads, and every token
    takes its weight bytes divided by the CPU's DRAM bandwidth (43.9 GB/s)."""
    r = _run(fid, ffn_offload=0.0, device_overrides=FAST_CPU)
    assert r.summary["flash_reads_per_token"] == 0 and r.summary["flash_bytes_per_token"] == 0
    assert r.summary["neuron_cache_hit_rate"] == 1.0
    acc = r.access
    sizes = r.policy.sizes
    a = r.model.architecture
    T = acc.tp.shape[0]
    mat = a.hidden * 0.5625  # one INT4 matrix-neuron with its FP16 group scales
    ctx = 64 + np.arange(T) + 1
    kv = 2 * a.kv_heads * a.head_dim * ctx * 2 * a.layers
    bytes_tok = (
        a.layers * sizes.attention_per_layer()
        + kv
        + a.layers * (sizes.predictor_per_token_layer())
        + ((acc.tp + acc.fp).sum(axis=1) * mat + acc.tp.sum(axis=1) * 2 * mat)
        + sizes.lm_head()
    )
    expected = bytes_tok / 43.9e9
    np.testing.assert_allclose(r.tokens["tbt_ms"].to_numpy() / 1e3, expected, rtol=1e-3)


def test_tiers_agree_when_nothing_contends():
    """Everything cached (compute bound) and the NPU idle: the three tiers give the same times."""
    times = {fid: _run(fid, ffn_offload=0.0).tokens["tbt_ms"].to_numpy() for fid in TIERS}
    np.testing.assert_allclose(times["layer"], times["analytic"], rtol=1e-6)
    np.testing.assert_allclose(times["cluster"], times["analytic"], rtol=1e-6)


def test_tiers_agree_on_hybrid_decode():
    """v3 hybrid decode: NPU calls (fixed submit + sync cost, then a DRAM stream) run beside CPU
    work. The NPU moves no bytes during its fixed cost, so the CPU streams alone meanwhile in every
    tier (the analytic tier once shared bandwidth from the start and came out 7% slow)."""
    S_ = __import__("pi2sim.simulation", fromlist=["simulate"])
    tok = {
        fid: S_.simulate(model="bamboo-7b", ffn_offload=0.5, decode_tokens=16, preset="v3", fidelity=fid).summary["decode_tok_s"]
        for fid in ("analytic", "layer")
    }
    assert abs(tok["analytic"] / tok["layer"] - 1) < 0.01, tok
