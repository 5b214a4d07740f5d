"""Energy, power and heat (pi2sim/engine/power.py, pi2sim/engine/thermal.py; docs/energy.md)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pi2sim.engine import power, thermal
from pi2sim.simulation import simulate
from pi2sim.specs.device import load_device

ROOT = Path(__file__).resolve().parents[1]

# T22 (docs/sources.md §C), under its documented interpretation: Bamboo-7B in memory on the OnePlus 12,
# requests of LMSYS-Chat-1M's mean lengths (69.5 prompt, 214.5 response tokens; docs/energy.md)
T22 = dict(device="oneplus12", model="bamboo-7b", ffn_offload=0.0, prompt_tokens=70, decode_tokens=215)
T22_PI2, T22_LLAMA = (0.257, 5.095), (0.672, 4.065)  # J/token, peak W


@pytest.fixture(scope="module")
def t22():
    pi2 = simulate(policy="powerinfer2", preset="v3", **T22)
    llama = simulate(policy="llamacpp", **T22)
    return pi2, llama


def test_t22_energy_per_token(t22):
    pi2, llama = t22
    e_pi2, e_llama = pi2.summary["energy_j_per_token"], llama.summary["energy_j_per_token"]
    assert abs(e_llama / T22_LLAMA[0] - 1) <= 0.20  # the fitted point (the A720's active power)
    assert abs(e_pi2 / T22_PI2[0] - 1) <= 0.20  # predicted
    assert abs((e_llama / e_pi2) / (T22_LLAMA[0] / T22_PI2[0]) - 1) <= 0.25


def test_t22_peak_power(t22):
    pi2, llama = t22
    assert abs(llama.summary["power_w"]["peak"] / T22_LLAMA[1] - 1) <= 0.25  # predicted
    # fitted (the peak window, devices/oneplus12.yaml): PowerInfer-2's peak is its FFN phase with six
    # cores and the NPU busy, well above its mean; a per-token power (the analytic tier) cannot show it
    assert abs(pi2.summary["power_w"]["peak"] / T22_PI2[1] - 1) <= 0.25
    assert pi2.summary["power_w"]["peak"] > 1.3 * pi2.summary["power_w"]["decode_mean"]
    assert pi2.summary["power_w"]["peak_window_ms"] == pytest.approx(pi2.device.power.peak_window_s * 1e3)
    flat = simulate(policy="powerinfer2", preset="v3", fidelity="analytic", **{**T22, "decode_tokens": 8}).summary["power_w"]
    assert flat["peak_window_ms"] is None and flat["peak"] < 0.8 * T22_PI2[1]


def test_windowed_peak_by_hand():
    # 1 W for 1 ms, 5 W for 0.5 ms, 1 W for 1 ms
    edges, watts = np.array([0.0, 1e-3, 1.5e-3, 2.5e-3]), np.array([1.0, 5.0, 1.0])
    assert power.windowed_peak_w(edges, watts, 0.5e-3) == pytest.approx(5.0)
    assert power.windowed_peak_w(edges, watts, 0.25e-3) == pytest.approx(5.0)
    assert power.windowed_peak_w(edges, watts, 1e-3) == pytest.approx((5 * 0.5 + 1 * 0.5) / 1.0)
    assert power.windowed_peak_w(edges, watts, 2e-3) == pytest.approx((5 * 0.5 + 1 * 1.5) / 2.0)
    assert power.windowed_peak_w(edges, watts, 1.0) == pytest.approx((1 + 2.5 + 1) / 2.5)  # longer than the span: its mean


@pytest.mark.parametrize("tier", ["cluster", "layer"])
@pytest.mark.parametrize("policy,kw", [("powerinfer2", {"preset": "v3"}), ("llamacpp", {"build": "2024"})])
def test_power_profile_integrates_to_the_ledger(tier, policy, kw):
    from pi2sim.engine.recorder import Recorder
    from pi2sim.simulation import execute

    r = simulate(policy=policy, fidelity=tier, device="oneplus12", model="bamboo-7b", ffn_offload=0.5, decode_tokens=6, **kw)
    plan = r.policy.decode_plan(r.access, r.memory)
    n = power.PEAK_SAMPLE_TOKENS
    fb = plan.flash_bytes if plan.flash_bytes is not None else np.zeros(plan.n_tokens)
    peaks = {}
    for coarse in (False, True):  # a full timeline's slices and the peak sampler's busy runs
        rec = Recorder(0, n, coarse=coarse)
        timing = execute(r.device, plan, tier, recorder=rec)
        dec_j = power.decode_energy(r.device, timing, fb, plan.flash_reads if plan.flash_reads is not None else np.zeros(plan.n_tokens))
        edges, watts = power.profile(r.device, rec.slices, dec_j, timing, fb, 0, n)
        assert np.all(watts >= 0)
        ledger = sum(float(np.sum(dec_j[c][:n])) for c in power.COMPONENTS)
        assert float(np.sum(watts * np.diff(edges))) == pytest.approx(ledger, rel=1e-9)
        assert edges[-1] == pytest.approx(float(np.sum(timing.token_s[:n])), rel=1e-9)
        mean = ledger / edges[-1]
        assert mean <= power.windowed_peak_w(edges, watts, 1e-3) <= float(watts.max()) + 1e-9
        peaks[coarse] = [power.windowed_peak_w(edges, watts, w) for w in (1e-4, 2e-4, 1e-3)]
    # the coarse recorder keeps the union of every busy interval, so it gives the same profile's peaks
    assert peaks[True] == pytest.approx(peaks[False], rel=1e-9)


def test_peak_is_the_same_with_a_timeline(tmp_path):
    from pi2sim.engine.recorder import Recorder
    from pi2sim.simulation import run
    from pi2sim.config import RunConfig, apply_values

    cfg = apply_values(RunConfig(), {"device": "oneplus12", "model": "bamboo-7b", "ffn_offload": 0.5, "decode_tokens": 6, "preset": "v3"})
    plain = run(cfg).summary["power_w"]
    for window in ((0, None), (2, 5)):
        rec = Recorder(*window)
        assert run(cfg, recorder=rec).summary["power_w"] == plain
        assert rec.counters["power (W)"], "the timeline has its power counter"


def test_energy_adds_up(t22):
    for r in t22:
        s = r.summary
        parts = s["energy_breakdown_j_per_token"]
        assert set(parts) == set(power.COMPONENTS)
        assert math.isclose(sum(parts.values()), s["energy_j_per_token"], rel_tol=1e-4)
        df = r.tokens
        assert np.allclose(df.power_w * df.tbt_ms / 1e3, df.energy_j, rtol=1e-9)
        n = len(df)
        assert math.isclose((df.energy_j.sum() + s["prefill_energy_j"]) / n, s["energy_j_per_token"], rel_tol=1e-4)
        dev = r.device
        # the floor: the platform, DRAM background and every idle core and unit for the whole run
        floor = dev.power.platform_w + dev.power.dram_background_w + dev.power.npu.idle_w + dev.power.gpu.idle_w \
            + sum(dev.power.cores[c.cluster.name].idle_w for c in dev.cores())
        assert s["power_w"]["mean"] > floor
        assert s["power_w"]["peak"] >= s["power_w"]["mean"]
        bat = s["power_w"]["mean"] * 3600 / dev.power.battery_j * 100
        assert math.isclose(s["battery_pct_per_hour"], bat, rel_tol=1e-4)


@pytest.mark.parametrize("tier", ["analytic", "layer"])
@pytest.mark.parametrize("policy,model", [("powerinfer2", "turbosparse-mistral-7b"), ("llamacpp", "bamboo-7b")])
def test_energy_agrees_across_tiers(tier, policy, model):
    # llama.cpp's stages are closed-form (page faults): the layer tier once dropped their DRAM bytes
    kw = dict(device="oneplus12", model=model, policy=policy, ffn_offload=0.5, decode_tokens=32, **({"build": "2024"} if policy == "llamacpp" else {}))
    ref = simulate(fidelity="cluster", **kw).summary
    got = simulate(fidelity=tier, **kw).summary
    assert abs(got["energy_j_per_token"] / ref["energy_j_per_token"] - 1) < 0.03
    for c in ("cpu", "dram", "ufs"):
        a, b = got["energy_breakdown_j_per_token"][c], ref["energy_breakdown_j_per_token"][c]
        assert abs(a / b - 1) < 0.05, c


def test_flash_reads_cost_energy():
    kw = dict(device="oneplus12", model="turbosparse-mistral-7b", decode_tokens=32, fidelity="analytic")
    off = simulate(ffn_offload=0.5, **kw).summary["energy_breakdown_j_per_token"]["ufs"]
    mem = simulate(ffn_offload=0.0, **kw).summary["energy_breakdown_j_per_token"]["ufs"]
    assert off > 10 * max(mem, 1e-6)


# ------------------------------------------------------------------ the thermal model
def test_rc_step_is_exact():
    th = load_device("oneplus12").thermal
    rc = thermal.RC(th)
    x = (3.0, 1.0)
    fine = x
    h = 1e-3
    for _ in range(int(2.0 / h)):  # explicit Euler with a fine step
        dxs = (4.0 - (fine[0] - fine[1]) / th.soc_to_body) / th.soc_heat_capacity
        dxb = ((fine[0] - fine[1]) / th.soc_to_body - fine[1] / th.body_to_ambient) / th.body_heat_capacity
        fine = (fine[0] + h * dxs, fine[1] + h * dxb)
    exact = rc.step(x, 4.0, 2.0)
    assert np.allclose(exact, fine, rtol=1e-3)
    far = rc.step(x, 4.0, 1e5)
    assert np.allclose(far, rc.steady(4.0), rtol=1e-9)
    assert np.allclose(rc.steady(4.0), (4.0 * (th.body_to_ambient + th.soc_to_body), 4.0 * th.body_to_ambient))


def test_governor_steps_down_and_back():
    th = load_device("oneplus12").thermal
    T = 20000
    hot = (np.full(T, 0.05), np.full(T, 8.0))  # 8 W at every level: the governor can only wait

    def at_level(k):
        return hot[0], hot[1] * (0.2 if k >= 3 else 1.0)  # from level 3 on the phone cools

    tr = thermal.run(th, T, at_level, prefill_s=0.0, prefill_w=0.0)
    assert tr.level[0] == 0 and tr.level.max() >= 3
    assert np.any(np.diff(tr.level) < 0)  # cooled below trip - hysteresis: clocks came back
    assert np.all(np.diff(tr.level) <= 1) and np.all(np.diff(tr.level) >= -1)  # one level per poll


@pytest.fixture(scope="module")
def long_cpu_decode():
    kw = dict(device="oneplus12", model="llama-3.2-1b", ffn_offload=0.0, decode_tokens=6000, fidelity="analytic")
    return {th: simulate(policy="llamacpp", thermal=th, **kw) for th in (False, True)}


def test_sustained_cpu_decode_throttles(long_cpu_decode):
    cool, hot = long_cpu_decode[False].summary, long_cpu_decode[True].summary
    th = hot["thermal"]
    assert th["decode_tok_s_last_tenth"] <= 0.95 * th["decode_tok_s_first_tenth"]
    assert th["min_cpu_clock_share"] < 1.0 and th["first_throttle_s"] is not None
    # the throttle's own share of the slowdown: the same run on a phone that stays cool
    df = long_cpu_decode[False].tokens
    k = len(df) // 10
    cool_last = k / (df.tbt_ms.values[-k:].sum() / 1e3)
    assert th["decode_tok_s_last_tenth"] <= 0.95 * cool_last
    assert hot["decode_tok_s"] < cool["decode_tok_s"]
    tok = long_cpu_decode[True].tokens
    for col in ("soc_temp_c", "body_temp_c", "cpu_clock_share", "prime_clock_ghz", "power_w", "energy_j"):
        assert col in tok.columns
    assert tok.prime_clock_ghz.min() < 3.3 - 1e-6
    assert tok.body_temp_c.iloc[-1] > 25.0


def test_npu_engine_throttles_less(long_cpu_decode):
    kw = dict(device="oneplus12", model="llama-3.2-1b", ffn_offload=0.0, decode_tokens=6000, fidelity="analytic", context=8192)
    cool = simulate(policy="genie", **kw).summary["decode_tok_s"]
    hot = simulate(policy="genie", thermal=True, **kw).summary["decode_tok_s"]
    cpu_loss = 1 - long_cpu_decode[True].summary["decode_tok_s"] / long_cpu_decode[False].summary["decode_tok_s"]
    assert 1 - hot / cool < cpu_loss


def test_thermal_false_is_the_cool_phone():
    """A short run on a cool phone never trips: thermal=true then changes no speed, and
    thermal=false leaves the resolved configuration as it was (no thermal keys)."""
    kw = dict(device="oneplus12", model="turbosparse-mistral-7b", ffn_offload=0.5, decode_tokens=64, fidelity="analytic")
    off = simulate(**kw)
    on = simulate(thermal=True, **kw)
    assert on.summary["decode_tok_s"] == off.summary["decode_tok_s"]
    assert on.summary["thermal"]["min_cpu_clock_share"] == 1.0
    assert "thermal" not in off.summary and "thermal" not in off.resolved["run"]
    assert on.resolved["run"]["thermal"] is True


# ------------------------------------------------------------------ outputs and bad input
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pi2sim", *args], capture_output=True, text=True, cwd=ROOT)


def test_json_carries_the_energy_fields_and_the_docs_define_them():
    p = _cli("run", "--model", "llama-3.2-1b", "--policy", "llamacpp", "--ffn-offload", "0", "--decode-tokens", "16", "--fidelity", "analytic",
             "--set", "thermal=true", "--json")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    doc = (ROOT / "docs" / "energy.md").read_text()
    for key in ("energy_j_per_token", "decode_energy_j_per_token", "prefill_energy_j", "energy_breakdown_j_per_token", "power_w",
                "battery_pct_per_hour", "thermal"):
        assert key in s
        assert f"`{key}`" in doc, key
    for key in ("mean", "peak"):
        assert key in s["power_w"]
    for key in s["thermal"]:
        assert f"`{key}`" in doc, key
    for col in ("energy_j", "power_w", "soc_temp_c", "body_temp_c", "cpu_clock_share"):
        assert f"`{col}`" in doc, col


@pytest.mark.parametrize("args, needle", [
    (["--set", "ambient_c=30"], "ambient_c"),
    (["--set", "thermal=maybe"], "thermal"),
    (["--set", "thermal=true", "--set", "ambient_c=400"], "ambient_c"),
    (["--set", "device.power.dram_energy=4 pJ"], "power.dram_energy"),
    (["--set", "device.thermal.governor.cpu_clock_levels=[0.5, 1.0]"], "governor"),
    (["--device", "NOPOWER", "--set", "thermal=true"], "power"),
])
def test_bad_thermal_and_power_input_is_one_line(args, needle, phone_without_power):
    args = [phone_without_power if a == "NOPOWER" else a for a in args]
    p = _cli("run", "--decode-tokens", "8", "--fidelity", "analytic", *args)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], p.stderr
    assert "Traceback" not in p.stderr


def test_generated_phones_have_a_power_model_by_rule(phone_without_power):
    """Every generated phone carries a power and thermal model derived from the OnePlus 12's
    (pi2sim/specs/rules.py core_power): the Galaxy S24 (same SoC family, 3-6% other clocks) costs
    about the same energy per token; a phone without a power section reports none."""
    from pi2sim.simulation import simulate

    kw = dict(model="llama-3.2-1b", policy="llamacpp", ffn_offload=0.0, decode_tokens=8, fidelity="analytic", build="2024")
    s24, op12 = (simulate(device=d, **kw).summary for d in ("galaxy_s24", "oneplus12"))
    assert s24["energy_j_per_token"] == pytest.approx(op12["energy_j_per_token"], rel=0.1)
    assert s24["power_w"]["mean"] < op12["power_w"]["mean"]  # slower A720 clusters, cubed
    assert simulate(device="oneplus13", **kw).summary["energy_j_per_token"] > 0
    assert simulate(device=phone_without_power, **kw).summary.get("energy_j_per_token") is None
