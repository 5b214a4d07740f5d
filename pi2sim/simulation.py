"""One simulation run, end to end: specs -> access model -> timing engine -> report.

Python API (for notebooks)::

    import pi2sim
    r = pi2sim.simulate(device="oneplus12", model="turbosparse-mistral-7b", ffn_offload=0.5)
    r.summary["decode_tok_s"], r.summary["critical_path"]
    r.tokens            # pandas DataFrame, one row per decode token

Keyword arguments are :class:`~pi2sim.config.RunConfig` fields; anything else is a policy option
(``compute_threads=6``, ``preset="v3"``), and ``device_overrides`` / ``model_overrides`` change
single values of the device or model YAML.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import policies
from .access.segmented import NeuronAccess
from .config import RUN_KEYS, THERMAL_KEYS, RunConfig, config_hash
from .engine import analytic, tiers
from .engine.components import Components
from .engine.result import PrefillTiming, TimingResult
from .policies.memory import MemoryPlan, ModelBytes
from .policies.base import AccessSummary, Policy, RunContext
from .specs.device import DeviceSpec, at_cpu_clock, load_device
from .specs.model import ModelSpec, load_model
from .specs.quant import get_format
from .version import __version__

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class SimResult:
    config: RunConfig
    resolved: dict  # fully resolved configuration (what was simulated)
    summary: dict  # headline metrics + breakdowns + resolved config
    token_columns: dict  # per decode token: the ``tokens`` table's columns (name -> array)
    timing: TimingResult  # decode, on the run's tier
    prefill: PrefillTiming  # the prompt pass
    memory: MemoryPlan
    access: Any
    access_summary: AccessSummary
    policy: Policy
    device: DeviceSpec
    model: ModelSpec

    @functools.cached_property
    def tokens(self) -> pd.DataFrame:
        """Per decode token, one row each (built on first use: pandas is a 0.3 s import that a
        run writing no table does not pay)."""
        from .report.summary import tokens_frame

        return tokens_frame(self.token_columns)

    def to_json(self) -> str:
        from .report.output import summary_json

        return summary_json(self.summary)


def _progress(msg: str, enabled: bool) -> None:
    if enabled:
        print(f"[pi2sim] {msg}", file=sys.stderr, flush=True)


def build(cfg: RunConfig, cpu_clock: float = 1.0) -> tuple[RunContext, Policy, str | None]:
    """Load specs, size the model, construct the policy (no trace read yet). ``cpu_clock``: the
    CPU clusters run at this share of their nominal clock (a thermal governor's level)."""
    device = at_cpu_clock(load_device(cfg.device, cfg.device_overrides or None), cpu_clock)
    model = load_model(cfg.model, cfg.model_overrides or None)
    cls = policies.get(cfg.policy)
    if cfg.quant and cls.quant_formats is not None and cfg.quant not in cls.quant_formats:
        from .errors import ConfigurationRefused

        # the engine does not run this weight format: a configuration it refuses, not a typo
        raise ConfigurationRefused(None, "quant", f"a weight format {cfg.policy} runs ({', '.join(cls.quant_formats)})", cfg.quant)
    quant = get_format(cfg.quant or cls.default_quant)
    ctx = RunContext(
        device=device,
        model=model,
        quant=quant,
        sizes=ModelBytes(model, quant),
        components=Components(device),
        prompt_tokens=cfg.prompt_tokens,
        decode_tokens=cfg.decode_tokens,
        context_stride=cfg.context_stride,
        memory_gb=cfg.memory_gb,
        ffn_offload=cfg.ffn_offload,
        seed=cfg.seed,
    )
    given = dict(cfg.options)
    preset_in_name = policies.split_spec(cfg.policy)[1]  # policy: "llamacpp@paper" (a grid's policy factor)
    if preset_in_name is not None:
        if given.get("preset", preset_in_name) != preset_in_name:
            from .errors import InputError

            raise InputError(None, "preset", f"one preset: the policy names {preset_in_name!r}", given["preset"])
        given["preset"] = preset_in_name
    opts, preset = policies.build_options(cls, given)
    return ctx, cls(ctx, opts), preset


def run(cfg: RunConfig, progress: bool = False, recorder=None, check: bool | None = None) -> SimResult:
    """Simulate one configuration. ``recorder`` (a :class:`~pi2sim.engine.recorder.Recorder`)
    collects a timeline; it needs an event tier (``layer`` or ``cluster``). ``check`` asserts the
    invariants of :mod:`pi2sim.engine.invariants` (default: ``PI2SIM_CHECK=1`` in the environment)."""
    from .engine import invariants as checks

    check = checks.enabled(check)
    from .report.summary import summarize

    if recorder is not None and cfg.thermal:
        from .errors import InputError

        raise InputError(None, "thermal", "thermal=false for a timeline (a throttled run's tokens come from several clock levels' runs; "
                         "its per-token clocks and temperatures are in the tokens table)", True)
    if recorder is not None and not tiers.TIERS[cfg.fidelity].events:
        from .errors import InputError

        event_tiers = " or ".join(t.name for t in tiers.TIERS.values() if t.events)
        raise InputError(None, "fidelity", f"an event tier ({event_tiers}) for a timeline: the {cfg.fidelity} tier has no events", cfg.fidelity)
    ctx, pol, preset = build(cfg)
    if cfg.thermal:  # refused before any work: the thermal model heats the phone with the power model
        from .errors import InputError

        for key in ("power", "thermal"):
            if getattr(ctx.device, key) is None:
                raise InputError(ctx.device.path, key, f"a {key}: section for thermal=true (docs/energy.md)")
    mem = pol.memory()
    mem.check()
    workload = None
    trace_info: dict[str, Any] = {}
    if replays_trace(pol, ctx):
        workload = _workload(cfg, ctx, progress, pol)
        tpath = workload.trace_path
        meta = workload.trace.meta
        trace_info = {
            "file": tpath.name,
            "model": meta.model,
            "kind": meta.provenance.get("kind"),
            "activation": meta.activation_kind,
            "level": meta.levels[workload.level].name,
            "tokens_replayed": int(workload.n_tokens),
        }
    _progress(f"access model: {cfg.policy} on {ctx.model.name}, {cfg.decode_tokens} tokens", progress)
    access = pol.access(workload, mem)
    acc_sum = pol.access_summary(access)
    plan = pol.decode_plan(access, mem)
    if check:
        if isinstance(access, NeuronAccess):
            checks.check_access(access)
        checks.check_plan(plan, mem)
        pol.check(access, plan)
    _progress(f"timing ({cfg.fidelity} tier)", progress)
    sampler = _power_sampler(cfg, ctx)
    timing = execute(ctx.device, plan, cfg.fidelity, progress, recorder if recorder is not None else sampler, check)
    if sampler is not None and recorder is not None:  # the timeline has its own recorder: sample the peak in a second pass
        execute(ctx.device, plan, cfg.fidelity, False, sampler, False)
    pplan = pol.prefill_plan(mem, access)
    prefill = analytic.run_prefill(ctx.device, pplan)
    energy, heat = _energy_and_heat(cfg, ctx, plan, timing, prefill, pplan, workload, progress, check, sampler)
    if heat is not None:
        timing = heat.timing
    if recorder is not None and energy is not None:  # the window's power, phase by phase (thermal runs have no timeline)
        from .engine import power

        stop = plan.n_tokens if recorder.stop_token is None else min(recorder.stop_token, plan.n_tokens)
        recorder.power(*power.profile(ctx.device, recorder.slices, energy.token_j, timing, _flash_per_token(plan)[0], recorder.first_token, stop))
    resolved = resolve(cfg, ctx, pol, preset, trace_info)
    summary, tokens = summarize(cfg=cfg, ctx=ctx, memory=mem, access_summary=acc_sum, access=access, plan=plan, timing=timing,
                                prefill=prefill, resolved=resolved, workload=workload, energy=energy,
                                thermal=heat.trace if heat is not None else None)
    if check:
        checks.check_timing(timing, plan)
        checks.check_summary(summary, timing, plan)
    if workload is not None:
        for w in getattr(workload, "members", None) or [workload]:
            w.trace.close()
    return SimResult(cfg, resolved, summary, tokens, timing, prefill, mem, access, acc_sum, pol, ctx.device, ctx.model)


@dataclass
class _Heat:
    timing: TimingResult  # the decode as throttled: each token from the run at its cooling level
    trace: Any  # engine.thermal.ThermalTrace


def _flash_per_token(plan) -> tuple[np.ndarray, np.ndarray]:
    """Bytes and requests each decode token reads from flash (zeros for an in-memory plan)."""
    zeros = np.zeros(plan.n_tokens)
    return (plan.flash_bytes if plan.flash_bytes is not None else zeros, plan.flash_reads if plan.flash_reads is not None else zeros)


def _prefill_flash(pplan) -> tuple[float, float]:
    """Bytes and requests the prefill reads from flash (its offloaded weights)."""
    if pplan.load is None:
        return 0.0, 0.0
    reqs = float(np.sum(np.broadcast_to(np.asarray(pplan.load.requests, dtype=np.float64), (pplan.n_layers,))))
    return reqs * float(pplan.load.size), reqs


def _power_sampler(cfg: RunConfig, ctx: RunContext):
    """The coarse recorder whose slices of the first decode tokens give the peak power
    (:func:`pi2sim.engine.power.profile`), always its own so that a run gives the same peak with
    or without a timeline; None without a power model or on a tier without events."""
    from .engine import power
    from .engine.recorder import Recorder

    if ctx.device.power is None or not tiers.TIERS[cfg.fidelity].events:
        return None
    return Recorder(0, power.PEAK_SAMPLE_TOKENS, coarse=True)


def _energy_and_heat(cfg: RunConfig, ctx: RunContext, plan, timing: TimingResult, prefill: PrefillTiming, pplan, workload, progress: bool,
                     check: bool, sampler=None):
    """The run's energy (:mod:`pi2sim.engine.power`; None when the device has no power model) and,
    with ``thermal=true``, its heat (:mod:`pi2sim.engine.thermal`): the governor's levels each
    re-run the decode plan on the device at that CPU clock, and every token is taken from the run
    at the level it ran at (a token's latency depends on the clock, not on the tokens before it:
    the access model, which carries the cache state, has no clock)."""
    from .engine import power, thermal

    dev = ctx.device
    if dev.power is None:
        return None, None
    T = plan.n_tokens
    fb, fr = _flash_per_token(plan)
    pfb, pfr = _prefill_flash(pplan)
    pre_j = power.prefill_energy(dev, prefill, pfb, pfr)
    dec_j = power.decode_energy(dev, timing, fb, fr)
    sampled = {}
    if sampler is not None:  # at the nominal clock: the first tokens of a run from a cool phone
        edges, watts = power.profile(dev, sampler.slices, dec_j, timing, fb, 0, power.PEAK_SAMPLE_TOKENS)
        sampled = {"sampled_peak_w": power.windowed_peak_w(edges, watts, dev.power.peak_window_s), "peak_window_s": dev.power.peak_window_s}
    if not cfg.thermal:
        return power.Energy(dec_j, pre_j, timing.token_s, prefill.seconds, **sampled), None
    shares = dev.thermal.governor.cpu_clock_levels
    runs: dict[int, tuple[TimingResult, dict]] = {0: (timing, dec_j)}

    def at_level(k: int):
        if k not in runs:
            _progress(f"thermal: decode at {shares[k]:.0%} CPU clock", progress)
            ctx_k, pol_k, _ = build(cfg, cpu_clock=shares[k])
            mem_k = pol_k.memory()
            plan_k = pol_k.decode_plan(pol_k.access(workload, mem_k), mem_k)
            t_k = execute(ctx_k.device, plan_k, cfg.fidelity, False, None, check)
            runs[k] = (t_k, power.decode_energy(dev, t_k, fb, fr, clock_share=shares[k]))
        t_k, e_k = runs[k]
        return t_k.token_s, power.Energy(e_k, {}, t_k.token_s, 0.0).token_w

    pre_w = sum(pre_j.values()) / max(prefill.seconds, 1e-30)
    trace = thermal.run(dev.thermal, T, at_level, prefill_s=prefill.seconds, prefill_w=pre_w, initial_c=cfg.start_temp_c, ambient_c=cfg.ambient_c)
    mixed = _mix([runs[k][0] for k in sorted(runs)], sorted(runs), trace.level)
    mixed_j = {c: _pick([runs[k][1][c] for k in sorted(runs)], sorted(runs), trace.level) for c in power.COMPONENTS}
    return power.Energy(mixed_j, pre_j, mixed.token_s, prefill.seconds, **sampled), _Heat(mixed, trace)


def _pick(arrays: list, keys: list[int], level: np.ndarray) -> np.ndarray:
    """Per token, the value from the array of the level the token ran at."""
    out = np.zeros(len(level))
    for k, a in zip(keys, arrays):
        sel = level == k
        out[sel] = np.broadcast_to(np.asarray(a, dtype=np.float64), (len(level),))[sel]
    return out


def _mix(results: list[TimingResult], keys: list[int], level: np.ndarray) -> TimingResult:
    """A timing result whose token ``t`` is token ``t`` of the result at ``level[t]``."""
    def pick_dict(name: str) -> dict[str, np.ndarray]:
        names = sorted({k for r in results for k in getattr(r, name)})
        return {n: _pick([getattr(r, name).get(n, 0.0) for r in results], keys, level) for n in names}

    busy_t, dram_t = pick_dict("busy_token_s"), pick_dict("dram_token_bytes")
    return TimingResult(
        results[0].tier,
        _pick([r.token_s for r in results], keys, level),
        _pick([r.compute_s for r in results], keys, level),
        _pick([r.io_s for r in results], keys, level),
        _pick([r.other_s for r in results], keys, level),
        pick_dict("stage_s"),
        {k: float(v.sum()) for k, v in busy_t.items()},
        {k: float(v.sum()) for k, v in dram_t.items()},
        busy_t,
        dram_t,
        sum(r.events for r in results),
    )


def replays_trace(pol: Policy, ctx: RunContext) -> bool:
    """Whether a run replays a trace: its policy uses one and its model has one. A model without
    (``sparsity.trace: none``, a dense model no sparse engine runs) runs only with an engine that
    needs no activity (dense engines; for an MoE model they still need its routing)."""
    if not pol.uses_trace:
        return False
    if ctx.model.sparsity.trace != "none":
        return True
    if pol.needs_activity or ctx.model.architecture.is_moe:
        from .errors import ConfigurationRefused

        # a model this engine does not run (a comparison shows it as a refused row)
        what = "the routed experts" if ctx.model.architecture.is_moe else "which neurons fire"
        raise ConfigurationRefused(ctx.model.path, "sparsity.trace",
                         f"an activation trace: {pol.name} replays {what}, and this model has none (run it with a dense engine: dense, llamacpp)", "none")
    return False


def _workload(cfg: RunConfig, ctx: RunContext, progress: bool = False, pol: Policy | None = None):
    """The replayed tokens of a run: its trace (given, or the model's synthetic one) opened. A
    policy decoding N sequences together replays their union: the model's synthetic traces of
    seeds seed, seed + 1, ... (independent sequences sharing the model's neuron profile), or a
    recorded trace's own sequences."""
    from .access.workload import open_workload, sequence_workloads, union_workload
    from .trace.locate import model_trace_path, trace_path_for

    n = pol.sequences() if pol is not None else 1
    if n > 1:
        synthetic = not cfg.trace and ctx.model.sparsity.trace == "synthetic"
        if synthetic:
            members = [open_workload(model_trace_path(ctx.model, cfg.decode_tokens, cfg.seed + i, progress=progress), ctx.model, cfg.decode_tokens,
                                     cfg.prompt_tokens, cfg.sparsity) for i in range(n)]
        else:  # a recorded trace: its own sequences are the candidates
            tpath = trace_path_for(cfg.trace) if cfg.trace else model_trace_path(ctx.model, cfg.decode_tokens, cfg.seed, progress=progress)
            members = sequence_workloads(tpath, ctx.model, cfg.decode_tokens, cfg.prompt_tokens, cfg.sparsity, n)
        return union_workload(members, pol.sequence_schedule(cfg.decode_tokens))
    tpath = trace_path_for(cfg.trace) if cfg.trace else model_trace_path(ctx.model, cfg.decode_tokens, cfg.seed, progress=progress)
    return open_workload(tpath, ctx.model, cfg.decode_tokens, cfg.prompt_tokens, cfg.sparsity)


def prefetch_access(cfgs: list[RunConfig]) -> int:
    """Run the segmented-cache simulations of ``cfgs`` that share a replay (the points of a
    memory sweep: same trace, tokens, predictor and seed, different regions) in one pass each
    (:func:`pi2sim.access.segmented.run_many`), so that :func:`run` of each point finds its
    result in the memo. Points that cannot run, or whose policy has no cache request, are left to
    :func:`run` (which reports them); so is a replay only one point needs. Returns how many
    results it computed or found."""
    from .access import segmented
    from .errors import InputError

    reqs = []
    for cfg in cfgs:
        try:
            ctx, pol, _ = build(cfg)
            if not replays_trace(pol, ctx) or pol.sequences() > 1:  # a union of sequences: left to run()
                continue
            mem = pol.memory()
            mem.check()
            req = pol.cache_request(_workload(cfg, ctx), mem)
        except InputError:  # refused or infeasible (run() says so)
            continue
        if req is not None:
            reqs.append(req)
    done = segmented.run_many(reqs, alone=False)
    for r in reqs:
        r.workload.trace.close()
    return sum(x is not None for x in done)


def execute(device: DeviceSpec, plan, fidelity: str, progress: bool = False, recorder=None, check: bool = False) -> TimingResult:
    """Run a decode plan on the named timing tier (:mod:`pi2sim.engine.tiers`)."""
    return tiers.run_decode(fidelity, device, plan, progress=progress, recorder=recorder, check=check)


def _sha_of(path: str | Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def resolve(cfg: RunConfig, ctx: RunContext, pol: Policy, preset: str | None, trace_info: dict) -> dict:
    """The fully resolved configuration, embedded in every result (no absolute paths: the same
    inputs give the same bytes from any directory)."""
    run = {k: getattr(cfg, k) for k in sorted(RUN_KEYS) if cfg.thermal or k not in THERMAL_KEYS}
    run["device"] = ctx.device.name
    run["model"] = ctx.model.name
    run["quant"] = ctx.quant.name  # the engine's own format when the run named none
    run["trace"] = trace_info.get("file")
    resolved = {
        "pi2sim_version": __version__,
        "run": run,
        "policy": {"name": pol.name, "preset": preset, "options": pol.resolved_options()},
        "device": {"name": ctx.device.name, "file_sha256": _sha_of(ctx.device.path), "overrides": dict(cfg.device_overrides)},
        "model": {"name": ctx.model.name, "file_sha256": _sha_of(ctx.model.path), "overrides": dict(cfg.model_overrides)},
        "trace": trace_info,
    }
    resolved["config_hash"] = config_hash(resolved)
    return resolved


def simulate(**kwargs) -> SimResult:
    """Run one simulation from keyword arguments (see module docstring)."""
    progress = bool(kwargs.pop("progress", False))
    dev_over = kwargs.pop("device_overrides", {}) or {}
    mod_over = kwargs.pop("model_overrides", {}) or {}
    given = kwargs.pop("options", None) or {}  # RunConfig's own field: policy options as a mapping
    if not isinstance(given, dict):
        from .errors import InputError

        raise InputError("simulate()", "options", "a mapping of policy options", given)
    run_kw = {k: v for k, v in kwargs.items() if k in RUN_KEYS}
    options = {**given, **{k: v for k, v in kwargs.items() if k not in RUN_KEYS}}
    from . import schema

    cfg = schema.build(RunConfig, {k: v for k, v in run_kw.items() if v is not None}, "simulate()")
    cfg = replace(cfg, options=options, device_overrides=dict(dev_over), model_overrides=dict(mod_over))
    return run(cfg, progress=progress)


def percentiles(x: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(np.mean(x)),
        "p50": float(np.percentile(x, 50)),
        "p90": float(np.percentile(x, 90)),
        "p99": float(np.percentile(x, 99)),
    }
