"""The offline execution planner: the best PowerInfer-2 configuration for a phone, model and budget.

PowerInfer-2 ships a planner that picks, per phone and memory budget, the cache split, the threads
and cores, the cluster size and the CPU/NPU split. Here the simulator is the cost model and Optuna's
TPE sampler (seeded, so a plan is reproducible) searches the space. The configuration the policy
would use by default is always trial 0, so the plan is never slower than the default.

Objectives (``objective``): ``speed``, the fastest decode; ``energy``, the fewest joules per
generated token (the device's power model, docs/energy.md). With ``thermal=true`` in the run,
speed is what the run sustains as it heats (a long ``decode_tokens`` lets the governor act), so the
plan's thread count is thermal-aware: threads that throttle the phone sooner cost what they lose.

Constraints: ``max_cores`` bounds the cores used (compute threads + the I/O thread);
``max_power_w`` bounds the request's mean power (``power_w.mean``), a trial above it is infeasible;
``min_tok_s`` is a requirement the plan is checked against (the result says whether it is met).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from ..config import RunConfig
from ..errors import InputError

SEARCHED = ("decode", "hot_fraction", "compute_threads", "io_core", "cluster_neurons", "npu_row_share")
OBJECTIVES = {  # name: (summary metric, optuna direction, unit)
    "speed": ("decode_tok_s", "maximize", "tok/s"),
    "energy": ("energy_j_per_token", "minimize", "J/token"),
}


@dataclass
class Plan:
    base: RunConfig
    options: dict[str, Any]
    decode_tok_s: float
    default_tok_s: float
    summary: dict
    default_summary: dict
    trials: pd.DataFrame
    min_tok_s: float | None = None
    notes: list[str] = field(default_factory=list)
    objective: str = "speed"
    max_power_w: float | None = None

    @property
    def metric(self) -> str:
        return OBJECTIVES[self.objective][0]

    @property
    def meets_requirement(self) -> bool | None:
        return None if self.min_tok_s is None else self.decode_tok_s >= self.min_tok_s

    @property
    def meets_constraints(self) -> bool:
        """Whether the plan meets every requirement given (--min-tok-s, --max-power-w): pi2sim plan
        exits 1 when no configuration tried does."""
        if self.min_tok_s is not None and not self.meets_requirement:
            return False
        if self.max_power_w is not None and not self.summary["power_w"]["mean"] <= self.max_power_w:
            return False
        return True

    def to_yaml_dict(self) -> dict:
        b = self.base
        run = {"device": b.device, "model": b.model, "policy": b.policy}
        if b.memory_gb is not None:
            run["memory_gb"] = b.memory_gb
        if b.ffn_offload is not None:
            run["ffn_offload"] = b.ffn_offload
        predicted = {
            "objective": self.objective,
            "decode_tok_s": round(self.decode_tok_s, 4),
            "default_decode_tok_s": round(self.default_tok_s, 4),
            "decode_tokens": b.decode_tokens,
            "fidelity": b.fidelity,
            "thermal": b.thermal,
        }
        if "energy_j_per_token" in self.summary:
            predicted["energy_j_per_token"] = self.summary["energy_j_per_token"]
            predicted["default_energy_j_per_token"] = self.default_summary["energy_j_per_token"]
            predicted["power_w_mean"] = self.summary["power_w"]["mean"]
        if self.max_power_w is not None:
            predicted["max_power_w"] = self.max_power_w
        return {"plan": {k: self.options[k] for k in sorted(self.options)}, "run": run, "predicted": predicted}

    def explain(self) -> str:
        """Why this plan: what changed from the default and what it did to the critical path."""
        d, s = self.default_summary, self.summary
        lines = []
        changed = [k for k in SEARCHED if k in self.options and self.options[k] != self.trials.iloc[0].get(k)]
        gain = 100 * (self.decode_tok_s / self.default_tok_s - 1)
        lines.append(f"plan {self.decode_tok_s:.2f} tok/s vs default {self.default_tok_s:.2f} tok/s ({gain:+.1f}%)")
        if "energy_j_per_token" in s:
            e, de = s["energy_j_per_token"], d["energy_j_per_token"]
            lines.append(f"  energy {e:.3f} J/token vs default {de:.3f} ({100 * (e / de - 1):+.1f}%), mean power {d['power_w']['mean']:.2f} -> "
                         f"{s['power_w']['mean']:.2f} W")
        if s.get("thermal"):
            th, dth = s["thermal"], d["thermal"]
            first = lambda x: f"{x:.0f} s" if x is not None else "never"  # noqa: E731
            lines.append(f"  thermal: first throttle {first(dth['first_throttle_s'])} -> {first(th['first_throttle_s'])}; last tenth of the "
                         f"decode {dth['decode_tok_s_last_tenth']:.2f} -> {th['decode_tok_s_last_tenth']:.2f} tok/s")
        if not changed:
            lines.append("the default configuration is already the best found")
        for k in changed:
            lines.append(f"  {k}: {self.trials.iloc[0].get(k)} -> {self.options[k]}")
        cd, cs = d["critical_path_ms_per_token"], s["critical_path_ms_per_token"]
        parts = ", ".join(f"{k} {cd[k]:.1f} -> {cs[k]:.1f} ms" for k in cs)
        lines.append(f"  critical path per token: {parts}")
        lines.append(f"  neuron-cache hit rate {d['neuron_cache_hit_rate']:.1%} -> {s['neuron_cache_hit_rate']:.1%}; "
                     f"flash reads per token {d['flash_reads_per_token']:.0f} -> {s['flash_reads_per_token']:.0f}")
        for k, v in s["utilization"].items():
            if v > 0.9 and k != "ufs":
                lines.append(f"  {k} is {v:.0%} busy: compute-bound there")
                break
        if s["utilization"].get("ufs", 0) > 0.8:
            lines.append(f"  UFS is {s['utilization']['ufs']:.0%} busy: flash-bound")
        score = self.summary[self.metric]
        col = self.trials[self.metric]
        best = self.trials[col >= score * (1 - 1e-3)] if OBJECTIVES[self.objective][1] == "maximize" else self.trials[col <= score * (1 + 1e-3)]
        flat = [k for k in SEARCHED if k in best.columns and best[k].dropna().nunique() > 1]
        if flat:
            lines.append(f"  indifferent here (trials as good differ in them): {', '.join(flat)}")
        if "compute_threads" in changed and self.options["compute_threads"] > self.trials.iloc[0]["compute_threads"] and not self.base.thermal:
            lines.append("  note: more compute threads pay off in a short run on a cool phone; for a long generation plan with "
                         "--set thermal=true and a long --decode-tokens (the governor then charges what the heat costs)")
        lines += [f"  {n}" for n in self.notes]
        return "\n".join(lines)


def _space(trial, device, max_cores: int | None) -> dict[str, Any]:
    # one candidate I/O core per cluster: cores of a cluster are interchangeable
    io_choices = [f"{c.name}0" for c in device.cpu.clusters]
    opts: dict[str, Any] = {}
    opts["decode"] = trial.suggest_categorical("decode", ["cpu", "hybrid"])
    top = 7 if max_cores is None else max(1, min(7, max_cores - 1))
    opts["compute_threads"] = trial.suggest_int("compute_threads", 1, top)
    opts["io_core"] = trial.suggest_categorical("io_core", io_choices)
    opts["cluster_neurons"] = trial.suggest_categorical("cluster_neurons", [8, 16, 32, 64, 128])
    opts["hot_fraction"] = round(trial.suggest_float("hot_fraction", 0.1, 0.9, step=0.1), 3)
    if opts["decode"] == "hybrid":
        opts["npu_row_share"] = round(trial.suggest_float("npu_row_share", 0.1, 0.8, step=0.1), 3)
        opts["attention"] = "split"
    else:
        opts["attention"] = "cpu"
    return opts


def plan(base: RunConfig, trials: int = 40, seed: int = 0, max_cores: int | None = None, min_tok_s: float | None = None,
         progress: bool = False, objective: str = "speed", max_power_w: float | None = None) -> Plan:
    """Search PowerInfer-2's configuration space for the best ``objective`` under the constraints."""
    try:
        import optuna
    except ImportError:
        raise InputError(None, "pi2sim plan", "optuna installed (pip install 'pi2sim[plan]')") from None
    from ..simulation import build, run
    from ..specs.device import load_device

    if base.policy != "powerinfer2":
        raise InputError(None, "--policy", "powerinfer2 (the planner searches PowerInfer-2's configuration space)", base.policy)
    if trials < 1:
        raise InputError(None, "--trials", "at least 1 trial", trials)
    if objective not in OBJECTIVES:
        raise InputError(None, "--objective", f"one of {', '.join(OBJECTIVES)}", objective)
    device = load_device(base.device, base.device_overrides or None)
    if (objective == "energy" or max_power_w is not None) and device.power is None:
        flag = "--objective energy" if objective == "energy" else "--max-power-w"
        raise InputError(device.path, "power", f"a power: section for {flag} (docs/energy.md)")
    metric, direction, _ = OBJECTIVES[objective]
    worst = 0.0 if direction == "maximize" else float("inf")
    _, pol, _ = build(base)
    default = {k: getattr(pol.opt, k) for k in (*SEARCHED, "attention")}
    if max_cores is not None and default["compute_threads"] + 1 > max_cores:
        default["compute_threads"] = max(1, max_cores - 1)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial({k: v for k, v in default.items() if k != "attention" and not (k == "npu_row_share" and default["decode"] != "hybrid")})
    results: dict[int, tuple[dict, dict]] = {}

    def score(trial):
        opts = _space(trial, device, max_cores)
        cfg = replace(base, options={**base.options, **opts})
        try:
            r = run(cfg)
        except InputError as exc:
            trial.set_user_attr("infeasible", str(exc))
            return worst
        results[trial.number] = (opts, r.summary)
        if max_power_w is not None and r.summary["power_w"]["mean"] > max_power_w:
            trial.set_user_attr("infeasible", f"mean power {r.summary['power_w']['mean']:.2f} W > {max_power_w:g} W")
            return worst
        if min_tok_s is not None and r.summary["decode_tok_s"] < min_tok_s:
            trial.set_user_attr("infeasible", f"{r.summary['decode_tok_s']:.2f} tok/s < {min_tok_s:g}")
            return worst
        return r.summary[metric]

    study.optimize(score, n_trials=trials, show_progress_bar=progress)
    rows = []
    for t in study.trials:
        summ_t = results.get(t.number, (None, None))[1]
        row = {"trial": t.number, "decode_tok_s": summ_t["decode_tok_s"] if summ_t else None}
        if summ_t is not None and "energy_j_per_token" in summ_t:
            row["energy_j_per_token"] = summ_t["energy_j_per_token"]
            row["power_w_mean"] = summ_t["power_w"]["mean"]
        row["feasible"] = summ_t is not None and "infeasible" not in t.user_attrs
        row.update(results.get(t.number, ({}, None))[0] or t.params)
        rows.append(row)
    table = pd.DataFrame(rows)
    _, d_summ = results.get(0, (None, None))
    if d_summ is None:
        raise InputError(None, "pi2sim plan", "a default configuration that runs under these constraints")
    feasible = table[table["feasible"]]
    notes = []
    ran = table[table["decode_tok_s"].notna()]
    if not feasible.empty:
        best = study.best_trial.number
    elif max_power_w is not None and not (ran["power_w_mean"] <= max_power_w).any():  # the closest to the constraint, said so
        best = int(ran.loc[ran["power_w_mean"].idxmin(), "trial"])
    else:
        best = int(ran.loc[ran["decode_tok_s"].idxmax(), "trial"])
    if max_power_w is not None:
        met = (ran["power_w_mean"] <= max_power_w).any()
        notes.append(f"constraint: mean power at most {max_power_w:g} W" + ("" if met else ": NOT met by any configuration tried (the plan is the lowest-power one)"))
    opts, summ = results[best]
    if max_cores is not None:
        notes.append(f"constraint: at most {max_cores} cores (compute threads + the I/O thread)")
    p = Plan(base, {**opts}, summ["decode_tok_s"], d_summ["decode_tok_s"], summ, d_summ, table, min_tok_s, notes, objective, max_power_w)
    if min_tok_s is not None:
        p.notes.append(f"requirement {min_tok_s:g} tok/s: {'met' if p.meets_requirement else 'NOT met by any configuration tried'}")
    return p


def runner_ups(p: Plan, n: int = 5) -> pd.DataFrame:
    """The best feasible trials by the plan's objective, one per distinct configuration."""
    t = p.trials[p.trials["feasible"]].dropna(subset=[p.metric])
    t = t.sort_values([p.metric, "trial"], ascending=[OBJECTIVES[p.objective][1] == "minimize", True])
    t = t.drop_duplicates(subset=[c for c in t.columns if c not in ("trial", "decode_tok_s", "energy_j_per_token", "power_w_mean")])
    return t.drop(columns="feasible").head(n)
