"""Energy from the timing engine's ledgers: what each component drew, token by token.

The timing result says, per decode token, how long every core, the NPU, the GPU and the UFS device
were busy and how many bytes each agent moved through DRAM (``busy_token_s``,
``dram_token_bytes``); the device's ``power:`` section says what each draws. A token's energy is

* per core: ``active x busy + idle x (latency - busy)``, the active power scaled by
  ``(clock share) ** clock_exponent`` when a thermal governor runs the CPU below its nominal clock
  (dynamic power goes as C V^2 f, and the voltage falls with the clock); per cluster, its
  ``shared`` power (clock tree, rail, its share of the L3) while its busiest core is busy, scaled
  the same way;
* NPU and GPU: the same with their own powers;
* DRAM: ``dram_energy x bytes`` (the compute units' traffic plus the flash reads written into
  DRAM) plus its background power over the latency;
* UFS: ``ufs_energy x bytes read + ufs_request_energy x requests + ufs_active x busy``;
* the rest of the phone: ``platform x latency``.

Power is energy over latency; the prefill is charged the same way from its busy times and bytes.
No number here is fitted: the device file says which of its values are (docs/energy.md).
"""

from __future__ import annotations

import bisect
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
    sampled_peak_w: float | None = None  # highest mean power over any peak_window in the first tokens (event tiers)
    peak_window_s: float | None = None

    @property
    def total_token_j(self) -> np.ndarray:
        return sum(self.token_j[c] for c in COMPONENTS)

    @property
    def token_w(self) -> np.ndarray:
        return self.total_token_j / np.maximum(self.token_s, 1e-30)

    @property
    def prefill_total_j(self) -> float:
        return float(sum(self.prefill_j.values()))



def _unit(p):
    """A unit's power, or nothing for a phone without that unit's section."""
    from ..specs.device import UnitPower

    return p if p is not None else UnitPower(active_w=0.0, idle_w=0.0)

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


def _clusters(device: DeviceSpec) -> dict[str, list[str]]:
    """cluster name -> its core ids."""
    out: dict[str, list[str]] = {}
    for core in device.cores():
        out.setdefault(core.cluster.name, []).append(core.id)
    return out


def _cluster_busy(core_busy: list):
    """How long a cluster is busy: as long as its busiest core (its cores run a pool kernel
    together, so the union of their busy times is close to the longest; it is never shorter)."""
    return np.maximum.reduce([np.asarray(x, dtype=np.float64) for x in core_busy])


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
    scale = np.asarray(clock_share, dtype=np.float64) ** pw.clock_exponent
    for name, ids in _clusters(device).items():  # a cluster's shared power while any core of it works
        cpu = cpu + pw.cores[name].shared_w * scale * _cluster_busy([b(i) for i in ids])
    units = {}
    for unit, p in (("npu", _unit(pw.npu)), ("gpu", _unit(pw.gpu))):
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


# ----------------------------------------------------------------------------- peak power
#
# A token's mean power hides its phases: PowerInfer-2 runs attention on the NPU and the FFN on six
# cores plus the NPU, so its power swings within every layer (~1.5 ms) while a dense CPU engine's
# stays flat. A power meter reports the highest power averaged over its own sampling window, so
# the peak comes from the event tiers' slices of the first few tokens: each component's ledger
# energy is laid onto the times its resource was busy, and the peak is the highest mean of that
# profile over any ``peak_window`` (the device's power section).

PEAK_SAMPLE_TOKENS = 4  # decode tokens whose slices give the power profile (a token holds every layer's phases)


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


class _Busy:
    """A unit's busy runs: disjoint intervals sorted by time (a :func:`_union`), searchable."""

    def __init__(self, runs: list[tuple[float, float]]):
        self.runs = runs
        self.ends = [e for _, e in runs]

    def within(self, a: float, b: float) -> list[tuple[float, float]]:
        """The runs clipped to [a, b]."""
        out = []
        for s, e in self.runs[bisect.bisect_right(self.ends, a):]:
            if s >= b:
                break
            out.append((max(s, a), min(e, b)))
        return out


def _spread(segments: list, busy: _Busy | None, joules: float, a: float, b: float) -> float:
    """Lay ``joules`` evenly over the busy runs within the token [a, b], or over the whole token
    where the ledger has energy its slices do not show (a closed-form stage draws none); returns
    the joules laid."""
    if joules == 0.0:
        return 0.0
    spans = busy.within(a, b) if busy is not None else []
    total = sum(e - s for s, e in spans)
    if total <= 0.0:
        spans, total = [(a, b)], b - a
    for s, e in spans:
        segments.append((s, e, joules / total))
    return joules


def profile(device: DeviceSpec, slices, token_j: dict[str, np.ndarray], timing, flash_bytes, first: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """The phone's power over decode tokens ``first..stop-1`` as a step function: ``edges``
    [K+1] seconds and ``watts`` [K]. It integrates to those tokens' ledger energy (``token_j``, by
    component, at the nominal clock): idle, background and platform power are laid evenly over a
    token, a unit's active part (and, for DRAM, the per-byte part) over the times the recorder saw
    the unit busy (the compute units for DRAM traffic, the UFS queue for flash reads)."""
    pw = device.power
    assert pw is not None
    starts = np.r_[0.0, np.cumsum(timing.token_s)]
    by_track: dict[str, list[tuple[float, float]]] = {}
    for s in slices:
        by_track.setdefault(s.track, []).append((s.start_s, s.end_s))
    cores = {c.id: pw.cores[c.cluster.name] for c in device.cores()}
    clusters = _clusters(device)

    def busy_runs(prefix: str) -> list[tuple[float, float]]:
        return _union([iv for tr, ivs in by_track.items() if tr == prefix or tr.startswith(prefix + ":") for iv in ivs])

    runs = {cid: busy_runs(f"cpu:{cid}") for cid in cores}
    runs["npu"], runs["gpu"] = busy_runs("npu"), busy_runs("gpu")
    runs["ufs"] = _union([iv for tr, ivs in by_track.items() if tr.startswith("ufs:") for iv in ivs])
    spans = {k: _Busy(v) for k, v in runs.items()}
    for name, ids in clusters.items():
        spans[f"cluster:{name}"] = _Busy(_union([iv for i in ids for iv in runs[i]]))
    compute = _Busy(_union([iv for k in list(cores) + ["npu", "gpu"] for iv in runs[k]]))
    segments: list[tuple[float, float, float]] = []
    zero = np.zeros(len(timing.token_s))
    for t in range(first, min(stop, len(timing.token_s))):
        a, b = float(starts[t]), float(starts[t + 1])
        lat = b - a
        if lat <= 0.0:
            continue

        def busy(key: str) -> float:
            return min(float(np.asarray(timing.busy_token_s.get(key, zero))[t]), lat)

        # the always-on draw: every idle core and unit, DRAM background, the rest of the phone
        base = pw.dram_background_w + pw.platform_w + sum(p.idle_w for p in cores.values()) + _unit(pw.npu).idle_w + _unit(pw.gpu).idle_w
        segments.append((a, b, base))
        laid = base * lat
        for cid, p in cores.items():  # each core's and cluster's active part while it was busy
            laid += _spread(segments, spans[cid], (p.active_w - p.idle_w) * busy(cid), a, b)
        for name, ids in clusters.items():
            laid += _spread(segments, spans[f"cluster:{name}"], pw.cores[name].shared_w * float(_cluster_busy([busy(i) for i in ids])), a, b)
        for unit, p in (("npu", _unit(pw.npu)), ("gpu", _unit(pw.gpu))):
            laid += _spread(segments, spans[unit], (p.active_w - p.idle_w) * busy(unit), a, b)
        # DRAM traffic over the compute units' busy times, flash reads (and their DRAM writes) over the UFS queue's
        flash_dram = pw.dram_j_per_byte * float(np.broadcast_to(np.asarray(flash_bytes, dtype=np.float64), zero.shape)[t])
        laid += _spread(segments, compute, float(token_j["dram"][t]) - pw.dram_background_w * lat - flash_dram, a, b)
        laid += _spread(segments, spans["ufs"], float(token_j["ufs"][t]) + flash_dram, a, b)
        # what the ledger holds beyond the parts laid out above (rounding of busy times, a clamp): evenly
        _spread(segments, None, sum(float(token_j[c][t]) for c in COMPONENTS) - laid, a, b)
    if not segments:
        return np.array([0.0, 0.0]), np.zeros(0)
    edges = np.unique(np.array([x for s, e, _ in segments for x in (s, e)]))
    delta = np.zeros(len(edges))
    for s, e, w in segments:
        delta[np.searchsorted(edges, s)] += w
        delta[np.searchsorted(edges, e)] -= w
    return edges, np.cumsum(delta)[:-1]


def windowed_peak_w(edges: np.ndarray, watts: np.ndarray, window_s: float) -> float:
    """The highest mean of a step-function power over any window of ``window_s`` seconds within
    it (the whole span's mean when the span is shorter)."""
    if len(watts) == 0:
        return 0.0
    energy = np.r_[0.0, np.cumsum(watts * np.diff(edges))]
    span = edges[-1] - edges[0]
    if span <= window_s:
        return float(energy[-1] / max(span, 1e-30))
    # the mean over [x, x + w] is piecewise linear in x between breakpoints: its maximum is at one
    starts = np.clip(np.r_[edges, edges - window_s], edges[0], edges[-1] - window_s)
    gained = np.interp(starts + window_s, edges, energy) - np.interp(starts, edges, energy)
    return float(gained.max() / window_s)
