"""Where the time moved between two runs: ``pi2sim diff A B`` and the regression gate's explanation.

A run's summary (``--json``, ``--out DIR/summary.json``) is flattened into (section, metric)
values in the units the summary names (``decode_tok_s``, stage milliseconds per token, shares,
bytes): the headline metrics, the critical path in ms, each stage's ms, each resource's
utilization, the cache (hit rate, flash bytes and reads), memory by component and energy by
component. :func:`diff` pairs two of them; a row is one metric with both values, the difference
and the change in percent (``None`` where one side lacks the metric or the base is 0).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import InputError

HEADLINE = ("decode_tok_s", "prefill_tok_s", "ttft_ms", "peak_memory_gb", "flash_bytes_per_token", "flash_reads_per_token",
            "neuron_cache_hit_rate", "energy_j_per_token", "battery_pct_per_hour")
# (section name, summary key, unit suffix of the rows)
SECTIONS = (("tbt", "tbt_ms", "ms"), ("critical path", "critical_path_ms_per_token", "ms"), ("stage", "stage_ms_per_token", "ms"),
            ("utilization", "utilization", "share"), ("memory", "memory_breakdown_gb", "GB"), ("energy", "energy_breakdown_j_per_token", "J/token"),
            ("power", "power_w", "W"))


def load_summary(path: str | Path) -> dict:
    """A run's summary from a ``--json`` file or an ``--out`` directory (its summary.json)."""
    p = Path(path)
    if p.is_dir():
        p = p / "summary.json"
    if not p.is_file():
        raise InputError(None, "pi2sim diff", "a run's --json output or an --out directory with summary.json", str(path))
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise InputError(p, None, "a run's JSON summary (pi2sim run --json, or --out DIR)") from None
    if not isinstance(data, dict) or "decode_tok_s" not in data:
        raise InputError(p, "decode_tok_s", "a run's JSON summary (pi2sim run --json, or --out DIR)")
    return data


def flatten(summary: dict) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for k in HEADLINE:
        v = summary.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[("headline", k)] = float(v)
    for section, key, unit in SECTIONS:
        d = summary.get(key)
        if isinstance(d, dict):
            for k, v in d.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[(section, f"{k}_{unit}" if unit in ("ms", "GB", "W") else k)] = float(v)
    pf = summary.get("prefill") or {}
    for k, v in (pf.get("split_ms") or {}).items():
        out[("prefill", f"{k}_ms")] = float(v)
    return out


def diff(a: dict, b: dict) -> list[dict[str, Any]]:
    """Rows (section, metric, a, b, delta, change_pct) for every metric either summary has."""
    fa, fb = flatten(a), flatten(b)
    keys = list(dict.fromkeys([*fa, *fb]))
    rows = []
    for section, metric in keys:
        x, y = fa.get((section, metric)), fb.get((section, metric))
        delta = (y - x) if (x is not None and y is not None) else None
        pct = (100.0 * delta / x) if (delta is not None and x) else None
        rows.append({"section": section, "metric": metric, "a": x, "b": y, "delta": delta, "change_pct": pct})
    return rows


def moved(rows: list[dict], threshold_pct: float = 0.0) -> list[dict]:
    """The rows whose value changed by more than ``threshold_pct`` percent (or appeared/vanished)."""
    out = []
    for r in rows:
        if r["delta"] is None:
            if (r["a"] is None) != (r["b"] is None):
                out.append(r)
        elif r["delta"] != 0 and (r["change_pct"] is None or abs(r["change_pct"]) > threshold_pct):
            out.append(r)
    return out


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return str(x)
    ax = abs(x)
    if ax >= 1e6:
        return f"{x:,.0f}"
    if ax < 1e-3:
        return f"{x:.4g}"
    return f"{x:.4f}".rstrip("0").rstrip(".") if ax < 10 else f"{x:,.2f}".rstrip("0").rstrip(".")


def _pct(p: float | None) -> str:
    return "-" if p is None else f"{p:+.2f}%"


def render_text(rows: list[dict], label_a: str = "A", label_b: str = "B") -> str:
    w = max([len(f"{r['section']}: {r['metric']}") for r in rows] + [10])
    lines = [f"{'metric':{w}s} {label_a[:14]:>14s} {label_b[:14]:>14s} {'delta':>14s} {'change':>9s}"]
    section = None
    for r in rows:
        if r["section"] != section and section is not None:
            lines.append("")
        section = r["section"]
        name = f"{r['section']}: {r['metric']}"
        lines.append(f"{name:{w}s} {_num(r['a']):>14s} {_num(r['b']):>14s} {_num(r['delta']):>14s} {_pct(r['change_pct']):>9s}")
    return "\n".join(lines)


def render_markdown(rows: list[dict], label_a: str = "A", label_b: str = "B") -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"| section | metric | {cell(label_a)} | {cell(label_b)} | delta | change |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {cell(r['section'])} | {cell(r['metric'])} | {_num(r['a'])} | {_num(r['b'])} | {_num(r['delta'])} | {_pct(r['change_pct'])} |")
    return "\n".join(lines)
