"""The timing tiers, by name: the one registry every command, config and workflow reads.

A tier is a module with ``run_decode(device, plan, *, progress, recorder, check) -> TimingResult``
and one entry in :data:`TIERS`; nothing else names tiers. The registry is data only: it names each
tier's module and imports it when the tier runs (:func:`run_decode`), so the run configuration
(infrastructure, below the engine) can list the names without loading any tier.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Tier:
    name: str
    module: str  # dotted path of the module with run_decode
    summary: str  # one line: what the tier simulates
    events: bool  # simulates events, so it can record a timeline


TIERS: dict[str, Tier] = {
    t.name: t
    for t in (
        Tier("analytic", "pi2sim.engine.analytic", "closed forms", events=False),
        Tier("layer", "pi2sim.engine.des", "SimPy, clusters grouped per layer", events=True),
        Tier("cluster", "pi2sim.engine.cluster", "every neuron cluster on its thread, compiled event loop", events=True),
    )
}
NAMES: tuple[str, ...] = tuple(TIERS)
# the fastest tier whose results agree with the most detailed one within 1% on every published
# point: the most detailed itself (docs/fidelity.md: analytic and layer each miss by up to 1.7% at
# full length, on T18.pi2, T2 and T7; the cluster tier costs ~4% more wall time than analytic
# for `pi2sim validate --set all`, and a third of the layer tier's)
DEFAULT = "cluster"


def describe() -> str:
    """``analytic (closed forms), layer (...) or cluster (...)``: for help texts."""
    parts = [f"{t.name} ({t.summary})" for t in TIERS.values()]
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def run_decode(name: str, device, plan, *, progress: bool = False, recorder=None, check: bool = False):
    """Run a decode plan on the named tier."""
    tier = TIERS[name]
    return importlib.import_module(tier.module).run_decode(device, plan, progress=progress, recorder=recorder, check=check)
