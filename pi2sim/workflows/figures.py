"""The README's figures, generated from the simulator (``python docs/figures.py``).

:func:`gather` runs what each figure shows and returns its data as plain, rounded JSON;
:func:`draw` turns that data into a figure (:mod:`pi2sim.report.figures`). The data is what is
committed and compared: ``docs/figures/figures.json`` holds it with the pi2sim version and the
settings, and each PNG carries the SHA-256 of its own data in a text chunk, so a figure whose
inputs changed, or a PNG drawn from other data, is found stale without comparing pixels (fonts and
matplotlib versions move pixels, not data).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd

from ..version import __version__

FIGURES = ("mixtral-memory-curve", "validation-scatter", "critical-path", "hit-rate-curve")
MIXTRAL = "turbosparse-mixtral-47b"
MEMORY_GB = (7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19)
# (label, policy, options): PowerInfer-2 as the paper's Mixtral runs (v1, CPU decode), and the two
# baselines the paper swept over the same memory sizes (T15, T16)
CURVE_ENGINES = (("PowerInfer-2", "powerinfer2", {"preset": "v1"}), ("LLM in a Flash", "llm-in-a-flash", {}), ("llama.cpp", "llamacpp", {"build": "2024"}))  # the build the paper compared against
TOKENS = {"decode_tokens": 256, "context_stride": 4}  # validate --fast: 256 tokens standing for the paper's 1,024
OFFLOADS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # Bamboo-7B's hit-rate curve
DATA_KEY = "pi2sim-data-sha256"  # the PNG text chunk holding the figure's data hash


def _r(x: float | None) -> float | None:
    return None if x is None or x != x else float(f"{float(x):.5g}")


def data_sha256(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def settings() -> dict:
    return {"memory_gb": list(MEMORY_GB), "engines": [e[0] for e in CURVE_ENGINES], "tokens": TOKENS, "validate": "all, --fast",
            "bamboo_offloads": list(OFFLOADS)}


def _label_of(policy: str) -> str:
    return next((label for label, p, _ in CURVE_ENGINES if p == policy), policy)


def gather(progress: bool = False) -> dict[str, Any]:
    """Every figure's data (see the module docstring)."""
    import sys

    from ..errors import InputError
    from ..simulation import simulate
    from . import validate as V

    def say(msg: str) -> None:
        if progress:
            print(f"[figures] {msg}", file=sys.stderr, flush=True)

    curve, shares = [], []
    for label, policy, opts in CURVE_ENGINES:
        say(f"{label} on {MIXTRAL}, {MEMORY_GB[0]}-{MEMORY_GB[-1]} GB")
        for gb in MEMORY_GB:
            try:
                r = simulate(model=MIXTRAL, memory_gb=gb, policy=policy, **TOKENS, **opts)
            except InputError:  # a memory size the engine refuses: no point, as on the phone
                continue
            s = r.summary
            cp = s["critical_path_ms_per_token"]
            curve.append({"policy": label, "memory_gb": gb, "decode_tok_s": _r(s["decode_tok_s"]), "compute_ms": _r(cp["compute"]),
                          "io_stall_ms": _r(cp["io_stall"]), "other_ms": _r(cp["other"])})
            if policy == "powerinfer2":
                shares.append({"model": MIXTRAL, "memory": f"{gb} GB", "cached_share": _r(V.cached_share(r)), "hit_rate": _r(s["neuron_cache_hit_rate"])})
    say("Bamboo-7B hit rate against FFN offload")
    for off in OFFLOADS:
        r = simulate(model="bamboo-7b", ffn_offload=off, preset="v3", decode_tokens=256)
        shares.append({"model": "bamboo-7b", "memory": f"{off:.0%} offload", "cached_share": _r(V.cached_share(r)), "hit_rate": _r(r.summary["neuron_cache_hit_rate"])})

    say("every validation point (validate --set all --fast)")
    outcomes = V.validate("all", fast=True)
    set_of = {fig: name for name, figs in V.SETS.items() for fig in figs}
    points = [{"id": o.scenario.id, "set": set_of.get(o.scenario.figure, "other"), "metric": o.scenario.metric,
               "simulated": _r(o.simulated) if o.refused is None else None, "paper": _r(o.scenario.paper)} for o in outcomes]
    mixtral_paper = []
    for o in outcomes:
        run = o.scenario.run or {}
        if o.scenario.metric == "decode_tok_s" and run.get("model") == MIXTRAL and run.get("memory_gb") is not None:
            mixtral_paper.append({"policy": _label_of(run.get("policy", "powerinfer2")), "memory_gb": _r(run["memory_gb"]),
                                  "paper": _r(o.scenario.paper), "id": o.scenario.id})
    # the paper's hit rates, placed at the cached share pi2sim gives their condition (the paper
    # states the condition, 50% FFN offload, not the share)
    hit_paper = []
    for o in outcomes:
        if o.scenario.id in ("T8-hit", "T10"):
            run = o.scenario.run or {}
            r = simulate(model=run["model"], ffn_offload=run.get("ffn_offload"), memory_gb=run.get("memory_gb"), decode_tokens=16,
                         **(run.get("options") or {}))
            hit = o.scenario.paper if o.scenario.metric == "hit_rate" else 1.0 - o.scenario.paper
            hit_paper.append({"model": run["model"], "cached_share": _r(V.cached_share(r)), "hit_rate": _r(hit), "id": o.scenario.id})
    rows = [c for c in curve if c["memory_gb"] in (7, 19)]
    return {
        "mixtral-memory-curve": {"curve": curve, "paper": sorted(mixtral_paper, key=lambda p: (p["policy"], p["memory_gb"]))},
        "validation-scatter": {"points": points},
        "critical-path": {"rows": [{"label": f"{c['policy']}, {c['memory_gb']} GB", **{k: c[k] for k in ("compute_ms", "io_stall_ms", "other_ms")}}
                                   for c in sorted(rows, key=lambda c: (c["memory_gb"], c["policy"]))]},
        "hit-rate-curve": {"curves": shares, "paper": hit_paper},
    }


def draw(name: str, data: dict):
    """The figure ``name`` drawn from its data."""
    from ..report import figures as F

    if name == "mixtral-memory-curve":
        return F.memory_curve(pd.DataFrame(data["curve"]), pd.DataFrame(data["paper"]),
                              "TurboSparse-Mixtral-47B on the OnePlus 12: decode speed against memory")
    if name == "validation-scatter":
        df = pd.DataFrame(data["points"]).astype({"simulated": float})
        return F.validation_scatter(df, "pi2sim against every published point (validate --set all --fast)")
    if name == "critical-path":
        return F.critical_path(pd.DataFrame(data["rows"]), "Where a token's time goes: TurboSparse-Mixtral-47B at 7 GB and 19 GB")
    if name == "hit-rate-curve":
        return F.hit_rate_curve(pd.DataFrame(data["curves"]), pd.DataFrame(data["paper"]),
                                "Neuron-cache hit rate against cache size (PowerInfer-2's segmented cache)")
    raise KeyError(name)
