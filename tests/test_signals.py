"""SIGTERM and SIGINT end a sweep together with its workers, leave no partial file, and the rerun
resumes (issue 34)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_sweep_stops_its_workers_and_resumes(tmp_path, sig):
    grid = tmp_path / "g.yaml"
    grid.write_text("name: sig\nbase: {model: smollm2-135m, decode_tokens: 192, fidelity: layer, sparsity: 0.7}\n"
                    "factors: {memory_gb: {from: 0.40, to: 0.60, num: 8}}\n")
    out = tmp_path / "out.csv"
    journal = tmp_path / "out.csv.journal.jsonl"
    env = dict(os.environ, PI2SIM_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "pi2sim", "sweep", str(grid), "--jobs", "2", "--out", str(out), "--quiet"]
    p = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (journal.exists() and journal.read_text().count("\n") >= 1) and p.poll() is None:
        time.sleep(0.2)
    assert p.poll() is None, "the sweep finished before it could be interrupted"
    os.kill(p.pid, sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode != 0 and "Traceback" not in err, err
    time.sleep(1.0)
    with pytest.raises(ProcessLookupError):  # no worker left in the sweep's process group
        os.killpg(p.pid, 0)
    assert not out.exists()  # no partial table
    done = journal.read_text().count("\n")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert out.exists() and "from the journal" in r.stderr and done >= 1
