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
    varying = [f for f in factors if table[f].nunique(dropna=False) > 1]
    if varying and len(ok):
        fig, caption = _sweep_plot(ok, varying, name)
        figs.append(Figure(F.png_bytes(fig), caption))
    shown = table.head(MAX_ROWS)
    note = f"the first {MAX_ROWS} of {len(table)} rows; the full table is the sweep's --out file" if len(table) > MAX_ROWS else ""
    return [
        Section(f"Sweep {name}", text, figures=figs, table=shown, table_note=note),
        Section("Configuration", "The grid as read.", details=[("grid", _yaml(grid))]),
    ]


MAX_PANELS = 12


def _sweep_plot(ok: pd.DataFrame, varying: list[str], name: str):
    """Decode speed against the sweep's factors, averaging over none of them: a numeric factor on
    the x axis (lines), else the first categorical one (bars); the next factor as the colour; every
    further one as a panel of its own (one per combination, up to MAX_PANELS)."""
    numeric = [f for f in varying if pd.api.types.is_numeric_dtype(ok[f])]
    x = numeric[0] if numeric else varying[0]
    rest = [f for f in varying if f != x]
    hue, facets = (rest[0] if rest else None), rest[1:]
    panels = list(ok.groupby(facets, sort=True)) if facets else [(None, ok)]
    panels = panels[:MAX_PANELS]
    cols = min(3, len(panels))
    rows_n = -(-len(panels) // cols)
    fig, axes = F.pyplot().subplots(rows_n, cols, figsize=(F.WIDTH_IN if cols == 1 else 4.2 * cols, 3.6 * rows_n), squeeze=False, sharey=True)
    hues = sorted(ok[hue].astype(str).unique()) if hue else [None]
    colour = {h: f"C{i % 10}" for i, h in enumerate(hues)}
    for ax, (key, g) in zip(axes.flat, panels):
        if numeric:
            for h in hues:
                sub = (g if h is None else g[g[hue].astype(str) == h]).sort_values(x)
                if len(sub):
                    ax.plot(sub[x], sub["decode_tok_s"], "o-", ms=4, color=colour[h], label=f"{hue}={h}" if hue else "decode")
        else:
            cats = sorted(ok[x].astype(str).unique())
            width = 0.8 / len(hues)
            for i, h in enumerate(hues):
                sub = g if h is None else g[g[hue].astype(str) == h]
                vals = [float(sub[sub[x].astype(str) == c]["decode_tok_s"].mean()) if (sub[x].astype(str) == c).any() else 0.0 for c in cats]
                ax.bar([j + (i - (len(hues) - 1) / 2) * width for j in range(len(cats))], vals, width, color=colour[h], label=f"{hue}={h}" if hue else None)
            ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right")
        if facets:
            label = key if isinstance(key, tuple) else (key,)
            ax.set_title(", ".join(f"{f}={v}" for f, v in zip(facets, label)), fontsize=9)
        ax.set_xlabel(x)
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("decode speed (tokens/s)")
    if hue:
        axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{name}: decode speed against {x}")
    fig.tight_layout()
    caption = f"decode speed against {x}" + (f", one {'line' if numeric else 'bar'} per {hue}" if hue else "") + \
        (f", one panel per {', '.join(facets)}" if facets else "") + ("" if len(panels) < MAX_PANELS else f" (the first {MAX_PANELS} panels)")
    return fig, caption
