"""The layer tier's DRAM bus in SimPy: byte streams that share bandwidth by the one allocation
rule of :class:`pi2sim.engine.dram.DramModel` (kept apart from it so that the closed-form tiers
do not import SimPy)."""

from __future__ import annotations

import simpy

from .dram import DramModel


class _Flow:
    __slots__ = ("agent", "remaining", "demand", "rate", "done", "moved")

    def __init__(self, agent: str, nbytes: float, demand: float, done: simpy.Event):
        self.agent = agent
        self.remaining = float(nbytes)
        self.demand = float(demand)
        self.rate = 0.0
        self.done = done
        self.moved = 0.0


class FluidBus:
    """SimPy component: byte streams that share DRAM bandwidth by :meth:`DramModel.allocate`.

    ``transfer(agent, nbytes, demand)`` returns an event that fires when the stream completes.
    Whenever a stream starts or ends, every stream's progress is brought up to date and rates
    are re-allocated; one pending wake-up (the earliest completion) is kept, stale ones ignored.
    Several streams of the same agent split that agent's allocation in proportion to demand.
    """

    def __init__(self, env: simpy.Environment, model: DramModel):
        self.env = env
        self.model = model
        self.flows: list[_Flow] = []
        self._last = env.now
        self._version = 0
        self.bytes_by_agent: dict[str, float] = {}
        self.busy_time = 0.0  # time with at least one stream active
        self.on_rates = None  # optional callback(agent -> bytes/s) after every re-allocation (timelines)

    def transfer(self, agent: str, nbytes: float, demand: float) -> simpy.Event:
        done = self.env.event()
        if nbytes <= 0:
            done.succeed()
            return done
        self._advance()
        self.flows.append(_Flow(agent, nbytes, demand, done))
        self._reallocate()
        return done

    def account(self, agent: str, nbytes: float) -> None:
        """Bytes a kernel moved outside the bus's contention (a gemm's weight stream, whose time is
        its operations at the unit's rate): counted in ``bytes_by_agent`` like a transfer's."""
        if nbytes > 0:
            self.bytes_by_agent[agent] = self.bytes_by_agent.get(agent, 0.0) + float(nbytes)

    def _advance(self) -> None:
        dt = self.env.now - self._last
        if dt > 0:
            if self.flows:
                self.busy_time += dt
            for f in self.flows:
                step = f.rate * dt
                f.remaining -= step
                f.moved += step
        self._last = self.env.now

    def _reallocate(self) -> None:
        # finish streams that are done (tolerance: a picosecond of transfer)
        alive = []
        for f in self.flows:
            if f.remaining <= max(1e-12 * f.demand, 1e-6):
                self.bytes_by_agent[f.agent] = self.bytes_by_agent.get(f.agent, 0.0) + f.moved + max(f.remaining, 0.0)
                f.done.succeed()
            else:
                alive.append(f)
        self.flows = alive
        if not alive:
            if self.on_rates is not None:
                self.on_rates({})
            return
        demand_by_agent: dict[str, float] = {}
        for f in alive:
            demand_by_agent[f.agent] = demand_by_agent.get(f.agent, 0.0) + f.demand
        rates = self.model.allocate(demand_by_agent)
        for f in alive:
            f.rate = rates[f.agent] * f.demand / demand_by_agent[f.agent]
        if self.on_rates is not None:
            self.on_rates(rates)
        self._version += 1
        version = self._version
        wake = min(f.remaining / f.rate for f in alive)
        ev = self.env.timeout(wake)
        ev.callbacks.append(lambda _ev, v=version: self._wake(v))

    def _wake(self, version: int) -> None:
        if version != self._version:
            return
        self._advance()
        self._reallocate()
