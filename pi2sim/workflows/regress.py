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
        results[sc.id] = {
            "title": sc.title,
            # the scenario as written (not the --set changes): what the golden was made from
            "config_hash": config_hash(to_dict(sc.config)),
            "metrics": {k: _round(v) for k, v in _metrics(r.summary).items()},
        }
    return results


def compare(golden: dict[str, dict], now: dict[str, dict], threshold: float = 0.02) -> pd.DataFrame:
    """One row per (scenario, metric) that moved past the threshold, or whose golden is missing."""
    rows = []
    for sid, cur in now.items():
        g = golden.get(sid)
        if g is None:
            rows.append({"scenario": sid, "metric": "(no golden)", "golden": None, "now": None, "change": "new scenario: run --accept"})
            continue
        if g.get("config_hash") != cur["config_hash"]:
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
