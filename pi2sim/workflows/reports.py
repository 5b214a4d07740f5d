"""The contents of ``--report report.html`` for validate, compare and sweep: sections of tables,
figures and configuration (:mod:`pi2sim.report.html` renders them into one self-contained page)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import yaml

from ..report import figures as F
from ..report.html import Figure, Section

MAX_ROWS = 500  # a sweep's table in the page (the full table is in its --out file)


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True).rstrip()


def validate_sections(df: pd.DataFrame, configs: dict[str, dict], which: str, fast: bool, fidelity: str | None, fitted: list[dict]) -> list[Section]:
    """``df``: :func:`pi2sim.workflows.validate.table`; ``configs``: scenario id -> its run configuration."""
    from . import validate as V

    set_of = {fig: name for name, figs in V.SETS.items() for fig in figs}
    pts = df.assign(set=df["figure"].map(lambda f: set_of.get(f, "other")))
    stats = V.summary_stats(df)
    stat_table = pd.DataFrame([{"set": k, "points": v["n"], "median |error| %": v["median_abs_error_pct"], "max |error| %": v["max_abs_error_pct"]}
                               for k, v in stats.items()])
    refused = pts[pts["refused"] != ""]
    run = f"{'--fast (256 decode tokens standing for 1,024)' if fast else 'full length'}, {fidelity or 'each scenario’s'} tier"
    intro = (f"{len(pts)} published points of set '{which}', simulated {run}. The error is pi2sim / published − 1; a configuration the "
             f"simulated engine refuses counts as an infinite error ({len(refused)} here). docs/validation.md explains every point.")
    figs = [Figure(F.png_bytes(F.validation_scatter(pts.astype({"simulated": float}), f"pi2sim against {len(pts)} published points")),
                   "scatter of simulated against published values, log-log, with a ±10% band", "each point in its own unit; the ±10% band shaded",
                   wide=True)]
    for fig_name, sub in pts.groupby("figure", sort=False):
        figs.append(Figure(F.png_bytes(F.bars_vs_paper(sub, f"{fig_name}: published and simulated")), f"bars of published and simulated values for {fig_name}"))
    table = pts[["id", "set", "metric", "simulated", "paper", "error_pct", "refused", "title", "source", "version"]].rename(
        columns={"paper": "published", "error_pct": "error %", "version": "paper version"})
    fitted_table = pd.DataFrame(fitted)
    if "note" in fitted_table and not fitted_table["note"].astype(str).str.strip().any():
        fitted_table = fitted_table.drop(columns="note")
    details = []  # one folded block per set: {scenario id: its configuration}
    for set_name, sub in pts.groupby("set", sort=False):
        details.append((f"{set_name} ({len(sub)} points)", _yaml({sid: configs[sid] for sid in sub["id"] if sid in configs})))
    return [
        Section("Summary", intro, table=stat_table),
        Section("Simulated against published", figures=figs),
        Section("Every point", table=table),
        Section("Fitted constants", "Every constant fitted to an end-to-end point (pi2sim validate --fitted); the rest of the device and "
                "model files is sourced or a stated assumption.", table=fitted_table),
        Section("Configuration", "The run configuration of every point, as simulated.", details=details),
    ]


def compare_sections(table: pd.DataFrame, resolved: dict[str, dict], title: str, figure_png: bytes | None) -> list[Section]:
    ok = table[table["status"] == "ok"] if "status" in table else table
    best = ok.sort_values("decode_tok_s", ascending=False).iloc[0] if len(ok) else None
    text = f"{len(table)} engines on the same phone, model and memory; {len(ok)} ran."
    if best is not None:
        text += f" Fastest decode: {best['policy']} at {best['decode_tok_s']:.3g} tok/s."
    figs = [Figure(figure_png, "bar charts of decode speed and of the critical path per token, by engine")] if figure_png else []
    return [
        Section(title, text, figures=figs, table=table),
        Section("Configuration", "Each engine's fully resolved configuration (what was simulated).",
                details=[(label, _yaml(r)) for label, r in resolved.items()]),
    ]


def sweep_sections(table: pd.DataFrame, grid: dict, name: str) -> list[Section]:
    factors = [c for c in (grid.get("factors") or {}) if c in table.columns]
    ok = table[table["status"] == "ok"] if "status" in table else table
    text = f"{len(table)} points ({len(ok)} ran) over {', '.join(factors) or 'the listed points'}."
    figs = []
    num = [f for f in factors if pd.api.types.is_numeric_dtype(table[f])]
    if num and len(ok):
        x = num[0]
        hue = next((f for f in factors if f != x), None)
        figs.append(Figure(F.png_bytes(_sweep_plot(ok, x, hue, name)), f"decode speed against {x}" + (f", one line per {hue}" if hue else "")))
    shown = table.head(MAX_ROWS)
    note = f"the first {MAX_ROWS} of {len(table)} rows; the full table is the sweep's --out file" if len(table) > MAX_ROWS else ""
    return [
        Section(f"Sweep {name}", text, figures=figs, table=shown, table_note=note),
        Section("Configuration", "The grid as read.", details=[("grid", _yaml(grid))]),
    ]


def _sweep_plot(ok: pd.DataFrame, x: str, hue: str | None, name: str):
    fig, ax = F.pyplot().subplots(figsize=(F.WIDTH_IN, 4.0))
    groups = ok.groupby(hue, sort=True) if hue else [(None, ok)]
    for key, g in groups:
        # several rows per (x, hue) when other factors vary: their mean, with the range shaded
        agg = g.groupby(x)["decode_tok_s"].agg(["mean", "min", "max"]).reset_index().sort_values(x)
        (line,) = ax.plot(agg[x], agg["mean"], "o-", ms=4, label=f"{hue}={key}" if hue else "decode")
        if (agg["max"] > agg["min"]).any():
            ax.fill_between(agg[x], agg["min"], agg["max"], color=line.get_color(), alpha=0.15)
    ax.set_xlabel(x)
    ax.set_ylabel("decode speed (tokens/s)")
    ax.set_title(f"{name}: decode speed against {x}")
    ax.grid(True, alpha=0.3)
    if hue:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
