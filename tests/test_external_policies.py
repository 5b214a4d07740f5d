"""A researcher's own policy from outside the package (issue 33): by path and by entry point,
wherever a policy name is accepted, with memo keys that name what computed them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "pi2_perlayer.py"
RUN = ["--model", "smollm2-135m", "--ffn-offload", "0.8", "--set", "sparsity=0.7", "--set", "compute_threads=4", "--decode-tokens", "32",
       "--fidelity", "analytic", "--quiet"]


def _cli(*args, env=None, cwd=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "pi2sim", *args], capture_output=True, text=True, env=e, cwd=cwd)


@pytest.fixture
def mypol(tmp_path):
    path = tmp_path / "mypol.py"
    path.write_text(EXAMPLE.read_text().replace("class PerLayerHot(", "class MyPolicy("))
    return f"{path}:MyPolicy"


def _tok_s(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["decode_tok_s"]


def test_a_policy_file_runs_through_run_compare_sweep_and_regress(mypol, tmp_path):
    own = _tok_s(_cli("run", "--policy", mypol, *RUN, "--json"))
    base = _tok_s(_cli("run", "--policy", "powerinfer2", *RUN, "--json"))
    assert own != base  # its own hot region, not PowerInfer-2's

    r = _cli("compare", "--model", "smollm2-135m", "--policies", f"powerinfer2,{mypol}", "--ffn-offload", "0.8", "--decode-tokens", "16",
             "--fidelity", "analytic", "--quiet", "--out", str(tmp_path / "cmp"))
    assert r.returncode == 0, r.stderr
    import pandas as pd

    df = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert list(df["policy"]) == ["powerinfer2", mypol] and set(df["status"]) == {"ok"}

    grid = tmp_path / "grid.yaml"
    grid.write_text(f"base: {{model: smollm2-135m, decode_tokens: 8, fidelity: analytic, sparsity: 0.7}}\n"
                    f"factors: {{memory_gb: [0.4, 0.5], policy: [powerinfer2, '{mypol}']}}\n")
    r = _cli("sweep", str(grid), "--jobs", "2", "--out", str(tmp_path / "sw.csv"), "--quiet")
    assert r.returncode == 0, r.stderr
    sw = pd.read_csv(tmp_path / "sw.csv")
    assert len(sw) == 4 and (sw["status"] == "ok").all()

    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "scenarios.yaml").write_text(textwrap.dedent(f"""\
        scenarios:
          - id: mine
            title: my policy
            run: {{policy: '{mypol}', model: smollm2-135m, memory_gb: 0.4, sparsity: 0.7, decode_tokens: 8}}
        """))
    assert _cli("regress", "--suite", str(suite), "--accept", "--quiet").returncode == 0
    (suite / "scenarios.yaml").write_text((suite / "scenarios.yaml").read_text()
                                          + "  - id: parent\n    title: PowerInfer-2 itself\n"
                                          + "    run: {policy: powerinfer2, model: smollm2-135m, memory_gb: 0.4, sparsity: 0.7, decode_tokens: 8}\n")
    assert _cli("regress", "--suite", str(suite), "--accept", "--quiet").returncode == 0
    for policy in ("powerinfer2", mypol, "powerinfer2"):  # an A/B run in the same cache between the goldens and the gate
        assert _cli("run", "--policy", policy, "--model", "smollm2-135m", "--memory-gb", "0.4", "--set", "sparsity=0.7", "--decode-tokens", "8",
                    "--quiet").returncode == 0
    r = _cli("regress", "--suite", str(suite), "--quiet", "--threshold", "1e-9")
    assert r.returncode == 0, r.stdout + r.stderr


def test_an_entry_point_policy_runs_by_its_name(tmp_path):
    """A research repo that `pip install -e .`s its policies: an installed distribution with a
    pi2sim.policies entry point (a dist-info on the path is what pip leaves)."""
    site = tmp_path / "site"
    (site / "mypkg").mkdir(parents=True)
    (site / "mypkg" / "__init__.py").write_text("")
    (site / "mypkg" / "pol.py").write_text(EXAMPLE.read_text())
    info = site / "mypkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mypkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pi2sim.policies]\nperlayer = mypkg.pol:PerLayerHot\n")
    env = {"PYTHONPATH": str(site)}
    own = _tok_s(_cli("run", "--policy", "perlayer", *RUN, "--json", env=env))
    assert own == _tok_s(_cli("run", "--policy", f"{EXAMPLE}:PerLayerHot", *RUN, "--json"))


@pytest.mark.parametrize("body, cls, needle", [
    ("x = 1\n", "Nope", "a class defined in the file"),
    ("class NotAPolicy:\n    pass\n", "NotAPolicy", "a subclass of pi2sim.policies.base.Policy"),
    ("from pi2sim.policies.base import Policy\nclass P(Policy):\n    name = 'p'\n    summary = 's'\n    Options = dict\n", "P", "Options"),
    ("from pi2sim.policies.powerinfer2 import PowerInfer2\nclass P(PowerInfer2):\n    name = ''\n", "P", "P.name"),
    ("def broken(:\n", "P", "a Python file that imports"),
    ("raise RuntimeError('boom')\n", "P", "RuntimeError: boom"),
    ("from pi2sim.policies import register\nfrom pi2sim.policies.powerinfer2 import PowerInfer2\n@register\nclass P(PowerInfer2):\n    pass\n", "P",
     "a name no bundled policy has"),
])
def test_a_mistake_in_a_policy_file_is_one_line(tmp_path, body, cls, needle):
    path = tmp_path / "bad.py"
    path.write_text(body)
    r = _cli("run", "--policy", f"{path}:{cls}", *RUN)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and str(path) in lines[0] and needle in lines[0], r.stderr


def test_missing_policy_file_and_unknown_name(tmp_path):
    r = _cli("run", "--policy", f"{tmp_path}/none.py:X", *RUN)
    assert r.returncode == 2 and "does not exist" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _cli("run", "--policy", "no-such-policy", *RUN)
    assert r.returncode == 2 and "file.py:ClassName" in r.stderr


def test_a_subclass_and_its_parent_never_share_a_memo(mypol, tmp_path):
    """The issue's reproduction: a subclass overriding _hot_mask, then its parent, in one cache,
    each get what they get in a fresh cache (the hot-mask memo was keyed without the class)."""
    def fresh(policy):
        d = tmp_path / f"fresh-{abs(hash(policy))}"
        return _tok_s(_cli("run", "--policy", policy, *RUN, "--json", env={"PI2SIM_CACHE": str(d)}))

    own_fresh, base_fresh = fresh(mypol), fresh("powerinfer2")
    shared = {"PI2SIM_CACHE": str(tmp_path / "shared")}
    assert _tok_s(_cli("run", "--policy", mypol, *RUN, "--json", env=shared)) == own_fresh
    assert _tok_s(_cli("run", "--policy", "powerinfer2", *RUN, "--json", env=shared)) == base_fresh
    assert _tok_s(_cli("run", "--policy", mypol, *RUN, "--json", env=shared)) == own_fresh
    # and in one process (the in-memory memo)
    from pi2sim import simulate

    kw = dict(model="smollm2-135m", ffn_offload=0.8, sparsity=0.7, compute_threads=4, decode_tokens=32, fidelity="analytic")
    a = simulate(policy=mypol, **kw).summary["decode_tok_s"]
    b = simulate(policy="powerinfer2", **kw).summary["decode_tok_s"]
    assert (a, b) == (own_fresh, base_fresh)
