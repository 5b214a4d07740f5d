"""Reproduce the paper's measurements: every published data point is a scenario file.

``experiments/paper/<group>/<id>.yaml`` holds one data point: what to simulate (``run``, or a
microbenchmark ``bench``), which metric, the paper's value and its source. :func:`validate` runs
them, compares, and reports signed errors; runs with the same resolved configuration are shared
between scenarios (T5, T8 step 5 and T9 are one simulation).

Sets: ``calibration`` (PowerInfer-2's end-to-end points: decode, memory sweep and curve, ablation,
critical-path split, cache hit/miss, prefill, in-memory speed, mean TBT), ``unfitted`` (points
predicted from mechanisms only: the SiLU model T19, the Ace 2's Mixtral condition T23),
``baselines`` (the competing engines: the motivation study, their memory
sweep, the 50%-offload grid and in-memory speed), ``micro`` (hardware microbenchmarks) and ``all``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pandas as pd

from .. import resources, schema, yamlio
from ..config import RunConfig
from ..engine import tiers
from ..errors import ConfigurationRefused, InputError
from ..schema import spec_field

SETS = {
    # every PowerInfer-2 end-to-end point the constants are fitted to (pi2sim calibrate), including
    # the second set released in docs/sources.md §C: the memory curve (T14), in-memory speed (T18),
    # mean TBT (T20)
    "calibration": ("decode-50", "memory", "memory-curve", "ablation", "split", "cache", "prefill", "in-memory", "latency"),
    # points nothing is fitted to: predicted from mechanisms only (the SiLU model, T19; the Ace 2's
    # Mixtral condition, T23)
    "unfitted": ("silu", "feasibility"),
    # energy per token and peak power (T22, docs/energy.md): two fitted, two predicted
    "energy": ("energy",),
    "baselines": ("baselines", "baselines-memory", "baselines-50", "baselines-in-memory"),
    "micro": ("micro-ufs", "micro-dram", "micro-prefill"),
    # other engines on today's phones, measured by others (docs/sources.md §D, and the
    # anchors of docs/sources.md §D): experiments/external/<source>/
    "external": ("external-executorch", "external-genie", "external-powerserve", "external-mlc", "external-llamacpp", "external-smallthinker"),
    # the same sources' memory columns (RSS), reported apart: the speed guard does not cover them
    "external-memory": ("external-rss",),
    # today's llama.cpp (the 2026 build) on phones other than the reference, from their spec sheets
    # (pi2sim device new): the Galaxy S23's PocketPal measurements, to which the 2026 build's kernel
    # constants are fitted (experiments/external/pocketpal-s23/)
    "phones": ("external-s23",),
}
EXTERNAL_SETS = ("external", "external-memory", "phones")  # their scenarios live in experiments/external
FAST_TOKENS = 256  # decode tokens simulated by --fast
METRICS = ("decode_tok_s", "ttft_ms", "tbt_mean_ms", "peak_memory_gb", "prefill_tok_s", "compute_share", "io_share", "hit_rate", "miss_rate", "fixed_memory_gb", "bandwidth_mbs", "bandwidth_gbs",
           "energy_j_per_token", "power_peak_w")


@dataclass(frozen=True, kw_only=True)
class Scenario:
    id: str = spec_field(help="target id (docs/sources.md §C)")
    title: str = spec_field(help="what the point is")
    source: str = spec_field(help="where the paper's value comes from")
    paper_version: Literal["v1", "v3", "ext"] = spec_field(help="paper version of the value (ext: a measurement by others, docs/sources.md §D)")
    figure: str = spec_field(help="group for tables and plots")
    kind: Literal["run", "ufs", "dram"] = spec_field(default="run", help="simulation run or microbenchmark")
    run: dict[str, Any] | None = spec_field(default=None, help="run configuration (RunConfig keys + options)")
    bench: dict[str, Any] | None = spec_field(default=None, help="microbenchmark parameters")
    metric: Literal[METRICS] = spec_field(help="what to compare")  # type: ignore[valid-type]
    paper: float = spec_field(gt=0.0, help="the paper's value")
    note: str = spec_field(default="", help="interpretation notes")
    fast: bool = spec_field(
        default=True, help="validate --fast may shorten this run (false where 256 tokens move the value by more than 1%)"
    )
    path: str = spec_field(default="")

    def validate(self, source) -> None:
        if self.kind == "run" and not self.run:
            raise InputError(source, "run", "a run configuration for kind: run")
        if self.kind != "run" and not self.bench:
            raise InputError(source, "bench", f"microbenchmark parameters for kind: {self.kind}")


def scenario_dir() -> Path:
    return resources.data_dir("experiments") / "paper"


def external_dir() -> Path:
    return resources.data_dir("experiments") / "external"


def load_scenarios(which: str = "all", root: Path | None = None, only: str | None = None) -> list[Scenario]:
    """Scenarios of a set; ``only`` keeps ids matching a comma-separated list of globs (``T8*,T9``).
    Without ``root``: the paper's tree, and for the external sets (and ``all``) the external one."""
    import fnmatch

    if root is not None:
        roots = [root]
    elif which in EXTERNAL_SETS:
        roots = [external_dir()]
    elif which == "all":
        roots = [scenario_dir(), external_dir()]
    else:
        roots = [scenario_dir()]
    out = []
    for r in roots:
        for p in sorted(r.rglob("*.yaml")):
            data = yamlio.load(p)
            if not isinstance(data, dict):
                raise InputError(p, None, "a scenario mapping")
            sc = replace(schema.build(Scenario, data, p), path=str(p.relative_to(r)))
            out.append(sc)
    root = roots[0]
    if not out:
        raise InputError(root, None, "cannot find a scenario: no *.yaml file under this directory (experiments/paper/README.md shows the format)")
    if which != "all":
        if which not in SETS:
            raise InputError(None, "--set", f"{', '.join(SETS)} or all", which)
        out = [s for s in out if s.figure in SETS[which]]
        if not out:
            raise InputError(root, None, f"scenarios of set {which!r} (figures {', '.join(SETS[which])}); none here: use --set all for your own scenarios")
    ids = [s.id for s in out]
    if len(set(ids)) != len(ids):
        raise InputError(root, "id", "unique scenario ids", ids)
    if only:
        pats = [p.strip() for p in only.split(",") if p.strip()]
        out = [s for s in out if any(fnmatch.fnmatchcase(s.id, p) for p in pats)]
        if not out:
            raise InputError(None, "--only", f"globs matching scenario ids of set {which!r} (e.g. T8*,T13.ufs*)", only)
    return out


def run_config(sc: Scenario, fast: bool) -> RunConfig:
    from ..config import apply_sets

    r = dict(sc.run or {})
    options = r.pop("options", {}) or {}
    if fast and sc.fast and r.get("decode_tokens", 0) > FAST_TOKENS and r["decode_tokens"] % FAST_TOKENS == 0:
        # fewer simulated tokens, each standing for decode_tokens/256 of the run's KV context
        r["context_stride"] = r["decode_tokens"] // FAST_TOKENS
        r["decode_tokens"] = FAST_TOKENS
    cfg = schema.build(RunConfig, {k: v for k, v in r.items()}, sc.path)
    return apply_sets(cfg, [f"{k}={v}" for k, v in options.items()], source=f"{sc.path}: run.options")


@dataclass
class Outcome:
    scenario: Scenario
    simulated: float  # NaN when the simulated engine refused the configuration
    detail: dict = field(default_factory=dict)
    refused: str | None = None  # the engine's one-line refusal (the paper's configuration did not fit)

    @property
    def error(self) -> float:
        """Signed relative error; infinite for a refused point (a published configuration the model
        cannot run is as wrong as a prediction can be)."""
        if self.refused is not None:
            return math.inf
        return self.simulated / self.scenario.paper - 1.0


def _metric(summary: dict, memory, metric: str) -> float:
    if metric == "decode_tok_s":
        return summary["decode_tok_s"]
    if metric == "ttft_ms":
        return summary["ttft_ms"]
    if metric == "tbt_mean_ms":
        return summary["tbt_ms"]["mean"]
    if metric == "peak_memory_gb":
        return summary["peak_memory_gb"]
    if metric == "prefill_tok_s":
        return summary["prefill_tok_s"]
    if metric == "compute_share":
        return summary["critical_path"]["compute"]
    if metric == "io_share":
        return summary["critical_path"]["io_stall"]
    if metric == "hit_rate":
        return summary["neuron_cache_hit_rate"]
    if metric == "miss_rate":
        return 1.0 - summary["neuron_cache_hit_rate"]
    if metric == "fixed_memory_gb":
        return memory.fixed / 1e9
    if metric in ("energy_j_per_token", "power_peak_w"):
        if "energy_j_per_token" not in summary:
            raise InputError(None, "run.device", f"a device with a power: section for metric {metric} (docs/energy.md)", summary["config"]["run"]["device"])
        return summary["energy_j_per_token"] if metric == "energy_j_per_token" else summary["power_w"]["peak"]
    raise KeyError(metric)


def ufs_bench(sc: Scenario, fidelity: str) -> float:
    """Stream reads through the engine and measure bandwidth (MB/s)."""
    from .. import units
    from ..engine.plan import DecodePlan, Flash
    from ..simulation import execute
    from ..specs.device import load_device

    b = sc.bench
    dev = load_device(b["device"])
    size = units.parse(b["size"], "bytes")
    span = units.parse(b["span"], "bytes")
    n = 65536 if size <= 65536 else 4096
    cores = [c for c in dev.cores() if c.core_class == b["core_class"]]
    if not cores:
        raise InputError(sc.path, "bench.core_class", f"a core class of {dev.name}", b["core_class"])
    flash = Flash("read", np.array([float(n)]), size, span, b["core_class"], (cores[0].id,), sequential=b["pattern"] == "sequential")
    plan = DecodePlan(1, 1, [], [flash])
    t = execute(dev, plan, fidelity)
    return n * size / float(t.token_s[0]) / 1e6


def dram_bench(sc: Scenario, fidelity: str) -> float:
    """A 7B matmul streamed by the CPU (all cores), the NPU, or both at once (GB/s)."""
    from ..engine.compute import CpuPool
    from ..engine.plan import Compute, DecodePlan
    from ..policies.memory import ModelBytes
    from ..simulation import execute
    from ..specs.device import load_device
    from ..specs.model import load_model
    from ..specs.quant import INT4

    b = sc.bench
    dev = load_device(b["device"])
    weights = ModelBytes(load_model(b["model"]), INT4).total()
    pool = CpuPool(tuple(dev.cores()), "dynamic", dev.cpu.sparse_efficiency, 0.0)
    agents = list(b["agents"])
    cpu = Compute("cpu", "cpu", np.array([weights]), "matvec", pool, barrier=False) if "cpu" in agents else None
    npu = Compute("npu", "npu", np.array([weights]), "matvec") if "npu" in agents else None
    if cpu and npu:
        # split the matmul so both finish together (the way a balanced CPU+NPU matmul runs)
        from ..engine.components import Components

        comp = Components(dev)
        rc, rn = comp.dram.pair_rates("cpu", comp.demand(cpu), "npu", comp.demand(npu))
        share = float(rc / (rc + rn))
        cpu.work = np.array([weights * share])
        cpu.parallel = replace(npu, work=np.array([weights * (1 - share)]))
        stage = cpu
    else:
        stage = cpu or npu
    t = execute(dev, DecodePlan(1, 1, [], [stage]), fidelity)
    return weights / float(t.token_s[0]) / 1e9


def validate(
    which: str = "calibration", fast: bool = False, fidelity: str | None = None, progress: bool = False, root: Path | None = None, only: str | None = None,
    prepare: Callable[[RunConfig], RunConfig] | None = None,
) -> list[Outcome]:
    """Run the scenarios of a set (see :func:`run_scenarios`)."""
    return run_scenarios(load_scenarios(which, root, only), fast, fidelity, progress, prepare)


def run_scenarios(
    scenarios: list[Scenario], fast: bool = False, fidelity: str | None = None, progress: bool = False,
    prepare: Callable[[RunConfig], RunConfig] | None = None,
) -> list[Outcome]:
    """Simulate every scenario once per distinct resolved configuration. ``prepare`` changes each
    run's configuration before it runs (calibrated constants: :func:`pi2sim.workflows.calibrate.apply_overlay`)."""
    from ..config import config_hash
    from ..schema import to_dict
    from ..simulation import run

    cache: dict[str, Any] = {}
    out = []
    for sc in scenarios:
        if sc.kind == "ufs":
            out.append(Outcome(sc, ufs_bench(sc, fidelity or tiers.DEFAULT)))
            continue
        if sc.kind == "dram":
            out.append(Outcome(sc, dram_bench(sc, fidelity or tiers.DEFAULT)))
            continue
        cfg = run_config(sc, fast)
        if fidelity:
            cfg = replace(cfg, fidelity=fidelity)
        if prepare is not None:
            cfg = prepare(cfg)
        key = config_hash(to_dict(cfg))
        if key not in cache:
            if progress:
                import sys

                print(f"[validate] {sc.id}: {cfg.policy} on {cfg.model} ({cfg.fidelity} tier)", file=sys.stderr, flush=True)
            try:
                cache[key] = run(cfg)
            except ConfigurationRefused as e:  # reported as a failed point, not an abort
                cache[key] = e
        r = cache[key]
        if isinstance(r, ConfigurationRefused):
            out.append(Outcome(sc, math.nan, refused=str(r)))
            continue
        out.append(Outcome(sc, float(_metric(r.summary, r.memory, sc.metric)), {"config_hash": r.resolved["config_hash"]}))
    return out


def table(outcomes: list[Outcome]) -> pd.DataFrame:
    rows = []
    for o in outcomes:
        s = o.scenario
        rows.append(
            {
                "id": s.id,
                "figure": s.figure,
                "title": s.title,
                "metric": s.metric,
                "simulated": o.simulated,
                "paper": s.paper,
                "error_pct": 100 * o.error,
                "refused": o.refused or "",
                "source": s.source,
                "version": s.paper_version,
            }
        )
    return pd.DataFrame(rows)


def summary_stats(df: pd.DataFrame) -> dict[str, dict[str, float]]:
    out = {}
    for name, figs in SETS.items():
        sub = df[df["figure"].isin(figs)]
        if len(sub):
            errs = sub["error_pct"].abs()
            out[name] = {"n": int(len(sub)), "median_abs_error_pct": float(statistics.median(errs)), "max_abs_error_pct": float(errs.max())}
    known = {f for figs in SETS.values() for f in figs}
    rest = df[~df["figure"].isin(known)]
    if len(rest):  # points of a user's own scenario tree
        errs = rest["error_pct"].abs()
        out["other"] = {"n": int(len(rest)), "median_abs_error_pct": float(statistics.median(errs)), "max_abs_error_pct": float(errs.max())}
    return out


def render(df: pd.DataFrame) -> str:
    lines = [f"{'id':18s} {'metric':15s} {'simulated':>11s} {'paper':>9s} {'error':>8s}  title"]
    for _, r in df.iterrows():
        if r.get("refused"):
            lines.append(f"{r['id']:18s} {r['metric']:15s} {'REFUSED':>11s} {r['paper']:9.4g} {'':>8s}  {r['title']}: {r['refused']}")
            continue
        lines.append(f"{r['id']:18s} {r['metric']:15s} {r['simulated']:11.4g} {r['paper']:9.4g} {r['error_pct']:+7.1f}%  {r['title']}")
    lines.append("")
    for name, st in summary_stats(df).items():
        lines.append(f"{name:12s} n={st['n']:2d}  median |error| {st['median_abs_error_pct']:5.1f}%   max |error| {st['max_abs_error_pct']:5.1f}%")
    return "\n".join(lines)


def fitted_constants() -> list[dict[str, str]]:
    """Every constant marked ``fitted to`` in devices, models, profiles and policy option defaults."""
    from .. import policies
    from ..schema import describe_fields
    from ..specs.provenance import fitted

    rows = []
    files = sorted(
        list(resources.data_dir("devices").glob("*.yaml"))
        + list(resources.data_dir("models").glob("*.yaml"))
        + list((resources.data_dir("traces") / "profiles").glob("*.yaml"))
    )
    for f in files:
        for item in fitted(f):
            rows.append({"where": f"{f.parent.name}/{f.name}", "key": item.key, "value": item.value, "note": item.comment})
    for name in policies.names():
        for key, kind, default, help_ in describe_fields(policies.get(name).Options):
            if "fitted to" in help_:
                rows.append({"where": f"policy {name}", "key": key, "value": default, "note": help_})
    return rows


def plot(df: pd.DataFrame, out_dir: Path, sweep: pd.DataFrame | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..atomic import atomic_open

    paths = []
    for fig_name, sub in df.groupby("figure", sort=False):
        fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(sub) + 2), 3.6))
        x = np.arange(len(sub))
        ax.bar(x - 0.2, sub["paper"], 0.4, label="paper", color="#999999")
        ax.bar(x + 0.2, sub["simulated"], 0.4, label="pi2sim", color="#4c72b0")
        for xi, (_, r) in zip(x, sub.iterrows()):
            ax.text(xi + 0.2, r["simulated"], f"{r['error_pct']:+.0f}%", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x)
        ax.set_xticklabels(sub["id"], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(", ".join(sorted(set(sub["metric"]))))
        ax.set_title(f"{fig_name}: simulated vs paper")
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = out_dir / f"validate-{fig_name}.png"
        with atomic_open(p) as fh:
            fig.savefig(fh, format="png", dpi=110)
        plt.close(fig)
        paths.append(p)
    if sweep is not None and len(sweep):
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
        ax.plot(sweep["memory_gb"], sweep["decode_tok_s"], "o-", label="pi2sim (PowerInfer-2)")
        mem = {"T6": 7.0, "T7": 19.0}
        mem.update({i: float(i.split(".")[1]) for i in df["id"] if i.startswith("T14.")})
        pts = df[df["id"].isin(list(mem))]
        ax.scatter([mem[i] for i in pts["id"]], pts["paper"], marker="s", color="k", zorder=3, label="paper (T6, T14, T7)")
        ax.set_xlabel("memory available to the app (GB)")
        ax.set_ylabel("decode tok/s")
        ax.set_title("TurboSparse-Mixtral-47B on the OnePlus 12")
        ax.legend(fontsize=8)
        bx.plot(100 * sweep["cached_share"], 100 * sweep["hit_rate"], "o-", color="#dd8452")
        bx.set_xlabel("neuron cache, % of the FFN's neurons")
        bx.set_ylabel("hit rate, % of active neurons")
        bx.set_title("hit rate vs cached share (same runs)")
        bx.set_ylim(0, 100)
        fig.tight_layout()
        p = out_dir / "validate-mixtral-memory.png"
        with atomic_open(p) as fh:
            fig.savefig(fh, format="png", dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def cached_share(result) -> float:
    """Share of the FFN's neurons a PowerInfer-2 run's neuron cache holds (hot region + cold capacity)."""
    return (result.access.hot_neurons + result.access.cold_capacity) / result.policy.sizes.ffn_neurons_total()


def mixtral_memory_sweep(fast: bool, fidelity: str | None, points=(7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19)) -> pd.DataFrame:
    from ..simulation import simulate

    rows = []
    for gb in points:
        tokens = dict(decode_tokens=FAST_TOKENS, context_stride=4) if fast else dict(decode_tokens=1024)
        r = simulate(model="turbosparse-mixtral-47b", memory_gb=gb, preset="v1", fidelity=fidelity or "layer", **tokens)
        rows.append({"memory_gb": gb, "decode_tok_s": r.summary["decode_tok_s"], "hit_rate": r.summary["neuron_cache_hit_rate"],
                     "cached_share": cached_share(r)})
    return pd.DataFrame(rows)
