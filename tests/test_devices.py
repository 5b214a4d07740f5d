"""The phones generated from the OnePlus 12 by the rules of pi2sim/specs/rules.py (devices/galaxy_s24.yaml,
devices/oneplus13.yaml, ...) keep the properties those rules state: what the rules are is tested in
tests/test_device_rules.py, what they imply for two phones here; and each runs every engine family by name."""

from __future__ import annotations

import pytest

from pi2sim import simulate
from pi2sim.specs.device import load_device

OP12 = load_device("oneplus12")


def _close(a: float, b: float, rel: float = 0.01) -> bool:
    return abs(a - b) <= rel * abs(b)


def _cluster(dev, name):
    return next(c for c in dev.cpu.clusters if c.name == name)


def test_galaxy_s24_is_the_oneplus12_at_its_clocks():
    s24 = load_device("galaxy_s24")
    assert [c.name for c in s24.cpu.clusters] == [c.name for c in OP12.cpu.clusters]
    for c in s24.cpu.clusters:
        ref = _cluster(OP12, c.name)
        k = c.clock_hz / ref.clock_hz
        assert c.core == ref.core and c.count == ref.count
        for f in ("matvec_int4_bps", "matvec_fp16_bps", "gemm_int4_ops"):
            assert _close(getattr(c, f), getattr(ref, f) * k, 0.02), (c.name, f)
    d, r = s24.dram, OP12.dram
    assert d.bw_cpu_bps == r.bw_cpu_bps  # the CPU complex's limit, shared
    for f in ("bw_npu_bps", "bw_cpu_npu_bps", "bw_gpu_bps"):
        assert _close(getattr(d, f), getattr(r, f) * d.bw_theoretical_bps / r.bw_theoretical_bps), f
    assert s24.npu.matvec_bps == d.bw_npu_bps and s24.npu.gemm_ops == OP12.npu.gemm_ops
    from pi2sim.specs.rules import app_memory

    assert d.app_usable_bytes == pytest.approx(app_memory(d.size_bytes))


def test_oneplus13_is_oryon_at_the_x4s_per_clock_rate():
    op13 = load_device("oneplus13")
    assert {c.core_class for c in op13.cpu.clusters} == {"big", "mid"}  # no little cores
    assert sum(c.count for c in op13.cpu.clusters) == 8
    x4 = _cluster(OP12, "prime")
    for c in op13.cpu.clusters:
        k = c.clock_hz / x4.clock_hz
        for f in ("matvec_int4_bps", "matvec_fp16_bps", "gemm_int4_ops"):
            assert _close(getattr(c, f), getattr(x4, f) * k, 0.02), (c.name, f)
    d, r = op13.dram, OP12.dram
    for f in ("bw_cpu_bps", "bw_npu_bps", "bw_cpu_npu_bps", "bw_gpu_bps"):
        assert _close(getattr(d, f), getattr(r, f) * d.bw_theoretical_bps / r.bw_theoretical_bps), f
    # the NPU's GEMM rate is fitted (Genie's 3B TTFT), not the "+45%" claim: it lands near the 8 Gen 3's
    assert _close(op13.npu.gemm_ops, OP12.npu.gemm_ops, 0.05) and op13.npu.matvec_bps == d.bw_npu_bps
    assert _close(op13.storage.issue_cost.big_s, OP12.storage.issue_cost.big_s * x4.clock_hz / _cluster(op13, "prime").clock_hz)


@pytest.mark.parametrize("device", ["galaxy_s24", "oneplus13"])
@pytest.mark.parametrize("policy,extra", [("powerinfer2", {}), ("llamacpp", {"ffn_offload": 0.0}), ("dense", {"ffn_offload": 0.0})])
def test_new_phones_run_by_name(device, policy, extra):
    r = simulate(device=device, model="bamboo-7b", policy=policy, decode_tokens=4, fidelity="analytic", **extra)
    assert r.summary["decode_tok_s"] > 0 and r.summary["config"]["device"]["name"] == device


def test_faster_phone_decodes_faster_in_memory():
    """Dense decode in DRAM is bandwidth-bound: the phone with the faster DRAM is faster, the
    Galaxy S24 (same CPU limit as the OnePlus 12) about as fast."""
    tok = {d: simulate(device=d, model="bamboo-7b", policy="dense", ffn_offload=0.0, decode_tokens=4, fidelity="analytic").summary["decode_tok_s"]
           for d in ("oneplus12", "galaxy_s24", "oneplus13")}
    assert tok["oneplus13"] > 1.05 * tok["oneplus12"]
    assert _close(tok["galaxy_s24"], tok["oneplus12"], 0.05)
