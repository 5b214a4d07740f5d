"""What the event tiers saw, as plain records: slices on named tracks, counters and flows.

The engine calls a :class:`Recorder` while it runs (it knows nothing of file formats); the report
layer (:mod:`pi2sim.report.timeline`) turns the records into a Perfetto / Chrome trace. A recorder
keeps only the decode tokens of its window, so a long run can still give a small file.

Tracks are named by what they model: ``cpu:<core id>`` (one per CPU core), ``npu``, ``gpu``,
``ufs:slot<i>`` (one per UFS queue slot a request occupies from issue to completion),
``decode`` (one slice per token) and ``layers``. Times are simulated seconds.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

# Track and counter names, defined here only: the tiers record on them through the Recorder's
# methods, and the report (pi2sim.report.timeline) lays the tracks out by these names.
CPU_PREFIX = "cpu:"  # one track per CPU core: cpu:<core id> (and cpu:<core id>:io for its I/O thread)
UFS_SLOT_PREFIX = "ufs:slot"  # one track per UFS queue slot
UFS_BATCH = "ufs:batch"  # a stage's batch of reads, as one slice
DECODE = "decode"  # one slice per token
LAYERS = "layers"  # one slice per layer
HIT_RATE = "neuron cache hit rate"
DRAM_RESIDENT = "DRAM resident (GB)"
POWER = "power (W)"  # the phone's power, one value per decode token (pi2sim.engine.power)


def cpu_track(core_id: str, sub: str | None = None) -> str:
    return f"{CPU_PREFIX}{core_id}" + (f":{sub}" if sub else "")


def dram_bandwidth_counter(agent: str) -> str:
    return f"DRAM bandwidth {agent} (GB/s)"


@dataclass
class Slice:
    track: str
    name: str
    start_s: float
    end_s: float
    args: dict = field(default_factory=dict)


@dataclass
class Flow:
    """An arrow from the slice that produced something (an I/O completion) to the one that used it."""

    id: int
    src_track: str
    src_s: float
    dst_track: str | None = None
    dst_s: float | None = None


class Recorder:
    """Records of the decode tokens ``first_token..stop_token-1``. ``coarse``: busy spans only (a
    neuron pipeline's stage gives one slice per core, per I/O thread and per batch of reads, no
    single requests, flows or bandwidth counters): what the power profile needs, at a fraction of
    the cost of a full timeline."""

    def __init__(self, first_token: int = 0, stop_token: int | None = None, coarse: bool = False):
        if first_token < 0 or (stop_token is not None and stop_token <= first_token):
            raise ValueError("token window must satisfy 0 <= first < stop")
        self.first_token = first_token
        self.stop_token = stop_token
        self.coarse = coarse
        self.active = False
        self.token = -1
        self.slices: list[Slice] = []
        self.counters: dict[str, list[tuple[float, float]]] = {}
        self.flows: list[Flow] = []
        self._slot_free: list[tuple[float, int]] = []  # (free at, slot) heap of UFS queue slots
        self.slots_used = 0
        self.core_order: list[str] = []  # CPU cores in the device's order (track order in the UI)
        self.meta: dict = {}

    # ------------------------------------------------------------------ window
    def begin_token(self, t: int) -> None:
        self.token = t
        self.active = t >= self.first_token and (self.stop_token is None or t < self.stop_token)

    # ------------------------------------------------------------------ records
    def slice(self, track: str, name: str, start_s: float, end_s: float, **args) -> None:
        if self.active and end_s > start_s:
            self.slices.append(Slice(track, name, start_s, end_s, args))

    # what the tiers record, by name (the track names above live here only)
    def on_core(self, core_id: str, name: str, start_s: float, end_s: float, **args) -> None:
        self.slice(cpu_track(core_id), name, start_s, end_s, **args)

    def on_pool(self, pool, name: str, start_s: float, end_s: float, **args) -> None:
        """A kernel split dynamically over a CPU pool: the same slice on every core of the pool."""
        for cid in pool.ids():
            self.on_core(cid, name, start_s, end_s, **args)

    def on_unit(self, unit: str, name: str, start_s: float, end_s: float, **args) -> None:
        """A slice on a processor other than a CPU core (``npu``, ``gpu``): its track is its name."""
        self.slice(unit, name, start_s, end_s, **args)

    def ufs_batch(self, name: str, start_s: float, end_s: float, **args) -> None:
        self.slice(UFS_BATCH, name, start_s, end_s, **args)

    def layer_span(self, index: int, start_s: float, end_s: float, **args) -> None:
        self.slice(LAYERS, f"layer {index}", start_s, end_s, **args)

    def token_span(self, index: int, start_s: float, end_s: float, **args) -> None:
        self.slice(DECODE, f"token {index}", start_s, end_s, **args)

    def dram_bandwidth(self, agent: str, t_s: float, gbs: float) -> None:
        self.counter(dram_bandwidth_counter(agent), t_s, gbs)

    def hit_rate(self, t_s: float, value: float) -> None:
        self.counter(HIT_RATE, t_s, value)

    def dram_resident(self, t_s: float, gb: float) -> None:
        self.counter(DRAM_RESIDENT, t_s, gb)

    def power(self, edges, watts) -> None:
        """The power counter track, after the run: a step function drawing ``watts[i]`` from
        ``edges[i]`` to ``edges[i + 1]`` (:func:`pi2sim.engine.power.profile` of the window)."""
        series = self.counters.setdefault(POWER, [])
        for t_s, w in zip(edges[:-1], watts):
            w = round(float(w), 4)
            if not series or series[-1][1] != w:
                series.append((float(t_s), w))
        if len(edges):
            series.append((float(edges[-1]), 0.0))

    def counter(self, name: str, t_s: float, value: float) -> None:
        if not self.active:
            return
        series = self.counters.setdefault(name, [])
        if series and series[-1][0] == t_s:
            series[-1] = (t_s, value)  # several updates at one instant: the last one holds
        elif not series or series[-1][1] != value:
            series.append((t_s, value))

    def ufs_request(self, issue_s: float, done_s: float, name: str, **args) -> str:
        """Place one request on the first free queue slot; returns the slot's track."""
        if self._slot_free and self._slot_free[0][0] <= issue_s:
            _, slot = heapq.heappop(self._slot_free)
        else:
            slot = self.slots_used
            self.slots_used += 1
        heapq.heappush(self._slot_free, (done_s, slot))
        track = f"{UFS_SLOT_PREFIX}{slot}"
        self.slice(track, name, issue_s, done_s, **args)
        return track

    def flow_start(self, track: str, t_s: float) -> int | None:
        if not self.active:
            return None
        self.flows.append(Flow(len(self.flows), track, t_s))
        return len(self.flows) - 1

    def flow_end(self, flow_id: int | None, track: str, t_s: float) -> None:
        if flow_id is None or not self.active:
            return
        f = self.flows[flow_id]
        f.dst_track, f.dst_s = track, t_s

    def complete_flows(self) -> list[Flow]:
        """Flows with both ends inside the window."""
        return [f for f in self.flows if f.dst_track is not None]
