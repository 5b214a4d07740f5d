"""The run configuration: one typed dataclass behind the CLI, the Python API and the saved config.

``--set key=value`` addresses, in order:

* a field of :class:`RunConfig` (``quant=fp16``, ``decode_tokens=512``, ``fidelity=analytic``);
* ``device.<yaml key path>`` or ``model.<yaml key path>``: an override of one value of the
  device or model YAML, validated exactly like the file itself
  (``device.storage.latency="60 us"``, ``model.sparsity.level=0.7``);
* otherwise an option of the policy (``compute_threads=6``, ``preset=v3``).

Values are read as YAML scalars, so ``true``, ``0.5`` and ``"4 GB/s"`` mean what they say.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import yaml

from . import schema
from .engine import tiers
from .errors import InputError
from .schema import spec_field

Fidelity = Literal[tiers.NAMES]  # the tier registry's names (pi2sim.engine.tiers)


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    device: str = spec_field(default="oneplus12", help="bundled device name or path to a device YAML")
    model: str = spec_field(default="turbosparse-mistral-7b", help="bundled model name or path to a model YAML")
    policy: str = spec_field(default="powerinfer2", help="inference engine to simulate")
    trace: str | None = spec_field(default=None, help="trace file (default: the model's bundled or synthetic trace)")
    memory_gb: float | None = spec_field(default=None, gt=0.0, hi=10000.0, help="memory available to the app, GB")
    ffn_offload: float | None = spec_field(default=None, lo=0.0, hi=1.0, help="share of FFN weights kept in flash (default 0.5)")
    prompt_tokens: int = spec_field(default=64, lo=1, hi=131072, help="prompt length (PI2 decoding runs: at most 64)")
    decode_tokens: int = spec_field(default=256, lo=1, hi=1_000_000, help="tokens to decode")
    context_stride: int = spec_field(
        default=1, lo=1, hi=1024,
        help="KV-context positions each decoded token stands for (validate --fast: 4, so 256 simulated tokens "
        "attend to the contexts of a 1024-token run)",
    )
    quant: Literal["int4", "int8", "fp16", "8da4w", "8da4w-g128", "bf16", "w4a16", "q4_0", "q8_0", "q4_k_m", "q6_k", "q4f16_1"] | None = spec_field(
        default=None,
        help="weight quantization (int4/int8/fp16, or an engine's own format: 8da4w, 8da4w-g128, bf16, w4a16, q4f16_1, and llama.cpp's GGUF files q4_0, q8_0, q4_k_m, q6_k); "
        "default: the engine's own (int4 for the PowerInfer family)",
    )
    sparsity: float | None = spec_field(default=None, gt=0.0, hi=0.999, help="replay level of a magnitude (SiLU) trace")
    seed: int = spec_field(default=0, lo=0, hi=2**31 - 1, help="seed (synthetic traces, predictor errors)")
    fidelity: Fidelity = spec_field(default=tiers.DEFAULT, help=f"timing tier: {tiers.describe()}")
    thermal: bool = spec_field(
        default=False,
        help="simulate heat and the CPU thermal governor (the device's thermal: section); false: a cool phone at full clocks, "
        "as the published short runs were measured",
    )
    ambient_c: float | None = spec_field(default=None, lo=-20.0, hi=50.0, help="ambient temperature, degrees C, with thermal=true (default: the device's)")
    start_temp_c: float | None = spec_field(default=None, lo=-20.0, hi=120.0, help="phone temperature when the run starts, degrees C (default: ambient)")
    options: dict[str, Any] = field(default_factory=dict)  # policy options as given (typed by the policy)
    device_overrides: dict[str, Any] = field(default_factory=dict)
    model_overrides: dict[str, Any] = field(default_factory=dict)

    def validate(self, source) -> None:
        if self.memory_gb is not None and self.ffn_offload is not None:
            raise InputError(source, "memory_gb", "either --memory-gb or --ffn-offload, not both")
        if not self.thermal:
            for key in ("ambient_c", "start_temp_c"):
                if getattr(self, key) is not None:
                    raise InputError(source, key, "thermal=true (a temperature means nothing to a run without the thermal model)", getattr(self, key))


RUN_KEYS = {f.name for f in fields(RunConfig) if f.name not in ("options", "device_overrides", "model_overrides")}
THERMAL_KEYS = ("thermal", "ambient_c", "start_temp_c")  # left out of a resolved configuration that does not use them


def parse_value(text: str) -> Any:
    """A ``--set`` value as a YAML scalar (``0.5`` -> float, ``true`` -> bool, ``4 GB/s`` -> str)."""
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(v, (dict, list)):
        return text
    return v


def apply_sets(cfg: RunConfig, sets: list[str], source: str = "--set") -> RunConfig:
    """Apply ``key=value`` strings to a config (see module docstring)."""
    values: dict[str, Any] = {}
    for item in sets:
        if "=" not in item:
            raise InputError(None, source, "key=value", item)
        key, _, raw = item.partition("=")
        key = key.strip()
        if not key:
            raise InputError(None, source, "key=value with a non-empty key", item)
        values[key] = parse_value(raw)
    return apply_values(cfg, values, source)


def apply_values(cfg: RunConfig, values: dict[str, Any], source: str = "--set") -> RunConfig:
    """Apply already-parsed ``{key: value}`` items: run keys, ``device.*``/``model.*`` overrides,
    anything else a policy option (checked when the policy is built)."""
    run_updates: dict[str, Any] = {}
    options = dict(cfg.options)
    dev = dict(cfg.device_overrides)
    mod = dict(cfg.model_overrides)
    for key, value in values.items():
        if not isinstance(key, str) or not key.strip():
            raise InputError(None, source, "non-empty string keys", key)
        key = key.strip()
        if key in RUN_KEYS:
            run_updates[key] = value
        elif key.startswith("device."):
            dev[key[len("device.") :]] = value
        elif key.startswith("model."):
            mod[key[len("model.") :]] = value
        else:
            options[key] = value
    data = {k: getattr(cfg, k) for k in RUN_KEYS}
    data.update(run_updates)
    data = {k: v for k, v in data.items() if v is not None}
    built = schema.build(RunConfig, data, source)
    return replace(built, options=options, device_overrides=dev, model_overrides=mod)


def override_yaml(data: dict, overrides: dict[str, Any], source: str) -> dict:
    """Apply dotted-key overrides to a parsed YAML mapping (keys must exist)."""
    data = copy.deepcopy(data)
    for dotted, value in overrides.items():
        node: Any = data
        parts = dotted.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise InputError(source, dotted, f"a list index below {len(node)} at {'.'.join(parts[: i + 1])}")
                idx = int(part)
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
                continue
            if not isinstance(node, dict) or part not in node:
                have = ", ".join(sorted(node)) if isinstance(node, dict) else "a scalar"
                raise InputError(source, dotted, f"an existing key (here: {have})")
            if last:
                node[part] = value
            else:
                node = node[part]
    return data


def config_hash(resolved: dict) -> str:
    """Stable hash of a resolved configuration (sweep caches, regression goldens)."""
    if resolved.get("thermal") is False and all(resolved.get(k) is None for k in THERMAL_KEYS[1:]):
        # a configuration without the thermal model hashes as it did before the model existed
        resolved = {k: v for k, v in resolved.items() if k not in THERMAL_KEYS}
    text = json.dumps(resolved, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
