"""Figures that explain a result at a glance: pure plotting of tables the workflows gathered.

Every function takes plain data (pandas frames or lists of dicts) and returns a matplotlib
``Figure``; nothing here simulates. Conventions (issue 19): a title that says what and where,
units on every axis, the paper's points marked where they exist, sized to read at a README's
width (~900 px at 110 dpi).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

WIDTH_IN = 8.2  # at 110 dpi: ~900 px, the README's column
DPI = 110
PAPER_STYLE = dict(marker="s", s=36, color="k", zorder=4)
CATEGORY_COLOURS = {"compute": "#4c72b0", "io_stall": "#dd8452", "other": "#8c8c8c"}


def pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig, metadata: dict[str, str] | None = None) -> bytes:
    """The figure as PNG bytes; ``metadata`` goes into the PNG's text chunks (no software or date
    stamp, so the same figure gives the same bytes with the same matplotlib)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None, **(metadata or {})})
    pyplot().close(fig)
    return buf.getvalue()


def _plain_log_ticks(axis) -> None:
    """A log axis labelled 0.2, 0.5, 1, 2, 5, 10 ... instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def memory_curve(curve: pd.DataFrame, paper: pd.DataFrame, title: str):
    """Decode tok/s against the app's memory, one line per engine (``curve``: policy, memory_gb,
    decode_tok_s), with the published points (``paper``: policy, memory_gb, paper, id)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.2))
    colours = {}
    for policy, sub in curve.groupby("policy", sort=False):
        sub = sub.sort_values("memory_gb")
        (line,) = ax.plot(sub["memory_gb"], sub["decode_tok_s"], "o-", ms=4, label=f"pi2sim: {policy}")
        colours[policy] = line.get_color()
    for policy, sub in paper.groupby("policy", sort=False):
        ax.scatter(sub["memory_gb"], sub["paper"], marker="s", s=42, facecolor=colours.get(policy, "k"), edgecolor="k", zorder=4,
                   label=f"paper: {policy}")
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    ax.set_xlabel("memory available to the app (GB)")
    ax.set_ylabel("decode speed (tokens/s, log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="lower right")
    fig.tight_layout()
    return fig


def validation_scatter(points: pd.DataFrame, title: str, band: float = 0.10):
    """Simulated against published, one point per scenario (``points``: id, set, metric,
    simulated, paper), log-log, with the identity and a +-``band`` band; the worst misses named."""
    plt = pyplot()
    ok = points[np.isfinite(points["simulated"]) & (points["simulated"] > 0) & (points["paper"] > 0)]
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 5.6))
    for name, sub in ok.groupby("set", sort=True):
        ax.scatter(sub["paper"], sub["simulated"], s=22, alpha=0.85, label=f"{name} (n={len(sub)})")
    lo = float(min(ok["paper"].min(), ok["simulated"].min())) / 1.5
    hi = float(max(ok["paper"].max(), ok["simulated"].max())) * 1.5
    xs = np.geomspace(lo, hi, 50)
    ax.plot(xs, xs, color="k", lw=0.8, label="simulated = published")
    ax.fill_between(xs, xs * (1 - band), xs * (1 + band), color="k", alpha=0.08, label=f"within ±{band:.0%}")
    err = (ok["simulated"] / ok["paper"] - 1).abs()
    for i, (_, r) in enumerate(ok.loc[err.sort_values(ascending=False).index[:5]].iterrows()):  # the worst misses, named
        ax.annotate(r["id"], (r["paper"], r["simulated"]), fontsize=6.5, xytext=(6, -10 if i % 2 else 6), textcoords="offset points",
                    arrowprops=dict(arrowstyle="-", lw=0.4, color="0.4"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_ticks(ax.xaxis)
    _plain_log_ticks(ax.yaxis)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("published value (each point in its own unit: tok/s, ms, GB, MB/s, J, W, share)")
    ax.set_ylabel("pi2sim (same unit)")
    inside = float((err <= band).mean()) if len(err) else float("nan")
    ax.set_title(f"{title}\n{len(ok)} points, {inside:.0%} within ±{band:.0%}, median |error| {100 * float(err.median()):.1f}%")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7.5, loc="upper left")
    fig.tight_layout()
    return fig


def critical_path(rows: pd.DataFrame, title: str):
    """Where a token's time goes (``rows``: label, compute_ms, io_stall_ms, other_ms), one
    horizontal stacked bar per row, with the decode speed it adds up to."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 0.55 * len(rows) + 1.6))
    y = np.arange(len(rows))[::-1]
    left = np.zeros(len(rows))
    for cat, label in (("compute", "compute"), ("io_stall", "exposed I/O"), ("other", "other")):
        v = rows[f"{cat}_ms"].to_numpy(dtype=float)
        ax.barh(y, v, left=left, color=CATEGORY_COLOURS[cat], label=label)
        left += v
    for yi, total in zip(y, left):
        ax.text(total, yi, f" {total:.0f} ms = {1000 / total:.2f} tok/s", va="center", fontsize=7.5)
    ax.set_yticks(y, rows["label"], fontsize=8)
    ax.set_xlabel("critical path per decode token (ms)")
    ax.set_xlim(0, left.max() * 1.35)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def hit_rate_curve(curves: pd.DataFrame, paper: pd.DataFrame, title: str):
    """Neuron-cache hit rate against the share of FFN neurons the cache holds (``curves``: model,
    cached_share, hit_rate), with the published points (``paper``: model, cached_share, hit_rate, id)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.0))
    colours = {}
    for model, sub in curves.groupby("model", sort=False):
        sub = sub.sort_values("cached_share")
        (line,) = ax.plot(100 * sub["cached_share"], 100 * sub["hit_rate"], "o-", ms=4, label=f"pi2sim: {model}")
        colours[model] = line.get_color()
    ax.plot([0, 100], [0, 100], color="k", lw=0.6, ls=":", label="no locality (hit rate = cached share)")
    for i, (_, r) in enumerate(paper.iterrows()):
        ax.scatter(100 * r["cached_share"], 100 * r["hit_rate"], marker="s", s=42, facecolor=colours.get(r["model"], "k"), edgecolor="k", zorder=4)
        ax.annotate(f"paper {r['id']} ({r['model']}, 50% FFN offload)", (100 * r["cached_share"], 100 * r["hit_rate"]), fontsize=7,
                    xytext=(12, -18 - 14 * i), textcoords="offset points", arrowprops=dict(arrowstyle="-", lw=0.4, color="0.4"))
    ax.set_xlabel("neuron cache size (% of the FFN's neurons)")
    ax.set_ylabel("hit rate (% of active neurons)")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 101)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def bars_vs_paper(sub: pd.DataFrame, title: str):
    """One set's points as paired bars, paper and pi2sim, with the error over each (``sub``: id,
    metric, simulated, paper, error_pct)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(min(WIDTH_IN * 1.4, max(5.0, 0.55 * len(sub) + 2)), 3.6))
    x = np.arange(len(sub))
    ax.bar(x - 0.2, sub["paper"], 0.4, label="published", color="#999999")
    ax.bar(x + 0.2, sub["simulated"], 0.4, label="pi2sim", color="#4c72b0")
    for xi, (_, r) in zip(x, sub.iterrows()):
        if np.isfinite(r["error_pct"]):
            ax.text(xi + 0.2, r["simulated"], f"{r['error_pct']:+.0f}%", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, sub["id"], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(", ".join(sorted(set(sub["metric"]))))
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
