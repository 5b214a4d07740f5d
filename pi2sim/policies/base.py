"""The policy interface: one inference engine's decisions, expressed for the shared simulator.

A policy decides *what* happens: what stays resident (:meth:`Policy.memory`), which weights each
token touches and where they come from (:meth:`Policy.access`, the clock-free access model), and
what work that becomes (:meth:`Policy.decode_plan`, :meth:`Policy.prefill_plan`). The timing
engine decides *how long* it takes, identically for every policy and tier.

To add a policy: write one module in ``pi2sim/policies/`` with a :class:`Policy` subclass, an
options dataclass (fields declared with :func:`~pi2sim.schema.spec_field`, giving defaults,
ranges and help) and the ``@register`` decorator. The registry imports every module of the
package, so nothing else needs editing. A policy of your own can stay outside the package: name
it ``path/to/file.py:ClassName``, or install it under the ``pi2sim.policies`` entry-point group
(:mod:`pi2sim.policies`; ``examples/pi2_perlayer.py`` is one). Everything of this class is the
contract: ``name``, ``summary``, ``Options`` (a dataclass whose fields all have defaults) and the
five abstract methods below, checked when the class is loaded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..engine.components import Components
from ..engine.plan import DecodePlan, PrefillPlan
from .memory import MemoryPlan, ModelBytes
from ..specs.device import DeviceSpec
from ..specs.model import ModelSpec
from ..specs.quant import QuantFormat


@dataclass
class RunContext:
    """Everything a policy may read: specs, sizes and the run's token counts."""

    device: DeviceSpec
    model: ModelSpec
    quant: QuantFormat
    sizes: ModelBytes
    components: Components
    prompt_tokens: int
    decode_tokens: int
    memory_gb: float | None
    ffn_offload: float | None
    seed: int
    context_stride: int = 1

    @property
    def context_tokens(self) -> int:
        """KV entries at the end of the run (what the KV cache must hold)."""
        return self.prompt_tokens + self.context_stride * self.decode_tokens

    def context_lengths(self) -> np.ndarray:
        """KV entries attended by each decoded token, shape [T]: the prompt plus the tokens before
        it and itself. With ``context_stride`` s each simulated token stands for s consecutive
        tokens and takes their mean context."""
        s = self.context_stride
        return self.prompt_tokens + s * np.arange(self.decode_tokens) + (s + 1) / 2


@dataclass
class AccessSummary:
    """Cache behaviour to report, whatever the policy's access model."""

    hit_rate: float  # share of needed FFN weights (activated neurons, pages) served from DRAM
    details: dict[str, Any]


class Policy(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]
    Options: ClassVar[type]
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    preset_help: ClassVar[dict[str, str]] = {}
    uses_trace: ClassVar[bool] = True  # replays neuron activity (False: dense engines)
    needs_activity: ClassVar[bool] = True  # needs which neurons fire (False: only an MoE model's routing, or nothing)
    default_quant: ClassVar[str] = "int4"  # the weight format a run uses when it names none (the engine's own)
    quant_formats: ClassVar[tuple[str, ...] | None] = None  # the formats the engine runs (None: any)

    def __init__(self, ctx: RunContext, options: Any):
        self.ctx = ctx
        self.opt = options

    # The interface, in the order a run calls it (pi2sim.simulation.run):
    #   memory()                       -> MemoryPlan   what is resident; the cache size (cache_units)
    #   access(workload, memory)       -> access       which weights each token touches, and from where
    #   (cache_request(workload, memory): the same as data, for a sweep's one-pass cache simulation)
    #   access_summary(access)         -> AccessSummary
    #   decode_plan(access, memory)    -> DecodePlan   the work, stage by stage, per token and layer
    #   prefill_plan(memory, access)   -> PrefillPlan
    # Each method takes what it needs as arguments and writes no state another method reads:
    # memory() is a function of the run context and the options (a policy may cache it), and the
    # other four are functions of their arguments, so any of them can be called again, or alone
    # (a planner may call memory() only; a test decode_plan() on a stored access result).

    @abstractmethod
    def memory(self) -> MemoryPlan:
        """Resident components and caches; raises ConfigurationRefused when the model cannot run."""

    @abstractmethod
    def access(self, workload, memory: MemoryPlan) -> Any:
        """Clock-free access model over the replayed tokens (vectorised numpy)."""

    def cache_request(self, workload, memory: MemoryPlan) -> Any:
        """The segmented-cache simulation :meth:`access` runs, as a
        :class:`pi2sim.access.segmented.CacheRequest`, or None if its access model is something
        else. A sweep collects its points' requests and runs those that share a replay (a memory
        sweep's) in one pass; the results are then memoised for :meth:`access`."""
        return None

    @abstractmethod
    def access_summary(self, access: Any) -> AccessSummary:
        """Hit rate and cache details for the report."""

    @abstractmethod
    def decode_plan(self, access: Any, memory: MemoryPlan) -> DecodePlan:
        """Per-layer / per-token work of decoding."""

    @abstractmethod
    def prefill_plan(self, memory: MemoryPlan, access: Any = None) -> PrefillPlan:
        """Layer-by-layer work of processing the prompt (``access``: the decode access result, for
        engines whose prompt pass depends on the cache state, e.g. llama.cpp's page cache)."""

    def sequences(self) -> int:
        """Sequences decoded together (Best-of-N); above one, the run replays the union of that
        many sequences' activity (:func:`pi2sim.access.workload.union_workload`)."""
        return 1

    def sequence_schedule(self, n_steps: int) -> np.ndarray:
        """[T] sequences alive at each decode step (used when :meth:`sequences` is above one)."""
        return np.ones(n_steps)

    def check(self, access: Any, plan: DecodePlan) -> None:
        """Policy-specific invariants between its access result and its plan (checking mode);
        raise :class:`pi2sim.engine.invariants.InvariantViolation`. Default: nothing beyond the generic checks."""

    def resolved_options(self) -> dict[str, Any]:
        from ..schema import to_dict

        return to_dict(self.opt)

    @classmethod
    def identity(cls) -> str:
        """What computed a result: the class (module and name) and a digest of the source files of
        every policy class it inherits from. A memo of a policy's own computation (PowerInfer-2's
        hot region) is keyed by it, so a subclass that overrides a step never reads its parent's
        result, nor the parent its subclass's, and an edited file never reads an old one."""
        hit = _IDENTITIES.get(cls)
        if hit is None:
            import hashlib
            import inspect

            h = hashlib.blake2b(f"{cls.__module__}.{cls.__qualname__}".encode(), digest_size=16)
            for k in cls.__mro__:
                if isinstance(k, type) and issubclass(k, Policy) and k is not Policy:
                    try:
                        h.update(open(inspect.getsourcefile(k), "rb").read())
                    except (TypeError, OSError):  # defined interactively: its name is all there is
                        h.update(k.__qualname__.encode())
            hit = _IDENTITIES[cls] = h.hexdigest()
        return hit


_IDENTITIES: dict[type, str] = {}
