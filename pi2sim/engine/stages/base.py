"""What every stage kind provides, and the defaults for kinds without internal overlap.

A stage kind is one dataclass (its amounts, numpy arrays over decode tokens and layers ``[T, L]``,
or ``[T]`` for per-token stages, or scalars) that subclasses :class:`StageKind` and carries its
own behaviour, so the tiers and checks never switch on the kind:

* :meth:`~StageKind.closed_form`: the stage's time over every token and layer
  (:class:`~pi2sim.engine.components.StageTime`); the analytic tier is this alone, the event
  tiers use it for the stages they do not break into events.
* :meth:`~StageKind.simulate`: the layer tier's SimPy process for one (token, layer). The default
  waits the closed form of that instance, which is exact for a stage with nothing to interleave.
* :meth:`~StageKind.draw`: the cluster tier's timeline slices of one instance, placed at its start.
* :meth:`~StageKind.flash_traffic` and :meth:`~StageKind.plan_checks`: what the plan-level
  invariants (``flash-accounting``) need to know.
* :attr:`~StageKind.per_cluster_events`: whether the cluster tier simulates the stage event by
  event with its compiled kernel.

``eng`` in :meth:`~StageKind.simulate` is the layer tier's engine (:class:`pi2sim.engine.des.LayerEngine`):
its SimPy environment ``env``, DRAM bus ``bus``, components ``comp``, recorder ``rec``, busy-time
ledger ``add_busy`` and the recording helpers ``on_cores`` / ``on_unit``. Stage modules do not
import it (the tier imports the stages).
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass, replace

import numpy as np


def value_at(arr, t: int, l: int | None) -> float:
    """A stage amount for token ``t`` and layer ``l`` (``l`` None: a per-token stage); amounts are
    scalars, [T] or [T, L] arrays."""
    a = np.asarray(arr)
    if a.ndim == 0:
        return float(a)
    if l is None or a.ndim == 1:
        return float(a[t])
    return float(a[t, l])


class StageKind:
    """Base of the stage dataclasses (it has no fields of its own)."""

    name: str
    category: str  # critical-path breakdown category: compute, io or other

    # ------------------------------------------------------------------ data
    def arrays(self):
        """``(field path, array)`` of every per-token / per-layer amount, a nested stage's included."""
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                yield f.name, v
            elif isinstance(v, StageKind):
                yield from ((f"{f.name}.{n}", a) for n, a in v.arrays())

    def at(self, t: int, l: int | None):
        """The same stage with the amounts of one (token, layer) instance only (0-d arrays)."""
        changes = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray) and v.ndim:
                changes[f.name] = np.asarray(value_at(v, t, l))
            elif isinstance(v, StageKind) and is_dataclass(v):
                changes[f.name] = v.at(t, l)
        return replace(self, **changes)

    # ------------------------------------------------------------------ timing
    def closed_form(self, comp):
        """:class:`~pi2sim.engine.components.StageTime` of the stage, every token and layer at once."""
        raise NotImplementedError(type(self).__name__)

    per_cluster_events = False

    def span_label(self) -> str:
        """The slice name of the stage on its pool's cores (stages run as one span)."""
        return self.name

    def simulate(self, eng, t: int, l: int | None):
        """SimPy process of one instance; returns (duration, compute part, other part)."""
        r = self.at(t, l).closed_form(eng.comp)
        for k, v in r.busy.items():
            eng.add_busy(k, float(np.sum(v)))
        for agent, v in r.dram.items():  # its DRAM traffic, outside the bus's contention (closed form)
            eng.bus.account(agent, float(np.sum(v)))
        dt = float(np.sum(r.total))
        yield eng.env.timeout(dt)
        eng.events += 1
        pool = getattr(self, "pool", None)
        if pool is not None:
            eng.on_cores(pool, self.span_label(), eng.env.now - dt, eng.env.now)
        return dt, float(np.sum(r.compute)), float(np.sum(r.other))

    def draw(self, rec, comp, t: int, l: int | None, start: float, total: float) -> None:
        """Timeline slices of one instance that starts at ``start`` and takes ``total`` seconds."""
        pool = getattr(self, "pool", None)
        if pool is not None:
            rec.on_pool(pool, self.span_label(), start, start + total, token=t, layer=l)

    # ------------------------------------------------------------------ accounting
    def flash_traffic(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Bytes read from flash and requests issued, per [T, L] (layer stage) or [T] (token stage)."""
        return np.zeros(shape), np.zeros(shape)

    def plan_checks(self, shape: tuple[int, ...]):
        """``(invariant, ok mask, detail)`` the stage's own amounts must satisfy."""
        return ()
