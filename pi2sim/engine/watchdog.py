"""Stopping a simulation that stopped making progress, with a state dump instead of a hang.

Both event tiers watch their own progress: the layer tier's :class:`Watchdog` drives SimPy and
notices time that stops advancing or a stage that never drains; the cluster tier's compiled loop
flags a stage whose events stopped making progress or ran out with tasks left. Either way the
run ends in :func:`stop`: one message format, one dump file, one exception carrying the state.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import simpy

from ..atomic import write_text
from ..errors import SimulationError


def stop(tier: str, why: str, state: dict) -> None:
    """Write ``state`` (with the reason) to a dump file and raise :class:`SimulationError`
    naming the tier, the token, the layer and the stage; the error carries ``state``."""
    dump = Path(tempfile.gettempdir()) / f"pi2sim-watchdog-{os.getpid()}.json"
    write_text(dump, json.dumps({"reason": why, "tier": tier, **state}, indent=1, sort_keys=True, default=str) + "\n")
    err = SimulationError(f"watchdog: {tier}, {why} at token {state.get('token')}, layer {state.get('layer')}, "
                          f"stage {state.get('stage')!r}; state dump in {dump}")
    err.state = state
    raise err


WATCHDOG_EVENTS_AT_ONE_INSTANT = 2_000_000  # events without simulated time advancing: a zero-time loop
WATCHDOG_STAGE_S = 3600.0  # simulated seconds one stage of one layer may take before the run is declared stuck


class Watchdog:
    """Stops a run whose simulated time stopped advancing (events keep firing at one instant) or
    whose work stopped draining (one stage running for an hour of simulated time), and writes a
    state dump so the cause can be found instead of a hang."""

    def __init__(self, events_at_one_instant: int = WATCHDOG_EVENTS_AT_ONE_INSTANT, stage_s: float = WATCHDOG_STAGE_S):
        self.eng = None  # the layer tier's engine (pi2sim.engine.des), attached by its run_decode
        self.events_at_one_instant = events_at_one_instant
        self.stage_s = stage_s
        self.where = {"token": None, "layer": None, "stage": None, "since_s": 0.0}

    def enter(self, t: int, l: int | None, stage: str) -> None:
        self.where = {"token": t, "layer": l, "stage": stage, "since_s": self.eng.env.now}

    def drive(self) -> None:
        env = self.eng.env
        same, last = 0, env.now
        while True:
            try:
                env.step()
            except simpy.core.EmptySchedule:
                return
            if env.now == last:
                same += 1
                if same > self.events_at_one_instant:
                    self.fire(f"simulated time stopped advancing ({same} events at t={env.now:.9f} s)")
            else:
                same, last = 0, env.now
                if env.now - self.where["since_s"] > self.stage_s:
                    self.fire(f"work stopped draining (stage running for {env.now - self.where['since_s']:.0f} simulated s)")

    def state(self) -> dict:
        env = self.eng.env
        return {
            "now_s": env.now,
            **self.where,
            "next_event_s": env.peek(),  # (SimPy's public view of its queue: inf when it is empty)
            "events_processed": self.eng.events,
            "dram_streams": [{"agent": f.agent, "remaining_bytes": f.remaining, "rate_bps": f.rate} for f in self.eng.bus.flows],
            "io_free_at_s": self.eng.io_free_at,
        }

    def fire(self, why: str) -> None:
        stop("layer tier", why, self.state())
