"""Helpers several policies share (public: a policy imports these, never another policy's privates)."""

from __future__ import annotations

from dataclasses import replace

from ..engine.compute import CpuPool
from ..errors import ConfigurationRefused


class EngineRefused(ConfigurationRefused):
    """The simulated engine would fail to start (out of memory, allocation limits)."""


def scaled_pool(pool: CpuPool, eff: float) -> CpuPool:
    """A pool whose cores run at ``eff`` of the device's kernel rates (engine-specific kernels)."""
    from ..specs.device import Core

    cores = tuple(
        Core(c.id, replace(c.cluster, matvec_int4_bps=c.cluster.matvec_int4_bps * eff, matvec_fp16_bps=c.cluster.matvec_fp16_bps * eff))
        for c in pool.cores
    )
    return replace(pool, cores=cores)
