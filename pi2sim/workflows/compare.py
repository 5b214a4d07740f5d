"""Several policies (or presets) on the same phone, model, trace and memory condition.

``policies`` entries are ``name`` or ``name@preset`` (``powerinfer2@v3``, ``dense@qnn``).
A policy the simulated engine would refuse (the model does not fit, an allocation fails) gets
status ``refused`` and its reason instead of numbers, as the real engine would fail.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd

from .. import policies
from ..config import RunConfig
from ..errors import InputError

COLUMNS = [
    "policy", "status", "decode_tok_s", "prefill_tok_s", "ttft_ms", "tbt_p50_ms", "tbt_p99_ms", "peak_memory_gb",
    "flash_mb_per_token", "flash_reads_per_token", "hit_rate", "compute_share", "io_stall_share", "other_share", "energy_j_per_token", "reason",
]


def parse_policy(spec: str) -> tuple[str, str | None]:
    name, _, preset = spec.partition("@")
    policies.get(name)  # validates the name
    return name, (preset or None)


def _row(label: str, summary: dict) -> dict:
    from ..report.summary import summary_row

    r = summary_row(summary)
    return {
        "policy": label,
        **{k: r[k] for k in ("status", "decode_tok_s", "prefill_tok_s", "ttft_ms", "tbt_p50_ms", "tbt_p99_ms", "peak_memory_gb")},
        "flash_mb_per_token": r["flash_bytes_per_token"] / 1e6,
        "flash_reads_per_token": r["flash_reads_per_token"],
        "hit_rate": r["neuron_cache_hit_rate"],
        **{k: r[k] for k in ("compute_share", "io_stall_share", "other_share", "reason")},
        "energy_j_per_token": r.get("energy_j_per_token"),
    }


def same_condition(base: RunConfig) -> tuple[RunConfig, str]:
    """Every engine under one memory condition: the one given (``memory_gb`` or ``ffn_offload``),
    or else the phone's app memory (each engine's own default would differ: the PowerInfer family
    half its FFN in flash, the named in-memory engines the whole phone). Returns the base with the
    condition set, and its label for the table's header."""
    from ..specs.device import load_device

    if base.memory_gb is not None:
        return base, f"{base.memory_gb:g} GB for the app"
    if base.ffn_offload is not None:
        return base, f"{base.ffn_offload:.0%} of the FFN in flash"
    dev = load_device(base.device, base.device_overrides or None)
    gb = round(dev.dram.app_usable_bytes / 1e9, 6)
    return replace(base, memory_gb=gb), f"{gb:g} GB for the app (the phone's app memory: no condition given)"


def run_policies(base: RunConfig, specs: list[str], per_policy: dict[str, dict[str, Any]] | None = None, progress: bool = False):
    """Run every policy spec on ``base``; returns (table DataFrame, {label: SimResult}). An engine
    that refuses (the model does not fit, a model or weight format it does not run, a phone
    without its NPU) is a row with its reason."""
    from ..errors import ConfigurationRefused
    from ..policies._common import EngineRefused
    from ..simulation import run

    per_policy = per_policy or {}
    rows, results = [], {}
    for spec in specs:
        name, preset = parse_policy(spec)
        opts = dict(per_policy.get(name, {}))
        opts.update(per_policy.get(spec, {}))
        if preset:
            opts["preset"] = preset
        cfg = replace(base, policy=name, options=opts)
        try:
            r = run(cfg, progress=progress)
        except EngineRefused as exc:
            rows.append({"policy": spec, "status": "refused", "reason": exc.expected})
            continue
        except ConfigurationRefused as exc:
            rows.append({"policy": spec, "status": "refused", "reason": exc.line()})
            continue
        results[spec] = r
        rows.append(_row(spec, r.summary))
    return pd.DataFrame(rows, columns=COLUMNS), results


def split_sets(sets: list[str], specs: list[str]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Separate run/device/model ``--set`` items from policy options.

    ``policy:key=value`` (or ``policy@preset:key=value``) goes to that policy; an unqualified
    key that is not a run, device or model key goes to every compared policy that has it.
    """
    from dataclasses import fields

    from ..config import RUN_KEYS, parse_value

    run_sets: list[str] = []
    per: dict[str, dict[str, Any]] = {}
    for item in sets:
        key, eq, raw = item.partition("=")
        if not eq:
            raise InputError(None, "--set", "key=value", item)
        if ":" in key:
            target, _, k = key.partition(":")
            if target not in specs and target not in [s.partition("@")[0] for s in specs]:
                raise InputError(None, "--set", f"a compared policy before ':' ({', '.join(specs)})", target)
            per.setdefault(target, {})[k] = parse_value(raw)
        elif key in RUN_KEYS or key.startswith(("device.", "model.")):
            run_sets.append(item)
        else:
            owners = [s for s in specs if key in {f.name for f in fields(policies.get(s.partition("@")[0]).Options)}]
            if not owners:
                raise InputError(None, "--set", f"a run key, device.*/model.*, or an option of a compared policy (none has {key!r})", item)
            for s in owners:
                per.setdefault(s, {})[key] = parse_value(raw)
    return run_sets, per


def ablation(base: RunConfig, progress: bool = False) -> tuple[pd.DataFrame, dict]:
    """PowerInfer-2's ablation chain (v3 §7.5): each step adds one technique."""
    from ..policies.powerinfer2 import PowerInfer2

    specs = [f"powerinfer2@{step}" for step in PowerInfer2.ABLATION]
    table, results = run_policies(base, specs, progress=progress)
    table.insert(1, "step", list(PowerInfer2.ABLATION))
    speed = table["decode_tok_s"].astype(float)
    table.insert(3, "speedup_vs_previous", (speed / speed.shift(1)).round(3))
    extra = []
    for spec in specs:
        r = results.get(spec)
        if r is None:
            extra.append({})
            continue
        cpm = r.summary["critical_path_ms_per_token"]
        extra.append({"compute_ms": cpm["compute"], "io_stall_ms": cpm["io_stall"], "other_ms": cpm["other"]})
    for key in ("compute_ms", "io_stall_ms", "other_ms"):
        table[key] = [e.get(key) for e in extra]
    return table, results


def phones_and_engines(base: RunConfig, devices: list[str], specs: list[str], per_policy: dict[str, dict[str, Any]] | None = None,
                       progress: bool = False) -> pd.DataFrame:
    """The "which phone and engine" view: every engine on every phone for one model, each phone
    under the condition given or its own app memory; one row per (phone, engine)."""
    frames = []
    for dev in devices:
        b, label = same_condition(replace(base, device=dev))
        table, _ = run_policies(b, specs, per_policy, progress=progress)
        table.insert(0, "device", dev)
        table.insert(2, "memory_condition", label)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)
