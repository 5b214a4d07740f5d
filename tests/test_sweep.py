"""Sweeps: grid parsing and validation, resume after a kill, the run cache, executors agree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from pi2sim.errors import InputError
from pi2sim.workflows.sweeps import Journal, parse_grid, run_grid, write_table

BASE = {"model": "smollm2-135m", "decode_tokens": 6, "fidelity": "analytic"}
FACTORS = {"memory_gb": [0.4, 0.6], "policy": ["powerinfer2", "llamacpp"], "device": ["oneplus12", "oneplus_ace2"]}


def test_full_factorial_and_ranges():
    g = parse_grid({"base": BASE, "factors": {"memory_gb": {"from": 0.2, "to": 0.4, "step": 0.1}, "compute_threads": [3, 4]}})
    pts = g.expand()
    assert len(pts) == 6 and pts[0] == {"memory_gb": 0.2, "compute_threads": 3} and pts[-1] == {"memory_gb": 0.4, "compute_threads": 4}
    g2 = parse_grid({"base": BASE, "factors": {"memory_gb": {"from": 0.2, "to": 0.3, "num": 3}}})
    assert [p["memory_gb"] for p in g2.expand()] == [0.2, 0.25, 0.3]
    g3 = parse_grid({"base": BASE, "points": [{"memory_gb": 0.2}, {"ffn_offload": 0.3}]})
    assert len(g3.configs()) == 2 and g3.configs()[1].ffn_offload == 0.3


@pytest.mark.parametrize(
    "data, key",
    [
        ({"base": BASE}, "factors"),
        ({"base": BASE, "factors": {"memory_gb": [1]}, "points": [{}]}, "factors"),
        ({"base": BASE, "factors": {"memory_gb": []}}, "factors.memory_gb"),
        ({"base": BASE, "factors": {"memory_gb": {"from": 1, "to": 2}}}, "factors.memory_gb"),
        ({"base": BASE, "factors": {"memory_gb": [-1]}}, "memory_gb"),
        ({"base": BASE, "factors": {"compute_threads": [0]}}, "compute_threads"),
        ({"base": BASE, "factors": {"no_such_option": [1]}}, "no_such_option"),
        ({"base": BASE, "factors": {"device.storage.latency": ["fast"]}}, "storage.latency"),
        ({"base": BASE, "factors": {"memory_gb": [1]}, "colour": "red"}, "colour"),
    ],
)
def test_bad_grids_fail_before_anything_runs(data, key):
    with pytest.raises(InputError) as e:
        parse_grid(data, "grid.yaml")
    msg = str(e.value)
    assert "grid.yaml" in msg and key in msg and "\n" not in msg


def test_resume_after_interruption_loses_and_duplicates_nothing(tmp_path):
    g = parse_grid({"base": BASE, "factors": FACTORS})
    ref, _ = run_grid(g, use_cache=False)
    journal = tmp_path / "r.parquet.journal.jsonl"
    part, st1 = run_grid(g, journal=journal, use_cache=False, limit=3)  # what a killed sweep leaves
    assert st1.simulated == 3 and len(part) == 3
    with open(journal, "a") as fh:
        fh.write('{"key": "torn')  # a write cut by the kill
    full, st2 = run_grid(g, journal=journal, use_cache=False)
    assert (st2.from_journal, st2.simulated) == (3, len(ref) - 3)
    assert len(full) == 8 and full["point"].is_unique
    pd.testing.assert_frame_equal(full, ref)
    assert len(Journal(journal).read()) == 8


def test_run_cache_reuses_identical_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("PI2SIM_CACHE", str(tmp_path / "cache"))
    g = parse_grid({"base": BASE, "factors": {"memory_gb": [0.2, 0.3]}})
    a, s1 = run_grid(g)
    b, s2 = run_grid(g)
    assert (s1.simulated, s2.simulated, s2.from_cache) == (2, 0, 2)
    pd.testing.assert_frame_equal(a, b)


def test_parallel_and_dask_match_serial(tmp_path):
    pytest.importorskip("dask.distributed")
    from dask.distributed import Client, LocalCluster

    g = parse_grid({"base": BASE, "factors": FACTORS})
    serial, _ = run_grid(g, use_cache=False)
    pooled, _ = run_grid(g, jobs=2, use_cache=False)
    pd.testing.assert_frame_equal(serial, pooled)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        dasked, _ = run_grid(g, executor=client.get_executor(), use_cache=False)
    pd.testing.assert_frame_equal(serial, dasked)
    # infeasible points are rows too (the Ace 2 cannot hold what the OnePlus 12 can)
    assert set(serial["status"]) <= {"ok", "refused", "infeasible"}


def test_table_has_factors_metrics_and_hash(tmp_path):
    g = parse_grid({"base": BASE, "factors": {"memory_gb": [0.4, 0.6], "policy": ["powerinfer2", "llm-in-a-flash"]}})
    df, _ = run_grid(g, use_cache=False)
    for col in ("point", "memory_gb", "policy", "device", "model", "status", "decode_tok_s", "ttft_ms", "tbt_p99_ms",
                "peak_memory_gb", "flash_bytes_per_token", "neuron_cache_hit_rate", "io_stall_share", "config_hash", "code_version"):
        assert col in df.columns, col
    assert (df["peak_memory_gb"] <= df["memory_budget_gb"] + 1e-9).all()
    paths = write_table(df, tmp_path / "t.parquet")
    pytest.importorskip("pyarrow")
    pd.testing.assert_frame_equal(pd.read_parquet(paths[0]), df)
    assert (tmp_path / "t.csv").read_text().count("\n") == len(df) + 1


def test_cli_killed_midway_then_resumed(tmp_path):
    """The real thing: SIGKILL a sweep process in the middle, run it again, get every row once."""
    grid = tmp_path / "g.yaml"
    factors = {"memory_gb": [0.4, 0.5, 0.6, 0.7], "policy": ["powerinfer2", "llamacpp"], "seed": [0, 1]}
    grid.write_text(yaml.safe_dump({"name": "g", "base": BASE, "factors": factors}))
    out = tmp_path / "res.csv"
    journal = tmp_path / "res.csv.journal.jsonl"
    env = dict(os.environ, PI2SIM_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "pi2sim", "sweep", str(grid), "--out", str(out), "--quiet", "--no-cache"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and (not journal.exists() or journal.read_text().count("\n") < 2):
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    done_before = journal.read_text().count("\n")
    assert 2 <= done_before < 16 and not out.exists()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"{done_before} from the journal" in r.stderr
    df = pd.read_csv(out)
    assert len(df) == 16 and df["point"].tolist() == list(range(16))


def test_cli_bad_grid_is_one_line_exit_2(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"base": BASE, "factors": {"memory_gb": ["lots"]}}))
    r = subprocess.run([sys.executable, "-m", "pi2sim", "sweep", str(grid)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "g.yaml" in r.stderr and "memory_gb" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_python_api():
    import pi2sim

    df = pi2sim.sweep(BASE, {"memory_gb": [0.4, 0.6]}, use_cache=False)
    assert len(df) == 2 and (df["status"] == "ok").all()


def test_memory_sweep_runs_its_caches_in_one_pass(tmp_path, monkeypatch):
    """The points of a memory sweep share one replay: their cache simulations run in one pass
    (one phase-1 replay per policy), and every row equals the point run alone."""
    monkeypatch.setenv("PI2SIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PI2SIM_NO_DISK_MEMO", "1")
    from pi2sim.access import memo, segmented
    from pi2sim.workflows.sweeps import run_point

    memo.ACCESS.clear()
    calls = []
    real = segmented._simulate_many
    monkeypatch.setattr(segmented, "_simulate_many", lambda w, f, caches, *a: calls.append(len(caches)) or real(w, f, caches, *a))
    g = parse_grid({"base": {**BASE, "decode_tokens": 16}, "factors": {"memory_gb": [0.3, 0.35, 0.4, 0.45, 0.5], "policy": ["powerinfer2", "llm-in-a-flash"]}})
    table, _ = run_grid(g, use_cache=False)
    ok = int((table["status"] == "ok").sum())
    # every feasible point's cache simulated once, in two passes: the points that share a replay
    # (both policies, unwindowed) and LLM in a Flash's one windowed point (too small a buffer)
    assert ok == 8 and sum(calls) == ok and sorted(calls) == [1, 7]
    memo.ACCESS.clear()
    calls.clear()
    for i, cfg in enumerate(g.configs()):
        alone = run_point(cfg)
        row = table.iloc[i]
        for k, v in alone.items():
            assert row[k] == v or (pd.isna(row[k]) and v is None), (i, k)
    assert calls and set(calls) == {1}  # alone, each point simulates its own cache (or reuses an identical one)
