"""Self-checking caches (issue 34): a damaged, truncated, empty or foreign cache entry is detected,
discarded with one line, recomputed, and the run's result is what a fresh cache gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUN = ["run", "--policy", "powerinfer2", "--model", "smollm2-135m", "--memory-gb", "0.4", "--set", "sparsity=0.7", "--decode-tokens", "16",
       "--fidelity", "analytic", "--json", "--quiet"]


def _cli(cache: Path, *args):
    env = dict(os.environ, PI2SIM_CACHE=str(cache))
    return subprocess.run([sys.executable, "-m", "pi2sim", *args], capture_output=True, text=True, env=env)


def _damage(files: list[Path], how: str) -> None:
    for i, f in enumerate(files):
        data = f.read_bytes()
        if how == "truncated":
            f.write_bytes(data[: len(data) // 2])
        elif how == "empty":
            f.write_bytes(b"")
        elif how == "random":
            f.write_bytes(os.urandom(max(64, len(data))))
        elif how == "foreign":  # another key's entry under this key's name
            other = files[(i + 1) % len(files)]
            if other != f:
                f.write_bytes(other.read_bytes() if i % 2 == 0 else data)


@pytest.mark.parametrize("how", ["truncated", "empty", "random", "foreign"])
def test_a_damaged_memo_entry_is_recomputed(tmp_path, how):
    cache = tmp_path / "cache"
    first = _cli(cache, *RUN)
    assert first.returncode == 0, first.stderr
    files = sorted((cache / "memo").glob("*.npz"))
    assert len(files) >= 2
    _damage(files, how)
    again = _cli(cache, *RUN)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    assert json.loads(again.stdout)["decode_tok_s"] == json.loads(first.stdout)["decode_tok_s"]
    notices = [l for l in again.stderr.splitlines() if "damaged cache entry discarded" in l]
    assert notices, again.stderr
    third = _cli(cache, *RUN)  # rewritten intact: nothing to say the next time
    assert "damaged" not in third.stderr


@pytest.mark.parametrize("how", ["truncated", "empty", "random", "foreign"])
def test_a_damaged_sweep_run_cache_entry_is_rerun(tmp_path, how):
    cache = tmp_path / "cache"
    grid = tmp_path / "g.yaml"
    grid.write_text("base: {model: smollm2-135m, decode_tokens: 8, fidelity: analytic, sparsity: 0.7}\nfactors: {memory_gb: [0.4, 0.5]}\n")
    out1, out2 = tmp_path / "a.csv", tmp_path / "b.csv"
    assert _cli(cache, "sweep", str(grid), "--out", str(out1), "--quiet").returncode == 0
    files = sorted((cache / "runs").glob("*.json"))
    assert len(files) == 2
    _damage(files, how)
    r = _cli(cache, "sweep", str(grid), "--out", str(out2), "--quiet")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "damaged cache entry discarded" in r.stderr
    import pandas as pd

    a, b = pd.read_csv(out1), pd.read_csv(out2)
    assert list(a["decode_tok_s"]) == list(b["decode_tok_s"])
