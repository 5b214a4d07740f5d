"""Same inputs and seed -> byte-identical outputs: across runs, in one process (memoised access
results) or not, across sweep --jobs values and Dask; and a sweep killed at random points, several
times over, resumes to the identical result file."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pi2sim.engine import tiers

from conftest import have, require
from pi2sim.config import RunConfig, apply_values
from pi2sim.report.output import summary_json, tokens_csv
from pi2sim.simulation import run

GRID = {
    "name": "det",
    # points slow enough (~0.25 s each) for a kill to land between them: a memory sweep's cache
    # simulations run in one pass before the points, which then only time their plans
    "base": {"model": "smollm2-135m", "decode_tokens": 48, "fidelity": "layer"},
    "factors": {"memory_gb": [0.3, 0.35, 0.4, 0.5], "policy": ["powerinfer2", "llm-in-a-flash"], "compute_threads": [2, 4]},
}


def cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "pi2sim", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_run_outputs_byte_identical_across_processes(tmp_path):
    outs = []
    for i in range(2):
        d = tmp_path / f"o{i}"
        r = cli("run", "--model", "smollm2-135m", "--decode-tokens", "10", "--fidelity", "cluster", "--out", str(d),
                "--timeline", str(d / "timeline.json"), "--quiet")
        assert r.returncode == 0, r.stderr
        outs.append({p.name: p.read_bytes() for p in sorted(d.iterdir())})
    assert set(outs[0]) == {"summary.json", "tokens.csv", "timeline.json"}
    for name in outs[0]:
        assert outs[0][name] == outs[1][name], name


@pytest.mark.parametrize("fidelity", tiers.NAMES)
def test_memoised_access_changes_nothing(fidelity, monkeypatch):
    """A second run in one process reuses the access result; a run with the memo off recomputes it.
    All three give the same bytes."""
    cfg = apply_values(RunConfig(), {"model": "smollm2-135m", "decode_tokens": 12, "fidelity": fidelity, "memory_gb": 0.35})
    a = run(cfg)
    b = run(cfg)
    monkeypatch.setenv("PI2SIM_NO_MEMO", "1")
    c = run(cfg)
    ja, jb, jc = (summary_json(x.summary) for x in (a, b, c))
    assert ja == jb == jc
    assert tokens_csv(a.tokens) == tokens_csv(b.tokens) == tokens_csv(c.tokens)


def test_sweep_bytes_identical_across_jobs_and_dask(tmp_path):
    grid = tmp_path / "det.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    env = dict(os.environ, PI2SIM_CACHE=str(tmp_path / "cache"))
    variants = [("jobs1", ["--jobs", "1"]), ("jobs2", ["--jobs", "2"])]
    if have("dask.distributed"):
        variants.append(("dask", ["--dask", "--jobs", "2"]))
    else:
        require(False, "dask.distributed (the dask extra)")
    tables = {}
    for name, extra in variants:
        out = tmp_path / f"{name}.csv"
        r = cli("sweep", str(grid), "--out", str(out), "--no-cache", "--quiet", *extra, env=env)
        assert r.returncode == 0, r.stderr
        tables[name] = out.read_bytes()
    assert len(tables["jobs1"].splitlines()) == 1 + 16
    for name, data in tables.items():
        assert data == tables["jobs1"], name


def test_sweep_killed_at_random_points_resumes_identically(tmp_path):
    """SIGKILL the sweep at three random moments, resuming in between; the final table is the
    uninterrupted one, byte for byte, with every point once."""
    grid = tmp_path / "det.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    # no disk memo: the reference run would otherwise leave every point's cache simulation on
    # disk and the killed runs would finish before a kill lands
    env = dict(os.environ, PI2SIM_CACHE=str(tmp_path / "cache"), PI2SIM_NO_DISK_MEMO="1")
    ref = tmp_path / "ref.csv"
    r = cli("sweep", str(grid), "--out", str(ref), "--no-cache", "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "killed.csv"
    journal = Path(f"{out}.journal.jsonl")
    cmd = [sys.executable, "-m", "pi2sim", "sweep", str(grid), "--out", str(out), "--no-cache", "--quiet"]
    rng = random.Random(8)
    kills = 0
    for _ in range(3):
        before = journal.read_text().count("\n") if journal.exists() else 0
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        # a random moment: after k more points were journaled, plus a random delay inside the next
        k = rng.randint(1, 3)
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None and (not journal.exists() or journal.read_text().count("\n") < before + k):
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            kills += 1
        p.wait()
        # a killed sweep leaves no half-written table (one killed after writing it leaves the whole one)
        assert not out.exists() or p.returncode == 0 or out.read_bytes() == ref.read_bytes()
    assert kills >= 2
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == ref.read_bytes()


def test_access_results_read_back_from_disk_change_nothing(monkeypatch, tmp_path):
    """The on-disk memo (access/memo.persisted): a second process's run, which reads the cache
    simulation and the hot mask back from disk, gives byte-identical outputs; a change of the
    access code changes the key, so its results are never read back."""
    import json

    from pi2sim.access import memo
    from pi2sim.config import RunConfig, apply_values
    from pi2sim.simulation import run

    monkeypatch.setenv("PI2SIM_CACHE", str(tmp_path))
    memo.ACCESS.clear()  # as a new process: what earlier tests left in memory would not reach this disk
    memo.PROFILES.clear()
    cfg = apply_values(RunConfig(), {"model": "turbosparse-mixtral-47b", "decode_tokens": 8, "memory_gb": 12, "fidelity": "analytic"})
    first = run(cfg)
    stored = sorted((tmp_path / "memo").glob("*.npz"))
    assert len(stored) >= 4  # the trace's calibration, frequencies, order, hot mask, cache simulation
    memo.ACCESS.clear()
    memo.PROFILES.clear()
    again = run(cfg)  # as a new process would: nothing in memory, everything on disk
    assert json.dumps(first.summary, sort_keys=True, default=str) == json.dumps(again.summary, sort_keys=True, default=str)
    assert first.tokens.equals(again.tokens)
    monkeypatch.setattr(memo, "code_digest", lambda: "other code")
    memo.ACCESS.clear()
    memo.PROFILES.clear()
    run(cfg)
    # the access results were recomputed and stored under new keys; the synthetic calibration and
    # (if this process built it, rather than an earlier test) the generator's normal table are
    # keyed by the trace code alone and shared
    shared = 1 + any(p.name.startswith("normal-table") for p in stored)
    assert len(list((tmp_path / "memo").glob("*.npz"))) == 2 * len(stored) - shared
