"""The Flash stage: reads that block the next stage (e.g. LLM in a Flash's parallel reads,
prefill's layer loads)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..components import StageTime, busy_add, zeros_like
from .base import StageKind, value_at


@dataclass
class Flash(StageKind):
    name: str
    requests: np.ndarray  # request count per [T, L] or [T]
    size: float  # bytes per request
    span: np.ndarray | float  # address span the requests cover (bytes)
    issuer_class: str  # core class paying the issue cost
    issuer_cores: tuple[str, ...]  # for utilisation accounting
    qd: int = 32
    n_issuers: int = 1
    sequential: bool = False
    category: str = "io"

    def closed_form(self, comp) -> StageTime:
        f = self
        n = np.asarray(f.requests, dtype=np.float64)
        t = comp.ufs.batch_time(n, f.size, f.span, f.issuer_class, f.qd, f.n_issuers, f.sequential)
        busy: dict[str, np.ndarray] = {}
        svc = comp.ufs.service_time(f.size, f.span, f.sequential)
        busy_add(busy, "ufs", n * svc)
        for cid in f.issuer_cores:
            busy_add(busy, cid, comp.ufs.issuer_busy(n, f.issuer_class) / max(1, len(f.issuer_cores)))
        dram = {"dma": n * f.size}
        z = zeros_like(t)
        return StageTime(t, z, t, z.copy(), busy, dram)

    def simulate(self, eng, t: int, l: int | None):
        f = self
        n = value_at(f.requests, t, l)
        if n <= 0:
            return 0.0, 0.0, 0.0
        span = value_at(f.span, t, l) if np.ndim(f.span) else float(f.span)
        ufs = eng.comp.ufs
        dt = float(ufs.batch_time(n, f.size, span, f.issuer_class, f.qd, f.n_issuers, f.sequential))
        eng.add_busy("ufs", n * float(ufs.service_time(f.size, span, f.sequential)))
        for cid in f.issuer_cores:
            eng.add_busy(cid, float(ufs.issuer_busy(n, f.issuer_class)) / max(1, len(f.issuer_cores)))
        yield eng.env.timeout(dt)
        eng.events += 1
        if eng.rec is not None:
            now = eng.env.now
            for cid in f.issuer_cores:
                eng.rec.on_core(cid, f"{f.name}: issue {int(n)} reads", now - dt, now, token=t, layer=l)
            eng.rec.ufs_batch(f"{f.name}: {int(n)} x {f.size / 1024:g} KiB", now - dt, now, token=t, layer=l)
        return dt, 0.0, 0.0

    def draw(self, rec, comp, t: int, l: int | None, start: float, total: float) -> None:
        n = value_at(self.requests, t, l)
        if n > 0:
            for cid in self.issuer_cores:
                rec.on_core(cid, f"{self.name}: issue {int(n)} reads", start, start + total, token=t, layer=l)
            rec.ufs_batch(f"{self.name}: {int(n)} x {self.size / 1024:g} KiB", start, start + total, token=t, layer=l)

    def flash_traffic(self, shape):
        n = np.broadcast_to(self.requests, shape)
        return n * self.size, n
