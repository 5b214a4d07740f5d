"""The work plan: what a policy asks the timing engine to execute.

A policy turns specs and access results into a plan; every tier of the engine (analytic,
layer-level SimPy, cluster-level SimPy) executes the same plan, so policies never implement
timing themselves. Amounts are numpy arrays over decode tokens and layers ``[T, L]`` (or
``[T]`` for per-token stages), which keeps the analytic tier vectorised.

Stage kinds (one module each in :mod:`pi2sim.engine.stages`, which carries its closed form, its
layer-tier process, its timeline slices and its flash accounting; re-exported here):

* :class:`Compute`: a kernel on a CPU pool, the NPU or the GPU, optionally with a second kernel in
  parallel on another unit (CPU + NPU split).
* :class:`Flash`: reads that block the next stage (e.g. LLM in a Flash's parallel reads).
* :class:`NeuronPipeline`: the FFN of a sparse, partly cached layer, hit and missed neurons and
  their flash requests, in one of four overlap modes (PowerInfer-2's neuron-cluster pipeline and
  three simpler ones).
* :class:`Faults`: demand paging (mmap): compute that stalls on page faults served by the
  compute threads themselves.
* :class:`Prefetched`: a kernel with reads in flight beside it that the next stage needs
  (SmallThinker's expert prefetch during attention).

Each stage names a breakdown category for the critical path: ``compute``, ``io`` (exposed flash
time) or ``other`` (barriers, memory management, fixed costs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .stages import Compute, Faults, Flash, NeuronPipeline, Op, Prefetched, Stage, Unit, value_at

__all__ = ["Compute", "DecodePlan", "Faults", "Flash", "NeuronPipeline", "Op", "Prefetched", "PrefillPlan", "Stage", "Unit", "value_at"]


@dataclass
class DecodePlan:
    """Per-layer stages (run in order for every layer of every token) and per-token stages."""

    n_tokens: int
    n_layers: int
    layer_stages: list[Stage]
    token_stages: list[Stage] = field(default_factory=list)
    flash_bytes: np.ndarray | None = None  # [T] bytes read from flash (for reporting)
    flash_reads: np.ndarray | None = None  # [T] requests
    dram_resident_bytes: np.ndarray | None = None  # [T, L] DRAM the engine holds during each layer (timelines, checks)
    speculation: dict | None = None  # speculative decoding: draft model, draft tokens, acceptance, tokens per step (report)
    batch: np.ndarray | None = None  # [T] sequences decoded together in each step (Best-of-N); None: one

    def validate(self) -> None:
        T, L = self.n_tokens, self.n_layers
        for st in self.layer_stages:
            for name, arr in st.arrays():
                if np.shape(arr) not in ((T, L), (), (1,)):
                    raise ValueError(f"stage {st.name}: {name} has shape {np.shape(arr)}, expected {(T, L)}")
        for st in self.token_stages:
            for name, arr in st.arrays():
                if np.shape(arr) not in ((T,), (), (1,)):
                    raise ValueError(f"token stage {st.name}: {name} has shape {np.shape(arr)}, expected {(T,)}")


@dataclass
class PrefillPlan:
    """Layer-by-layer prefill: per layer, weights to stream from flash (by the loader core, for
    the next layer while this one computes when ``pipelined``) and the dense compute."""

    n_layers: int
    prompt_tokens: int
    load: Flash | None  # per layer [L]; None if everything is resident
    compute: list[Compute]  # per layer [L] each, run in order within a layer
    head: list[Compute]  # once, after the last layer
    pipelined: bool = True
