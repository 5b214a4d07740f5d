"""The execution planner: never slower than the default, honours constraints, plans are reusable."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

pytest.importorskip("optuna")

from pi2sim.config import RunConfig, apply_values  # noqa: E402
from pi2sim.workflows.planner import plan  # noqa: E402

BASE = {"model": "bamboo-7b", "ffn_offload": 0.5, "decode_tokens": 8, "fidelity": "analytic"}


def test_plan_is_at_least_the_default_and_reproducible():
    base = apply_values(RunConfig(), BASE)
    p = plan(base, trials=10, seed=1)
    assert p.decode_tok_s >= p.default_tok_s > 0
    assert p.trials.iloc[0]["compute_threads"] == 4 and p.trials.iloc[0]["io_core"] == "prime0"  # trial 0 = default
    again = plan(base, trials=10, seed=1)
    assert again.options == p.options and again.decode_tok_s == p.decode_tok_s
    assert "vs default" in p.explain() and "critical path" in p.explain()


def test_max_cores_is_honoured():
    p = plan(apply_values(RunConfig(), BASE), trials=8, max_cores=3, min_tok_s=1e6)
    assert (p.trials["compute_threads"].dropna() <= 2).all()
    assert p.meets_requirement is False and "NOT met" in p.explain()


def test_energy_objective_is_the_fewest_joules():
    base = apply_values(RunConfig(), BASE)
    p = plan(base, trials=12, seed=1, objective="energy")
    ran = p.trials[p.trials["feasible"]]
    assert p.summary["energy_j_per_token"] == pytest.approx(ran["energy_j_per_token"].min())
    assert p.summary["energy_j_per_token"] <= p.default_summary["energy_j_per_token"]
    assert p.to_yaml_dict()["predicted"]["objective"] == "energy" and "J/token vs default" in p.explain()


def test_max_power_is_a_constraint():
    base = apply_values(RunConfig(), BASE)
    free = plan(base, trials=12, seed=2)
    cap = float(free.trials["power_w_mean"].median())
    p = plan(base, trials=12, seed=2, max_power_w=cap)
    t = p.trials.dropna(subset=["decode_tok_s"])
    assert (t["feasible"] == (t["power_w_mean"] <= cap)).all()
    assert p.summary["power_w"]["mean"] <= cap
    assert p.decode_tok_s == pytest.approx(t[t["feasible"]]["decode_tok_s"].max())
    none = plan(base, trials=4, seed=2, max_power_w=0.5)  # below the platform's own draw: nothing meets it
    assert "NOT met" in none.explain() and none.summary["power_w"]["mean"] == pytest.approx(none.trials["power_w_mean"].min())


def test_thermal_plan_scores_the_heated_run():
    base = apply_values(RunConfig(), {**BASE, "thermal": True})
    p = plan(base, trials=3, seed=0)
    assert "thermal" in p.summary and p.to_yaml_dict()["predicted"]["thermal"] is True
    assert "thermal: first throttle" in p.explain()


def test_energy_objective_needs_a_power_model(phone_without_power):
    r = subprocess.run([sys.executable, "-m", "pi2sim", "plan", "--device", phone_without_power, "--model", "bamboo-7b", "--objective", "energy",
                        "--quiet"], capture_output=True, text=True)
    assert r.returncode == 2 and "power" in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_plan_then_run_with_it(tmp_path):
    out = tmp_path / "plan.yaml"
    args = ["--model", "smollm2-135m", "--memory-gb", "0.4", "--decode-tokens", "8", "--trials", "4", "--quiet"]
    r = subprocess.run([sys.executable, "-m", "pi2sim", "plan", *args, "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "runner-ups" in r.stdout
    data = yaml.safe_load(out.read_text())
    assert data["run"]["model"] == "smollm2-135m" and "compute_threads" in data["plan"]
    run = subprocess.run([sys.executable, "-m", "pi2sim", "run", "--plan", str(out), "--decode-tokens", "8", "--fidelity", "analytic", "--json", "--quiet"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    import json

    s = json.loads(run.stdout)
    assert s["config"]["model"]["name"] == "smollm2-135m"
    assert abs(s["decode_tok_s"] - data["predicted"]["decode_tok_s"]) / s["decode_tok_s"] < 1e-3


@pytest.mark.parametrize("args, key", [(["--policy", "llamacpp"], "--policy"), (["--trials", "0"], "--trials"), (["--max-cores", "1"], "--max-cores"),
                                       (["--max-power-w", "5000"], "--max-power-w"), (["--objective", "fastest"], "--objective")])
def test_bad_plan_input(args, key):
    r = subprocess.run([sys.executable, "-m", "pi2sim", "plan", "--model", "smollm2-135m", "--quiet", *args], capture_output=True, text=True)
    assert r.returncode == 2 and key in r.stderr and "Traceback" not in r.stderr


def test_bad_plan_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("plan: [1, 2]\n")
    r = subprocess.run([sys.executable, "-m", "pi2sim", "run", "--plan", str(f)], capture_output=True, text=True)
    assert r.returncode == 2 and "p.yaml" in r.stderr and "Traceback" not in r.stderr


def test_plan_exits_1_when_nothing_meets_the_requirement():
    r = subprocess.run([sys.executable, "-m", "pi2sim", "plan", "--model", "smollm2-135m", "--memory-gb", "0.4", "--decode-tokens", "8",
                        "--trials", "3", "--min-tok-s", "100000", "--quiet"], capture_output=True, text=True)
    assert r.returncode == 1 and "NOT met" in r.stdout and "exit 1" in r.stderr, r.stderr
