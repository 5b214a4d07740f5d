"""Layer tier: execute a :class:`~pi2sim.engine.plan.DecodePlan` in SimPy.

The decoder process runs every stage of every layer of every token in the plan's order; each
stage runs as its own SimPy process (:meth:`~pi2sim.engine.stages.base.StageKind.simulate`, in
the stage's module) on the shared resources of :class:`LayerEngine`:

* **DRAM**: a :class:`~pi2sim.engine.fluid_bus.FluidBus`; every CPU/NPU kernel is a byte stream on it,
  so concurrent CPU and NPU work share bandwidth as measured (43.9 / 56 / 59.6 GB/s).
* **CPU pool**: the compute threads, as one server that takes ready tasks and streams their
  bytes at the pool's rate (dynamic work split; the cluster tier keeps one task per cluster, the
  layer tier groups clusters: :mod:`pi2sim.engine.stages.neuron_pipeline_des`).
* **I/O thread + UFS**: one issuer per pipeline; ``io_free_at`` keeps one layer's reads behind
  the previous layer's.
* **NPU**: a byte stream on the bus (its hot rows / attention heads), concurrent with the CPU.

The cluster tier (:mod:`pi2sim.engine.cluster`) simulates every cluster on its own thread with a
compiled event loop; this SimPy model, written independently, is its cross-check. Both report the
same critical-path split as the analytic tier: compute (CPU busy in the stage), I/O stall (the
rest of the stage), other (barriers and fixed costs).
"""

from __future__ import annotations

import sys

import numpy as np
import simpy

from ..specs.device import DeviceSpec
from .components import Components, StageTime, compose
from .fluid_bus import FluidBus
from .invariants import InvariantViolation
from .plan import DecodePlan
from .recorder import Recorder
from .result import TimingResult
from .watchdog import Watchdog


class LayerEngine:
    """What the stages' SimPy processes share: the environment, the DRAM bus, the device's
    component models, the busy-time ledger, the recorder and the (token, layer) being run."""

    def __init__(self, device: DeviceSpec, recorder: Recorder | None = None, check: bool = False):
        self.device = device
        self.comp = Components(device)
        self.env = simpy.Environment()
        self.bus = FluidBus(self.env, self.comp.dram)
        self.rec = recorder
        self.check = check
        if recorder is not None:
            recorder.core_order = [c.id for c in device.cores()]
            self.bus.on_rates = self._record_bandwidth
        self.busy: dict[str, float] = {}
        self.busy_t: dict[str, np.ndarray] | None = None  # resource -> [T] busy seconds (set by run_decode)
        self.n_tokens = 0
        self.io_free_at = 0.0
        self.events = 0
        self._t, self._l = 0, None

    def add_busy(self, key: str, v: float) -> None:
        self.busy[key] = self.busy.get(key, 0.0) + v
        if self.busy_t is not None:  # and to the token being run (its stages end within it)
            if key not in self.busy_t:
                self.busy_t[key] = np.zeros(self.n_tokens)
            self.busy_t[key][self._t] += v

    # ------------------------------------------------------------------ timeline
    def _record_bandwidth(self, rates: dict[str, float]) -> None:
        self._bw_agents = getattr(self, "_bw_agents", set()) | set(rates)
        for agent in sorted(self._bw_agents):  # agents seen so far; 0 once they stop streaming
            self.rec.dram_bandwidth(agent, self.env.now, round(rates.get(agent, 0.0) / 1e9, 3))

    def on_cores(self, pool, name: str, start: float, end: float, **args) -> None:
        """A pool kernel: the dynamic work split runs it on every core of the pool at once."""
        if self.rec is not None and self.rec.active:
            self.rec.on_pool(pool, name, start, end, token=self._t, layer=self._l, **args)

    def on_unit(self, unit: str, name: str, start: float, end: float, **args) -> None:
        if self.rec is not None:
            self.rec.on_unit(unit, name, start, end, token=self._t, layer=self._l, **args)


def run_decode(device: DeviceSpec, plan: DecodePlan, *, progress: bool = False,
               recorder: Recorder | None = None, check: bool = False, watchdog: Watchdog | None = None) -> TimingResult:
    """Execute the plan; ``recorder`` (optional) collects the timeline of its token window;
    ``check`` asserts the invariants that need the clock (:mod:`pi2sim.engine.invariants`)."""
    eng = LayerEngine(device, recorder, check)
    dog = watchdog if watchdog is not None else Watchdog()
    dog.eng = eng
    env = eng.env
    T, L = plan.n_tokens, plan.n_layers
    eng.n_tokens, eng.busy_t = T, {}
    dram_t: dict[str, np.ndarray] = {}  # agent -> [T] bytes, from the bus's ledger at token ends
    dram_before: dict[str, float] = {}
    # each stage instance's (duration, compute part, other part), composed into token latencies
    # like the closed forms' (components.compose); busy times come from the events themselves
    layer_parts = [np.zeros((3, T, L)) for _ in plan.layer_stages]
    token_parts = [np.zeros((3, T)) for _ in plan.token_stages]

    last_now = [0.0]

    def run_stage(st, t: int, l: int | None):
        eng._t, eng._l = t, l
        dog.enter(t, l, st.name)
        if check and env.now < last_now[0]:
            raise InvariantViolation("monotonic-clock", f"stage {st.name} starts at {env.now} s, after one ended at {last_now[0]} s", t, l)
        r = yield from st.simulate(eng, t, l)
        if check and (r[0] < 0 or env.now < last_now[0]):
            raise InvariantViolation("monotonic-clock", f"stage {st.name} took {r[0]} s", t, l)
        last_now[0] = env.now
        return r

    rec = eng.rec
    tokens_done = [0]

    def decoder():
        for t in range(T):
            if rec is not None:
                rec.begin_token(t)
                t_start = env.now
                resident = plan.dram_resident_bytes
            for l in range(L):
                if rec is not None:
                    l_start = env.now
                    if resident is not None:
                        rec.dram_resident(env.now, round(float(resident[t, l]) / 1e9, 4))
                for st, parts in zip(plan.layer_stages, layer_parts):
                    parts[:, t, l] = yield from run_stage(st, t, l)
                if rec is not None:
                    rec.layer_span(l, l_start, env.now, token=t, layer=l)
            for st, parts in zip(plan.token_stages, token_parts):
                parts[:, t] = yield from run_stage(st, t, None)
            tokens_done[0] = t + 1
            for agent, moved in eng.bus.bytes_by_agent.items():
                if agent not in dram_t:
                    dram_t[agent] = np.zeros(T)
                dram_t[agent][t] = moved - dram_before.get(agent, 0.0)
            dram_before.update(eng.bus.bytes_by_agent)
            if rec is not None:
                rec.token_span(t, t_start, env.now, token=t, latency_ms=round((env.now - t_start) * 1e3, 4))
            if progress and (t + 1) % max(1, T // 10) == 0:
                print(f"\r[pi2sim] decode {t + 1}/{T} tokens", end="", file=sys.stderr, flush=True)

    proc = env.process(decoder())
    dog.drive()
    if progress:
        print(file=sys.stderr)
    if not proc.triggered:
        dog.fire(f"deadlock: layer tier has no pending events with the decoder unfinished ({tokens_done[0]}/{T} tokens done)")
    def stage_time(parts: np.ndarray) -> StageTime:
        dt, c, o = parts
        return StageTime(dt, c, np.maximum(0.0, dt - c - o), o, {}, {})

    res = compose(plan, [stage_time(p) for p in layer_parts], [stage_time(p) for p in token_parts], "layer")
    res.busy_s, res.dram_bytes = eng.busy, dict(eng.bus.bytes_by_agent)
    res.busy_token_s, res.dram_token_bytes = eng.busy_t, dram_t
    res.events = eng.events
    return res
