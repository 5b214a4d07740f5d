"""The common pictures, from sweep tables (``pi2sim.sweep``) or lists of run summaries.

Every function takes a DataFrame with the columns a sweep writes and returns the matplotlib
``Axes`` (or ``Figure``) so a notebook can restyle it. Rows whose status is not ``ok`` (refused or
infeasible configurations) are left out of lines and bars, and marked where that matters.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

BREAKDOWN = ("compute_share", "io_stall_share", "other_share")
COLORS = {"compute_share": "#4C72B0", "io_stall_share": "#DD8452", "other_share": "#8C8C8C"}


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"] if "status" in df.columns else df


def tok_s_vs_memory(df: pd.DataFrame, hue: str = "policy", facet: str | None = None, x: str = "memory_gb", y: str = "decode_tok_s", ax=None):
    """Decode speed against available memory, one line per ``hue`` (policy), one panel per ``facet``
    (device). Infeasible points (the model does not fit) are marked with an x at the axis."""
    plt = _plt()
    panels = sorted(df[facet].unique()) if facet else [None]
    if ax is None:
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), sharey=True, squeeze=False)
        axes = axes[0]
    else:
        axes = [ax]
    for a, panel in zip(axes, panels):
        sub = df if panel is None else df[df[facet] == panel]
        for name, g in sub.groupby(hue, sort=True):
            ok = _ok(g).sort_values(x)
            line = a.plot(ok[x], ok[y], marker="o", ms=3, label=str(name))[0]
            bad = g[g["status"] != "ok"] if "status" in g.columns else g.iloc[0:0]
            if len(bad):
                a.plot(bad[x], [0] * len(bad), "x", color=line.get_color(), ms=5)
        a.set_xlabel("memory available to the app (GB)" if x == "memory_gb" else x)
        a.set_title(str(panel) if panel is not None else "")
        a.grid(alpha=0.3)
    axes[0].set_ylabel("decode tok/s" if y == "decode_tok_s" else y)
    axes[0].legend(title=hue, fontsize=8)
    return axes if len(axes) > 1 else axes[0]


def breakdown_bars(df: pd.DataFrame, label: str | list[str] = "policy", ax=None, per_token_ms: bool = True):
    """Stacked bars of where a token's time goes (compute / exposed I/O / other), one bar per row.
    With ``per_token_ms`` the bar height is the mean time per token (1000 / tok/s)."""
    plt = _plt()
    d = _ok(df).copy()
    labels = d[label].astype(str).agg(" | ".join, axis=1) if isinstance(label, list) else d[label].astype(str)
    total = 1000.0 / d["decode_tok_s"] if per_token_ms else pd.Series(1.0, index=d.index)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(d) + 2), 3.6))
    bottom = pd.Series(0.0, index=d.index)
    for col in BREAKDOWN:
        h = d[col] * total
        ax.bar(labels, h, bottom=bottom, color=COLORS[col], label=col.replace("_share", "").replace("_", " "))
        bottom = bottom + h
    ax.set_ylabel("ms per token" if per_token_ms else "share of the critical path")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", rotation=30)
    for lbl in ax.get_xticklabels():
        lbl.set_horizontalalignment("right")
    ax.grid(axis="y", alpha=0.3)
    return ax


def device_comparison(df: pd.DataFrame, group: str = "model", device: str = "device", y: str = "decode_tok_s", ax=None):
    """Grouped bars: ``y`` per ``group`` (model), one bar per device."""
    plt = _plt()
    d = _ok(df)
    table = d.pivot_table(index=group, columns=device, values=y, aggfunc="first")
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(table) + 2), 3.6))
    table.plot.bar(ax=ax, rot=20)
    ax.set_ylabel("decode tok/s" if y == "decode_tok_s" else y)
    ax.set_xlabel("")
    ax.grid(axis="y", alpha=0.3)
    return ax


def summaries_frame(results: dict[str, Any]) -> pd.DataFrame:
    """{label: SimResult or summary dict} -> the same tidy columns a sweep writes."""
    from .summary import summary_row

    rows = []
    for label, r in results.items():
        s = getattr(r, "summary", r)
        rows.append({"label": label, **summary_row(s)})
    return pd.DataFrame(rows)
