"""The Prefetched stage: a kernel that runs while reads it does not need are in flight, and the
next stage that does need them waits for both (SmallThinker's router before attention: the
chosen experts' matrices are read while attention computes)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..components import StageTime, busy_add
from .base import StageKind
from .compute import Compute
from .flash import Flash


@dataclass
class Prefetched(StageKind):
    """``compute`` and ``read`` start together; the stage ends when both have (the read on its
    own I/O thread and the device queue, the kernel on its pool). The kernel's time is compute;
    what the read takes beyond it is exposed I/O."""

    name: str
    compute: Compute
    read: Flash
    category: str = "compute"

    def closed_form(self, comp) -> StageTime:
        c = self.compute.closed_form(comp)
        f = self.read.closed_form(comp)
        total = np.maximum(c.total, f.total)
        io = np.maximum(f.total - c.total, 0.0)
        busy: dict = {}
        dram: dict = {}
        for part in (c, f):
            for k, v in part.busy.items():
                busy_add(busy, k, v)
            for k, v in part.dram.items():
                busy_add(dram, k, v)
        return StageTime(total, c.compute, io, c.other, busy, dram)

    def draw(self, rec, comp, t: int, l: int | None, start: float, total: float) -> None:
        ct = float(np.sum(self.compute.at(t, l).closed_form(comp).total))
        ft = float(np.sum(self.read.at(t, l).closed_form(comp).total))
        self.compute.draw(rec, comp, t, l, start, ct)
        self.read.draw(rec, comp, t, l, start, ft)

    def flash_traffic(self, shape):
        return self.read.flash_traffic(shape)
