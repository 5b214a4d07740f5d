"""`pi2sim calibrate`: the free set, recovering known constants, the overlay, cross-validation.

The recovery test is the one the issue asks for: perturb device constants, let the simulator
produce "measurements" with them, and check that calibrate finds them again from the file's
unperturbed values.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pi2sim.workflows import calibrate as C
from pi2sim import simulate
from pi2sim.workflows import validate as V

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pi2sim", *args], capture_output=True, text=True)


def test_free_set_has_bounds_and_values_inside_them():
    free = C.free_constants("oneplus12")
    names = {c.name for c in free}
    assert {"cpu.sparse_efficiency", "storage.latency", "npu.sync"} <= names
    for c in free:
        assert c.lo < c.hi and c.lo <= c.value <= c.hi, c
    # microbenchmark fits (closed form through T13) are not free: they carry no bounds
    assert "storage.bw_random" not in names and "npu.gemm" not in names


def test_bounds_parse_with_units():
    assert C.parse_bounds("fitted to X (bounds: 60 us..200 us)") == pytest.approx((60e-6, 200e-6))
    assert C.parse_bounds("fitted to X; bounds: 0.2..0.6") == pytest.approx((0.2, 0.6))
    assert C.parse_bounds("fitted to X") is None


# Three constants, each decided by its own kind of point: in-memory decode is compute-bound
# (sparse kernel efficiency), the +bundle ablation step blocks on single reads (UFS latency),
# hybrid decode waits for every NPU call (NPU sync); the others mix them.
TRUE = {"cpu.sparse_efficiency": 0.30, "storage.latency": "120 us", "npu.sync": "450 us"}
POINTS = [
    ("inmem", dict(ffn_offload=0.0, preset="v1")),
    ("bundle", dict(ffn_offload=0.5, preset="+bundle")),
    ("hybrid", dict(ffn_offload=0.5, preset="v3")),
    ("cache", dict(ffn_offload=0.5, preset="+cache")),
    ("offload", dict(ffn_offload=0.5, preset="v1")),
]


def _phone(tmp_path: Path) -> Path:
    """A user's own device file: the OnePlus 12's, under another name."""
    device = tmp_path / "myphone.yaml"
    text = (REPO / "devices" / "oneplus12.yaml").read_text().replace("name: oneplus12", "name: myphone", 1)
    device.write_text(text)
    return device


def _scenario(sid: str, kw: dict, paper: float, device: str) -> dict:
    run = {"device": device, "policy": "powerinfer2", "model": "bamboo-7b", "prompt_tokens": 16, "decode_tokens": 24,
           "ffn_offload": kw["ffn_offload"], "options": {"preset": kw["preset"]}}
    return {"id": sid, "title": sid, "source": "simulated with perturbed constants (test)", "paper_version": "v3", "figure": "mine",
            "kind": "run", "run": run, "metric": "decode_tok_s", "paper": paper}


def test_calibrate_recovers_perturbed_constants(tmp_path):
    device = _phone(tmp_path)
    tree = tmp_path / "scenarios"
    tree.mkdir()
    for sid, kw in POINTS:
        r = simulate(device=str(device), model="bamboo-7b", prompt_tokens=16, decode_tokens=24, fidelity="analytic",
                     device_overrides=TRUE, **kw)
        (tree / f"{sid}.yaml").write_text(yaml.safe_dump(_scenario(sid, kw, r.summary["decode_tok_s"], str(device))))
    scenarios = V.load_scenarios("all", tree)
    free = [c for c in C.free_constants(str(device)) if c.scope == "device"]
    f = C.fit(scenarios, str(device), free=free, fast=False, fidelity="analytic", max_evals=80)
    got = f.values()
    for name, want in TRUE.items():
        w = C._split_quantity(want)[0] if isinstance(want, str) else want
        assert got[name] == pytest.approx(w, rel=0.05), (name, got[name], w)
    assert max(abs(r) for r in f.after.residuals) < 0.01
    assert max(abs(r) for r in f.before.residuals) > 0.05  # the start was really off


def test_stages_fit_the_phone_on_the_reference_engine_only():
    """The device constants see PowerInfer-2's points only; each baseline's own constants its own
    points; without any PowerInfer-2 point everything is one stage."""
    scenarios = [s for s in V.load_scenarios("calibration") + V.load_scenarios("baselines") if s.kind == "run"]
    free = C.free_constants()
    stages = C.stages(scenarios, free)
    first_points, first_free = stages[0]
    assert {(s.run or {}).get("policy", "powerinfer2") for s in first_points} == {"powerinfer2"}
    assert {c.scope for c in first_free} <= {"device", "policy:powerinfer2"} and any(c.scope == "device" for c in first_free)
    for points, consts in stages[1:]:
        (policy,) = {(s.run or {}).get("policy") for s in points}
        assert {c.scope for c in consts} == {f"policy:{policy}"}
    assert sum(len(p) for p, _ in stages) <= len(scenarios)
    baselines_only = [s for s in scenarios if (s.run or {}).get("policy", "powerinfer2") == "llamacpp"]
    ((points, consts),) = C.stages(baselines_only, free)
    assert points == baselines_only and any(c.scope == "device" for c in consts)


def test_overlay_round_trip_and_run_calibration(tmp_path):
    free = [c for c in C.free_constants("oneplus12") if c.name in ("cpu.sparse_efficiency", "storage.latency")]
    ev = C.Evaluation([0.0], [1.0])
    fit = C.Fit(free, [0.31, 1.1e-4], [c.value for c in free], ev, ev, ["X"], 1, "test")
    path = tmp_path / "cal.yaml"
    C.write_overlay(path, C.overlay_dict(fit, "oneplus12", "test"))
    data = yaml.safe_load(path.read_text())
    assert data["device"] == {"cpu.sparse_efficiency": 0.31, "storage.latency": "110 us"}
    assert data["calibration"]["pi2sim_version"] and data["calibration"]["config_hash"]
    p = _run("run", "--model", "bamboo-7b", "--decode-tokens", "4", "--fidelity", "analytic", "--calibration", str(path), "--json", "--quiet")
    assert p.returncode == 0, p.stderr
    import json

    resolved = json.loads(p.stdout)["config"]["device"]["overrides"]
    assert resolved == {"cpu.sparse_efficiency": 0.31, "storage.latency": "110 us"}
    # an explicit --set wins over the overlay
    p = _run("run", "--model", "bamboo-7b", "--decode-tokens", "4", "--fidelity", "analytic", "--calibration", str(path),
             "--set", "device.storage.latency=90 us", "--json", "--quiet")
    assert json.loads(p.stdout)["config"]["device"]["overrides"]["storage.latency"] == "90 us"


@pytest.mark.parametrize("text, key", [("[1, 2]\n", "calibration"), ("calibration: {device: oneplus12}\nextra: 1\n", "extra"),
                                       ("calibration: {device: oneplus12}\npolicy: {nope: {a: 1}}\n", "policy.nope")])
def test_bad_overlay_is_one_line_exit_2(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    p = _run("run", "--decode-tokens", "2", "--fidelity", "analytic", "--calibration", str(path), "--quiet")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and (key in p.stderr or "calibration overlay" in p.stderr), p.stderr


def test_cross_validation_predicts_held_out_groups(tmp_path):
    device = _phone(tmp_path)
    tree = tmp_path / "scenarios"
    tree.mkdir()
    for i, (sid, kw) in enumerate(POINTS):
        r = simulate(device=str(device), model="bamboo-7b", prompt_tokens=16, decode_tokens=24, fidelity="analytic",
                     device_overrides=TRUE, **kw)
        sc = _scenario(sid, kw, r.summary["decode_tok_s"], str(device))
        sc["figure"] = f"g{i % 3}"
        (tree / f"{sid}.yaml").write_text(yaml.safe_dump(sc))
    res = C.cross_validate(V.load_scenarios("all", tree), str(device), fast=False, max_evals=40)
    assert {r["id"] for r in res.rows} == {sid for sid, _ in POINTS}
    assert set(res.folds) == {"g0", "g1", "g2"}
    # synthetic measurements the model can reach exactly: the full fit is near-exact, and every
    # fold's prediction of points it never saw stays close
    assert all(abs(r["fitted_error_pct"]) < 1.0 for r in res.rows)
    assert all(math.isfinite(r["predictive_error_pct"]) for r in res.rows)
    assert set(res.spreads) >= {"cpu.sparse_efficiency"}


def test_malformed_bounds_in_a_device_file_is_one_line_exit_2(tmp_path):
    device = _phone(tmp_path)
    text = device.read_text().replace("bounds: 0.2..0.6", "bounds: low..high", 1)
    device.write_text(text)
    p = _run("calibrate", "--device", str(device), "--list")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "cpu.sparse_efficiency" in p.stderr and "bounds" in p.stderr, p.stderr


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    device = _phone(tmp_path)
    tree = tmp_path / "scenarios"
    tree.mkdir()
    for i, (sid, kw) in enumerate(POINTS[:3]):
        r = simulate(device=str(device), model="bamboo-7b", prompt_tokens=16, decode_tokens=24, fidelity="analytic",
                     device_overrides=TRUE, **kw)
        sc = _scenario(sid, kw, r.summary["decode_tok_s"], str(device))
        sc["figure"] = f"g{i}"
        (tree / f"{sid}.yaml").write_text(yaml.safe_dump(sc))
    return device, tree


def test_cli_calibrate_writes_an_overlay_that_run_applies(tmp_path):
    device, tree = _tree(tmp_path)
    out = tmp_path / "cal.yaml"
    p = _run("calibrate", "--device", str(device), "--scenarios", str(tree), "--free", "cpu.sparse_efficiency,storage.latency,npu.sync",
             "--full", "--out", str(out), "--quiet")
    assert p.returncode == 0, p.stderr
    assert "fitted 3 constants to 3 points" in p.stdout
    data = yaml.safe_load(out.read_text())
    assert data["calibration"]["device"] == "myphone" and set(data["calibration"]["residuals_pct"]) == {"inmem", "bundle", "hybrid"}
    p = _run("run", "--device", str(device), "--model", "bamboo-7b", "--decode-tokens", "4", "--fidelity", "analytic",
             "--calibration", str(out), "--quiet")
    assert p.returncode == 0, p.stderr


def test_cli_validate_cross_on_own_scenarios(tmp_path):
    device, tree = _tree(tmp_path)
    p = _run("validate", "--cross", "--scenarios", str(tree), "--set", "all", "--quiet")
    assert p.returncode == 0, p.stderr
    assert "predictive" in p.stdout and "cpu.sparse_efficiency" in p.stdout


@pytest.mark.parametrize("args, key", [
    (["calibrate", "--free", "nope"], "--free"),
    (["calibrate", "--scenarios", "/nonexistent-dir"], "--scenarios"),
    (["calibrate", "--max-evals", "0"], "--max-evals"),
    (["calibrate", "--device", "nope"], "--device"),
])
def test_cli_calibrate_bad_input_is_one_line_exit_2(args, key):
    p = _run(*args)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and key in p.stderr, p.stderr


def test_cli_calibrate_list():
    p = _run("calibrate", "--list")
    assert p.returncode == 0
    assert {"cpu.sparse_efficiency", "storage.latency", "npu.sync"} <= {line.split()[0] for line in p.stdout.splitlines() if line.strip()}


def test_run_refuses_an_overlay_fitted_on_another_phone(tmp_path):
    free = [c for c in C.free_constants("oneplus12") if c.name == "storage.latency"]
    ev = C.Evaluation([0.0], [1.0])
    fit = C.Fit(free, [1.1e-4], [c.value for c in free], ev, ev, ["X"], 1, "test")
    path = tmp_path / "cal.yaml"
    C.write_overlay(path, C.overlay_dict(fit, "oneplus12", "test"))
    p = _run("run", "--device", "oneplus_ace2", "--decode-tokens", "2", "--fidelity", "analytic", "--calibration", str(path), "--quiet")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "oneplus_ace2" in p.stderr, p.stderr


def test_a_start_value_outside_its_declared_bounds_is_one_line_exit_2(tmp_path):
    device = _phone(tmp_path)
    device.write_text(device.read_text().replace("bounds: 0.2..0.6", "bounds: 0.4..0.6", 1))  # the value is 0.325
    p = _run("calibrate", "--device", str(device), "--list")
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert "cpu.sparse_efficiency" in p.stderr and "inside its declared bounds" in p.stderr, p.stderr
