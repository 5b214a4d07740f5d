"""Regression gate for scheduling changes: golden scenarios and their committed results.

``experiments/regression/scenarios.yaml`` names a small set of runs (PowerInfer-2 and every
baseline, dense and MoE models, both phones); ``experiments/regression/golden.json`` holds their
headline metrics as committed. :func:`check` reruns them and reports every metric that moved by
more than the threshold:

* rates, times, bytes and memory: relative change (default 2%);
* shares and rates in [0, 1] (hit rate, critical-path shares): absolute change in points of the
  same size (2 points), since a share moving 0.010 -> 0.012 is not a 20% regression.

A scenario whose resolved configuration differs from the one its golden was made with is reported
as changed (the comparison would be meaningless). ``accept`` rewrites the goldens; the commit then
shows the diff of every number that moved, which is the review.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .. import resources, yamlio
from ..config import RunConfig, apply_values, config_hash
from ..errors import InputError
from ..schema import to_dict

METRICS = {
    # name: kind ("rel": relative change; "abs": absolute change of a share)
    "decode_tok_s": "rel",
    "prefill_tok_s": "rel",
    "ttft_ms": "rel",
    "tbt_p50_ms": "rel",
    "tbt_p99_ms": "rel",
    "peak_memory_gb": "rel",
    "flash_bytes_per_token": "rel",
    "flash_reads_per_token": "rel",
    "neuron_cache_hit_rate": "abs",
    "compute_share": "abs",
    "io_stall_share": "abs",
    # on devices with a power model only (docs/energy.md)
    "energy_j_per_token": "rel",
    "power_peak_w": "rel",
}


def regression_dir() -> Path:
    return resources.data_dir("experiments") / "regression"


@dataclass
class Scenario:
    id: str
    title: str
    config: RunConfig


def load_scenarios(root: Path | None = None) -> list[Scenario]:
    path = (root or regression_dir()) / "scenarios.yaml"
    data = yamlio.load(path)
    if not isinstance(data, dict) or not isinstance(data.get("scenarios"), list) or not data["scenarios"]:
        raise InputError(path, "scenarios", "a non-empty list of {id, title, run}")
    out, seen = [], set()
    for i, item in enumerate(data["scenarios"]):
        if not isinstance(item, dict) or set(item) - {"id", "title", "run"} or "id" not in item or "run" not in item:
            raise InputError(path, f"scenarios[{i}]", "a mapping with id, title and run")
        sid = str(item["id"])
        if sid in seen:
            raise InputError(path, f"scenarios[{i}].id", "a unique id", sid)
        seen.add(sid)
        run = dict(item["run"] or {})
        options = run.pop("options", None) or {}
        cfg = apply_values(RunConfig(), {**run, **options}, source=f"{path}: scenarios[{i}] ({sid})")
        out.append(Scenario(sid, str(item.get("title", "")), cfg))
    return out


def _metrics(summary: dict) -> dict[str, float]:
    from ..report.summary import summary_row

    row = summary_row(summary)
    return {m: row[m] for m in METRICS if row.get(m) is not None}


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def with_changes(sc: Scenario, changes: dict[str, Any]) -> RunConfig:
    """Apply ``--set``-style changes to a scenario; a policy option goes only to scenarios whose
    policy has it (so ``io_core=eff0`` moves every PowerInfer-2 scenario and nothing else)."""
    from dataclasses import fields

    from .. import policies
    from ..config import RUN_KEYS

    own = {f.name for f in fields(policies.get(sc.config.policy).Options)}
    apply = {k: v for k, v in changes.items() if k in RUN_KEYS or k.startswith(("device.", "model.")) or k in own}
    return apply_values(sc.config, apply, source="--set") if apply else sc.config


def run_all(scenarios: list[Scenario], changes: dict[str, Any] | None = None, progress: bool = False) -> dict[str, dict]:
    from ..simulation import run

    results = {}
    for sc in scenarios:
        cfg = with_changes(sc, changes or {})
        if progress:
            import sys

            print(f"[regress] {sc.id}", file=sys.stderr, flush=True)
        r = run(cfg)
        from .diff import flatten

        results[sc.id] = {
            "title": sc.title,
            # the scenario as written (not the --set changes): what the golden was made from
            "config_hash": config_hash(to_dict(sc.config)),
            "metrics": {k: _round(v) for k, v in _metrics(r.summary).items()},
            # where the time, memory and energy went (pi2sim diff's rows): not gated, shown for what moved
            "breakdown": {f"{sec}|{m}": _round(v) for (sec, m), v in flatten(r.summary).items() if sec != "headline"},
        }
    return results


def explain(golden: dict, now: dict, threshold_pct: float) -> list[dict]:
    """For a scenario that moved: its breakdown rows (stage and critical-path ms, utilization,
    memory, energy) that changed by more than ``threshold_pct`` percent (:mod:`pi2sim.workflows.diff`).
    Empty when the golden was recorded without a breakdown (an older pi2sim)."""
    from .diff import moved

    a, b = golden.get("breakdown") or {}, now.get("breakdown") or {}
    if not a or not b:
        return []
    rows = []
    for key in dict.fromkeys([*a, *b]):
        x, y = a.get(key), b.get(key)
        sec, _, m = key.partition("|")
        d = (y - x) if (x is not None and y is not None) else None
        rows.append({"section": sec, "metric": m, "a": x, "b": y, "delta": d, "change_pct": (100 * d / x) if (d is not None and x) else None})
    from .diff import SECTIONS

    names = list(dict.fromkeys(["critical path", "stage", *(name for name, _, _ in SECTIONS)]))  # where the time went first
    order = {name: i for i, name in enumerate(names)}
    return sorted(moved(rows, threshold_pct), key=lambda r: order.get(r["section"], len(order)))


def compare(golden: dict[str, dict], now: dict[str, dict], threshold: float = 0.02, check_config: bool = True) -> pd.DataFrame:
    """One row per (scenario, metric) that moved past the threshold, or whose golden is missing.
    ``check_config``: a golden made from another resolved configuration is a row of its own (off
    when the goldens come from another revision, whose configurations may resolve differently)."""
    rows = []
    for sid, cur in now.items():
        g = golden.get(sid)
        if g is None:
            rows.append({"scenario": sid, "metric": "(no golden)", "golden": None, "now": None, "change": "new scenario: run --accept"})
            continue
        if check_config and g.get("config_hash") != cur["config_hash"]:
            rows.append({"scenario": sid, "metric": "(config)", "golden": None, "now": None, "change": "scenario edited since its golden: run --accept"})
            continue
        for m, kind in METRICS.items():
            a, b = g["metrics"].get(m), cur["metrics"].get(m)
            if a is None or b is None:
                continue
            if kind == "abs":
                d = b - a
                if abs(d) > threshold:
                    rows.append({"scenario": sid, "metric": m, "golden": a, "now": b, "change": f"{100 * d:+.1f} points"})
            else:
                d = (b - a) / a if a else (0.0 if b == 0 else float("inf"))
                if abs(d) > threshold:
                    rows.append({"scenario": sid, "metric": m, "golden": a, "now": b, "change": f"{100 * d:+.1f}%"})
    for sid in golden:
        if sid not in now:
            rows.append({"scenario": sid, "metric": "(removed)", "golden": None, "now": None, "change": "scenario removed: run --accept"})
    return pd.DataFrame(rows, columns=["scenario", "metric", "golden", "now", "change"])


def golden_at(rev: str, scenarios_yaml: Path, ids: set[str] | None = None, progress: bool = False) -> dict[str, dict]:
    """The suite's results on another git revision of this project: the revision checked out in a
    temporary worktree runs ``pi2sim regress --accept`` on a copy of the suite (the scenarios as
    they are now), and its golden.json is read back."""
    import subprocess
    import sys
    import tempfile

    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        raise InputError(None, "--against", "a git checkout of pi2sim (this installation has no .git beside the package)", str(repo))

    def git(*args, **kw):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, **kw)

    r = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if r.returncode != 0:
        raise InputError(None, "--against", "a git revision of this repository (a branch, tag, commit or HEAD~N)", rev)
    with tempfile.TemporaryDirectory(prefix="pi2sim-against-") as tmp:
        tree, suite = Path(tmp) / "tree", Path(tmp) / "suite"
        suite.mkdir()
        data = yamlio.load(scenarios_yaml)
        if ids is not None:  # only the scenarios this run compares (--only)
            data = {**data, "scenarios": [sc for sc in data["scenarios"] if str(sc.get("id")) in ids]}
        from ..atomic import write_text
        import yaml

        write_text(suite / "scenarios.yaml", yaml.safe_dump(data, sort_keys=False))
        r = git("worktree", "add", "--detach", "--force", str(tree), rev)
        if r.returncode != 0:
            raise InputError(None, "--against", f"a revision git can check out ({r.stderr.strip().splitlines()[-1] if r.stderr.strip() else 'git failed'})", rev)
        try:
            env = dict(__import__("os").environ, PYTHONPATH=str(tree))
            if progress:
                print(f"[regress] running the suite at {rev} ({tree})", file=sys.stderr, flush=True)
            p = subprocess.run([sys.executable, "-m", "pi2sim", "regress", "--suite", str(suite), "--accept", "--quiet"], cwd=tree, env=env,
                               capture_output=True, text=True)
            if p.returncode != 0:
                last = (p.stderr.strip().splitlines() or ["(no message)"])[-1]
                raise InputError(None, "--against", f"a revision that runs these scenarios ({rev} says: {last})", rev)
            return load_golden(suite)
        finally:
            git("worktree", "remove", "--force", str(tree))


def golden_path(root: Path | None = None) -> Path:
    return (root or regression_dir()) / "golden.json"


def load_golden(root: Path | None = None) -> dict[str, dict]:
    p = golden_path(root)
    if not p.exists():
        return {}
    try:
        data = json.loads(p.read_text())
    except ValueError:
        raise InputError(p, None, "valid JSON (rewrite it with pi2sim regress --accept)") from None
    if not isinstance(data, dict) or not isinstance(data.get("scenarios", {}), dict):
        raise InputError(p, "scenarios", "a mapping of scenario id to metrics (rewrite it with pi2sim regress --accept)")
    return data["scenarios"] if "scenarios" in data else {}


def write_golden(results: dict[str, dict], root: Path | None = None) -> Path:
    from ..atomic import write_text

    p = golden_path(root)
    text = json.dumps({"about": "pi2sim regress goldens; rewrite with `pi2sim regress --accept`", "scenarios": results}, indent=1, sort_keys=True)
    write_text(p, text + "\n")
    return p
