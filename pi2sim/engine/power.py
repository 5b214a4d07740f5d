"""Energy from the timing engine's ledgers: what each component drew, token by token.

The timing result says, per decode token, how long every core, the NPU, the GPU and the UFS device
were busy and how many bytes each agent moved through DRAM (``busy_token_s``,
``dram_token_bytes``); the device's ``power:`` section says what each draws. A token's energy is

* per core: ``active x busy + idle x (latency - busy)``, the active power scaled by
  ``(clock share) ** clock_exponent`` when a thermal governor runs the CPU below its nominal clock
  (dynamic power goes as C V^2 f, and the voltage falls with the clock);
* NPU and GPU: the same with their own powers;
* DRAM: ``dram_energy x bytes`` (the compute units' traffic plus the flash reads written into
  DRAM) plus its background power over the latency;
* UFS: ``ufs_energy x bytes read + ufs_request_energy x requests + ufs_active x busy``;
* the rest of the phone: ``platform x latency``.

Power is energy over latency; the prefill is charged the same way from its busy times and bytes.
No number here is fitted: the device file says which of its values are (docs/energy.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..specs.device import DeviceSpec

COMPONENTS = ("cpu", "npu", "gpu", "dram", "ufs", "platform")


@dataclass
class Energy:
    """Energy of a run's decode tokens and of its prefill, by component."""

    token_j: dict[str, np.ndarray]  # component -> [T] joules of each decode token
    prefill_j: dict[str, float]  # component -> joules of the prefill
    token_s: np.ndarray  # [T] the latencies charged (power = energy / latency)
    prefill_s: float

    @property
    def total_token_j(self) -> np.ndarray:
        return sum(self.token_j[c] for c in COMPONENTS)

    @property
    def token_w(self) -> np.ndarray:
        return self.total_token_j / np.maximum(self.token_s, 1e-30)

    @property
    def prefill_total_j(self) -> float:
        return float(sum(self.prefill_j.values()))


def _core_power(device: DeviceSpec, clock_share) -> dict[str, tuple[np.ndarray, float]]:
    """core id -> (active W, idle W) at ``clock_share`` of the nominal clock (scalar or [T])."""
    pw = device.power
    assert pw is not None
    scale = np.asarray(clock_share, dtype=np.float64) ** pw.clock_exponent
    out = {}
    for core in device.cores():
        p = pw.cores[core.cluster.name]
        out[core.id] = (p.active_w * scale, p.idle_w)
    return out


def charge(device: DeviceSpec, span_s, busy: dict, dram_bytes: dict, flash_bytes, flash_reads, clock_share=1.0) -> dict[str, np.ndarray]:
    """Joules by component for intervals of ``span_s`` seconds (scalar or [T]) in which each
    resource was ``busy[res]`` seconds busy and each agent moved ``dram_bytes[agent]`` bytes."""
    pw = device.power
    assert pw is not None
    span = np.asarray(span_s, dtype=np.float64)
    zero = np.zeros_like(span)

    def b(key):  # busy seconds of a resource, at most the interval (a ledger's rounding never makes power negative)
        return np.minimum(np.asarray(busy.get(key, zero), dtype=np.float64), span)

    cpu = zero.copy()
    for cid, (act, idle) in _core_power(device, clock_share).items():
        t = b(cid)
        cpu = cpu + act * t + idle * (span - t)
    units = {}
    for unit, p in (("npu", pw.npu), ("gpu", pw.gpu)):
        t = b(unit)
        units[unit] = p.active_w * t + p.idle_w * (span - t)
    # the compute units' traffic, plus the flash reads written into DRAM counted once from the plan's
    # flash bytes (the ledger's "dma" agent is the same bytes, and the layer tier does not record it)
    moved = sum((np.asarray(v, dtype=np.float64) for a, v in dram_bytes.items() if a != "dma"), zero) + np.asarray(flash_bytes, dtype=np.float64)
    dram = pw.dram_j_per_byte * moved + pw.dram_background_w * span
    ufs = pw.ufs_j_per_byte * np.asarray(flash_bytes, dtype=np.float64) + pw.ufs_j_per_request * np.asarray(flash_reads, dtype=np.float64) \
        + pw.ufs_active_w * b("ufs")
    return {"cpu": cpu, "npu": units["npu"], "gpu": units["gpu"], "dram": dram, "ufs": ufs, "platform": pw.platform_w * span}


def decode_energy(device: DeviceSpec, timing, flash_bytes, flash_reads, clock_share=1.0) -> dict[str, np.ndarray]:
    """Joules of each decode token by component ([T] arrays), from a timing result's ledgers."""
    return charge(device, timing.token_s, timing.busy_token_s, timing.dram_token_bytes, flash_bytes, flash_reads, clock_share)


def prefill_energy(device: DeviceSpec, prefill, flash_bytes: float = 0.0, flash_reads: float = 0.0) -> dict[str, float]:
    """Joules of the prompt pass by component (at the nominal clock)."""
    out = charge(device, prefill.seconds, prefill.busy_s, prefill.dram_bytes, flash_bytes, flash_reads)
    return {k: float(v) for k, v in out.items()}
