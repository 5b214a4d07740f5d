"""Fair comparisons (issue 33): every engine under one memory condition, refusals as rows."""

from __future__ import annotations

import json
import subprocess
import sys

import pi2sim


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pi2sim", *args], capture_output=True, text=True)


def test_compare_puts_every_engine_under_the_phones_app_memory_and_refusals_are_rows():
    r = _cli("compare", "--model", "llama-3.1-8b", "--policies", "llamacpp,genie,executorch,mlc,powerserve,smallthinker", "--json",
             "--quiet", "--decode-tokens", "8", "--fidelity", "analytic")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["memory_condition"].startswith("19 GB")  # the OnePlus 12's app memory, named
    rows = {x["policy"]: x for x in d["rows"]}
    assert rows["smallthinker"]["status"] == "refused" and "has none" in rows["smallthinker"]["reason"]
    ran = [x for x in d["rows"] if x["status"] == "ok"]
    assert len(ran) == 5 and all(x["peak_memory_gb"] <= 19.0 + 1e-9 for x in ran)


def test_compare_refuses_the_singular_policy_flag():
    r = _cli("compare", "--model", "bamboo-7b", "--policies", "powerinfer2", "--policy", "mlc", "--quiet")
    assert r.returncode == 2 and "--policies" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_sweep_over_engines_finishes_with_a_row_for_the_one_that_cannot_run():
    df = pi2sim.sweep({"model": "llama-3.1-8b", "decode_tokens": 4, "fidelity": "analytic", "memory_gb": 19},
                      {"policy": ["llamacpp", "smallthinker", "genie"], "device": ["oneplus12", "poco_x7_pro"]})
    got = {(r.policy, r.device): r.status for r in df.itertuples()}
    assert got[("smallthinker", "oneplus12")] == "refused" and got[("genie", "poco_x7_pro")] == "refused"
    assert got[("llamacpp", "oneplus12")] == "ok" and got[("llamacpp", "poco_x7_pro")] in ("ok", "refused")
