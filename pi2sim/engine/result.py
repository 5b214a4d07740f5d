"""What every timing tier returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TimingResult:
    tier: str
    token_s: np.ndarray  # [T] decode latency of each token
    compute_s: np.ndarray  # [T] critical path: compute
    io_s: np.ndarray  # [T] critical path: exposed flash I/O (stall)
    other_s: np.ndarray  # [T] critical path: barriers, fixed costs, memory management
    stage_s: dict[str, np.ndarray] = field(default_factory=dict)  # stage name -> [T] seconds
    busy_s: dict[str, float] = field(default_factory=dict)  # resource -> busy seconds during decode
    dram_bytes: dict[str, float] = field(default_factory=dict)  # agent -> bytes moved during decode
    busy_token_s: dict[str, np.ndarray] = field(default_factory=dict)  # resource -> [T] busy seconds in each token (sums to busy_s)
    dram_token_bytes: dict[str, np.ndarray] = field(default_factory=dict)  # agent -> [T] bytes moved in each token (sums to dram_bytes)
    events: int = 0  # discrete events processed (event tiers)

    def check_split(self, rtol: float = 1e-6) -> None:
        total = self.compute_s + self.io_s + self.other_s
        if not np.allclose(total, self.token_s, rtol=rtol, atol=1e-12):
            raise AssertionError("critical-path split does not add up to the token latency")


@dataclass
class PrefillTiming:
    """The prompt pass (closed form, every tier: :func:`pi2sim.engine.analytic.run_prefill`)."""

    seconds: float
    split: dict[str, float]  # compute / io / other seconds
    busy_s: dict[str, float]  # resource -> busy seconds
    dram_bytes: dict[str, float] = field(default_factory=dict)  # agent -> bytes moved
