"""pi2sim diff: two runs side by side, metric by metric (issue 33)."""

from __future__ import annotations

import json
import subprocess
import sys

RUN = ["run", "--model", "bamboo-7b", "--decode-tokens", "8", "--fidelity", "analytic", "--quiet"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pi2sim", *args], capture_output=True, text=True)


def test_diff_of_two_runs_names_every_stage_and_the_critical_path(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b"
    r = _cli(*RUN, "--json")
    assert r.returncode == 0, r.stderr
    a.write_text(r.stdout)
    assert _cli(*RUN, "--set", "io_core=eff0", "--out", str(b)).returncode == 0  # an --out directory on the other side
    r = _cli("diff", str(a), str(b))
    assert r.returncode == 0, r.stderr
    for needle in ("headline: decode_tok_s", "critical path: io_stall_ms", "stage: ffn_ms", "utilization: eff0", "memory: neuron_cache_GB",
                   "energy: cpu"):
        assert needle in r.stdout, needle
    md = _cli("diff", str(a), str(b), "--md", "--changed").stdout.splitlines()
    assert md[0].startswith("| section | metric |") and md[1].startswith("|---") and all(l.count("|") == 7 for l in md)
    rows = json.loads(_cli("diff", str(a), str(b), "--json").stdout)["rows"]
    ffn = next(r for r in rows if r["metric"] == "ffn_ms")
    assert ffn["delta"] == ffn["b"] - ffn["a"] and ffn["change_pct"] is not None
    same = json.loads(_cli("diff", str(a), str(a), "--json", "--changed").stdout)["rows"]
    assert same == []


def test_diff_bad_input_is_one_line(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    for args in (["diff", str(tmp_path / "x.json"), str(tmp_path / "x.json")], ["diff", str(tmp_path / "none.json"), str(tmp_path / "x.json")]):
        r = _cli(*args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
