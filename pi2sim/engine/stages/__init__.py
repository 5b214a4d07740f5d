"""The stage kinds a plan is made of, one module each (see :mod:`pi2sim.engine.stages.base` for
what a kind provides). Adding a kind: a module with its dataclass and methods, and its entry in
:data:`Stage` below."""

from __future__ import annotations

import typing

from .base import StageKind, value_at
from .compute import Compute, Op, Unit
from .faults import Faults
from .flash import Flash
from .neuron_pipeline import NeuronPipeline
from .prefetched import Prefetched

Stage = Compute | Flash | NeuronPipeline | Faults | Prefetched
KINDS: tuple[type[StageKind], ...] = typing.get_args(Stage)  # every kind, for tests and docs

__all__ = ["KINDS", "Compute", "Faults", "Flash", "NeuronPipeline", "Op", "Prefetched", "Stage", "StageKind", "Unit", "value_at"]
