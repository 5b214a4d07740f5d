"""Shared DRAM bandwidth: processor sharing with a cap per agent.

All processors share one LPDDR bus (unified memory). PowerInfer-2 measured on a 7B matmul
(v3 §2.3.1): CPU alone 43.9 GB/s, NPU alone 56 GB/s, both together 59.6 GB/s: no single agent
saturates the bus, and two together reach more than either. The model:

* each agent has its own cap (``bw_cpu``, ``bw_npu``, ``bw_gpu``) and asks for a demand (its
  compute-limited streaming rate; at most its cap);
* the total is capped by ``bw_cpu_npu`` when the CPU and NPU are both active, by the largest
  single-agent cap otherwise;
* bandwidth is allocated max-min fairly (water-filling) under both caps.

Flash DMA is extra traffic of a few hundred MB/s to a few GB/s; it is counted as an agent with
demand equal to the read rate (agent ``dma``, uncapped except by the total).

:func:`allocate` is the one allocation rule; :func:`concurrent_time` the closed form the analytic
tier uses for two concurrent streams; :class:`pi2sim.engine.fluid_bus.FluidBus` the SimPy component
the layer tier uses (apart, so that the closed forms do not import SimPy).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..specs.device import Dram


@dataclass(frozen=True)
class DramModel:
    spec: Dram

    def agent_cap(self, agent: str) -> float:
        s = self.spec
        return {"cpu": s.bw_cpu_bps, "npu": s.bw_npu_bps, "gpu": s.bw_gpu_bps, "dma": s.bw_theoretical_bps}[agent]

    def total_cap(self, agents) -> float:
        s = self.spec
        agents = set(agents)
        if {"cpu", "npu"} <= agents or {"cpu", "gpu"} <= agents or {"npu", "gpu"} <= agents:
            return s.bw_cpu_npu_bps
        if not agents - {"dma"}:
            return s.bw_theoretical_bps
        return max(self.agent_cap(a) for a in agents if a != "dma")

    def allocate(self, demands: Mapping[str, float]) -> dict[str, float]:
        """Max-min fair rates for ``demands`` (agent -> wanted bytes/s)."""
        active = {a: min(d, self.agent_cap(a)) for a, d in demands.items() if d > 0}
        if not active:
            return {}
        remaining = self.total_cap(active)
        rates: dict[str, float] = {}
        todo = dict(active)
        while todo:
            share = remaining / len(todo)
            small = {a: d for a, d in todo.items() if d <= share}
            if not small:
                for a in todo:
                    rates[a] = share
                break
            for a, d in small.items():
                rates[a] = d
                remaining -= d
                del todo[a]
        return rates

    def solo_rate(self, agent: str, demand):
        """Rate one agent gets alone (vectorised over ``demand``)."""
        cap = min(self.agent_cap(agent), self.total_cap({agent}))
        return np.minimum(np.asarray(demand, dtype=np.float64), cap) if np.ndim(demand) else min(float(demand), cap)

    def pair_rates(self, agent_a: str, demand_a, agent_b: str, demand_b):
        """:meth:`allocate` for two agents, vectorised over the demands."""
        da = np.minimum(np.asarray(demand_a, dtype=np.float64), self.agent_cap(agent_a))
        db = np.minimum(np.asarray(demand_b, dtype=np.float64), self.agent_cap(agent_b))
        total = self.total_cap({agent_a, agent_b})
        half = total / 2
        over = da + db > total
        ra = np.where(over, np.where(da <= half, da, np.where(db <= half, total - db, half)), da)
        rb = np.where(over, np.where(db <= half, db, np.where(da <= half, total - da, half)), db)
        return ra, rb

    def concurrent_time(self, work_a: np.ndarray, demand_a, agent_a: str, work_b: np.ndarray, demand_b, agent_b: str):
        """Finish time of two concurrent streams of ``work`` bytes (vectorised), fluid sharing.

        Both run at their shared rates until one finishes; the other continues at its solo rate.
        Returns (time_a, time_b).
        """
        work_a = np.asarray(work_a, dtype=np.float64)
        work_b = np.asarray(work_b, dtype=np.float64)
        ra, rb = self.pair_rates(agent_a, demand_a, agent_b, demand_b)
        sa, sb = self.solo_rate(agent_a, demand_a), self.solo_rate(agent_b, demand_b)
        ta_shared = work_a / ra
        tb_shared = work_b / rb
        a_first = ta_shared <= tb_shared
        # a finishes first: b has done rb * ta of its work, then runs solo
        tb_if = ta_shared + np.maximum(work_b - rb * ta_shared, 0.0) / sb
        ta_if = tb_shared + np.maximum(work_a - ra * tb_shared, 0.0) / sa
        time_a = np.where(work_b <= 0, work_a / sa, np.where(a_first, ta_shared, ta_if))
        time_b = np.where(work_a <= 0, work_b / sb, np.where(a_first, tb_if, tb_shared))
        return np.where(work_a > 0, time_a, 0.0), np.where(work_b > 0, time_b, 0.0)


    def staggered_time(self, work_a, demand_a, agent_a: str, start_a: float, work_b, demand_b, agent_b: str, start_b: float):
        """Like :meth:`concurrent_time`, but stream a starts at ``start_a`` and b at ``start_b``
        (seconds after the stage begins, e.g. an NPU call's fixed cost, which moves no DRAM bytes).
        The earlier stream runs alone until the later one starts. Returns finish times (a, b)
        measured from the stage start; a stream with no work finishes at 0."""
        wa = np.asarray(work_a, dtype=np.float64)
        wb = np.asarray(work_b, dtype=np.float64)
        swap = start_b < start_a
        if swap:
            wa, wb = wb, wa
            demand_a, demand_b, agent_a, agent_b, start_a, start_b = demand_b, demand_a, agent_b, agent_a, start_b, start_a
        gap = start_b - start_a
        sa = self.solo_rate(agent_a, demand_a)
        rem_a = np.maximum(wa - sa * gap, 0.0)
        ta_shared, tb_shared = self.concurrent_time(rem_a, demand_a, agent_a, wb, demand_b, agent_b)
        ta = np.where(rem_a > 0, gap + ta_shared, wa / sa) + start_a
        tb = start_b + tb_shared
        ta = np.where(wa > 0, ta, 0.0)
        tb = np.where(wb > 0, tb, 0.0)
        return (tb, ta) if swap else (ta, tb)
