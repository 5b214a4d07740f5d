"""LLM in a Flash (Apple, arXiv 2312.11514), as PowerInfer-2's authors ported it to the phone.

* **Resident:** embeddings, attention, LM head, KV cache and the low-rank predictors. FFN neurons
  live in a preallocated per-layer buffer in the remaining memory.
* **Which neurons stay:** the buffer keeps the neurons predicted in the last ``window_k`` tokens
  (LLM in a Flash's sliding window), within the memory it is given. PowerInfer-2's port, "with
  sparsity prediction, row-column bundling and neuron caching" (v3 §7.1), "still fetches about
  10% of activated neurons from flash, even with its neuron cache" (v3 §7.2.1); a window of 12
  does that (8% on TurboSparse-Mistral-7B at 50% offload), hence the default (``preset=port``).
  The Apple paper's own window is 5 (``preset=paper``). ``cache: lru`` keeps neurons by recency
  in all the memory given: on a trace with dead neurons (TurboSparse-Mixtral) such a cache holds
  every neuron that fires once memory passes the live share, and fetches ~1% at 16 GB, which
  the port's measured speeds rule out (T15, T17: 3-4x too fast). On a mixture-of-experts model
  the window counts each expert's own routings (``window_k * experts / top_k`` tokens on
  average: top-2 of 8 routes each expert about a quarter of the tokens), so an expert's neurons
  are not dropped merely because the router did not pick it for a few tokens; the window's
  union grows with that, so the port still uses more memory as it is given more (T15).
* **Reads:** predicted neurons missing from the buffer are read whole (row-column bundles: one
  request per neuron; without bundles one per matrix) by ``read_threads`` parallel readers,
  which all issue to the single UFS queue. No neuron-cluster pipelining: a layer reads, then
  reorganises its buffer, then computes.
* **Memory management:** deleting a neuron moves the last live row into its slot (a copy of one
  neuron) plus bookkeeping; LLM in a Flash measured 65 ms per token on an M1 Max for OPT-6.7B
  (window 5, ~25K neurons added and removed per token), i.e. ~2.6 us per neuron.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..access import segmented
from ..access.workload import Workload, neuron_frequencies
from ..engine.compute import CpuPool, pick_cores
from ..engine.plan import Compute, DecodePlan, Flash, PrefillPlan
from .memory import MemoryPlan, budget_from, sparse_resident
from ..schema import spec_field
from ..specs.quant import bundle_layout
from . import register
from .base import AccessSummary, Policy
from ._common import scaled_pool


@dataclass(frozen=True, kw_only=True)
class LLMFlashOptions:
    cache: Literal["lru", "window"] = spec_field(
        default="window", help="window: neurons kept while predicted in the last window_k tokens, within the buffer (LLM in a Flash); lru: kept by recency in all the memory given"
    )
    window_k: int = spec_field(
        default=12, lo=1, hi=1024,
        help="cache=window: tokens in the sliding window (derived: the port fetches ~10% of activated neurons from flash, PI2 v3 §7.2.1; "
        "12 gives 8% on TurboSparse-Mistral-7B at 50% offload. The Apple paper uses 5 on OPT-6.7B, preset=paper)",
    )
    bundle: bool = spec_field(default=True, help="row-column bundles: one read per neuron (else one per matrix)")
    read_threads: int = spec_field(default=3, lo=1, hi=32, help="parallel reader threads, issuing from as many cores (fitted to T11b and T15-T17; bounds: 1..4)")
    compute_threads: int = spec_field(default=4, lo=1, hi=16, help="compute threads")
    compute_cores: str = spec_field(default="auto", help="'auto' or core ids / cluster names")
    kernel_efficiency: float = spec_field(default=1.0, gt=0.0, hi=1.0, help="dense kernel speed relative to the device's best INT4 rate")
    predictor_recall: float = spec_field(default=1.0, gt=0.0, hi=1.0, help="share of active neurons predicted (assumption)")
    predictor_precision: float = spec_field(default=0.8, gt=0.0, hi=1.0, help="share of predicted neurons truly active (assumption, as PowerInfer-2)")
    mm_per_neuron: float = spec_field(
        default=2.6e-6, unit="time", lo=0.0, hi=1e-3,
        help="memory-management CPU cost per neuron removed from the buffer (derived: 65 ms / ~25K neurons, LLM in a Flash §4.1)",
    )


@register
class LLMInAFlash(Policy):
    name = "llm-in-a-flash"
    quant_formats = ("int4", "int8", "fp16")  # its own neuron-bundle formats (PI2 §4.4); another engine's file format is refused
    summary = "LLM in a Flash: predictor + sliding-window/LRU neuron buffer, row-column bundles, parallel reads, no pipelining"
    Options = LLMFlashOptions
    presets = {"port": {"cache": "window", "window_k": 12}, "paper": {"cache": "window", "window_k": 5}, "lru": {"cache": "lru"}}
    preset_help = {
        "port": "PowerInfer-2's port (the default): a 12-token window, which fetches ~10% of activated neurons from flash as the paper says",
        "paper": "the Apple paper's design: a sliding window of 5 tokens decides what stays",
        "lru": "a neuron cache kept by recency in all the memory given (no window)",
    }

    def __init__(self, ctx, options):
        super().__init__(ctx, options)
        d = ctx.device
        cores = pick_cores(d, options.compute_cores, options.compute_threads)
        self.pool = scaled_pool(CpuPool(cores, "dynamic", d.cpu.sparse_efficiency, d.cpu.barrier_s), options.kernel_efficiency)
        readers = pick_cores(d, "auto", options.read_threads, what="read_threads")
        self.readers = readers
        a = ctx.model.architecture
        self.layout = bundle_layout(ctx.quant, a.hidden, a.matrices_per_neuron, options.bundle, d.storage.read_unit_bytes)
        self.sizes = ctx.sizes
        self._mem: MemoryPlan | None = None

    def neuron_bytes(self) -> float:
        s = self.sizes
        return s.neuron_weight_bytes() + s.neuron_scale_bytes()

    def memory(self) -> MemoryPlan:
        if self._mem is not None:
            return self._mem
        ctx, s = self.ctx, self.sizes
        comps = sparse_resident(s, ctx.context_tokens, ctx.prompt_tokens)
        fixed = sum(comps.values())
        ffn = s.ffn_neurons_total() * self.neuron_bytes()
        budget, avail = budget_from(ctx.memory_gb, ctx.ffn_offload, fixed, ffn, ctx.device.dram.app_usable_bytes, ctx.device.name)
        n = int(min(avail, ffn) // self.neuron_bytes())
        plan = MemoryPlan(budget=budget, components=comps, neuron_cache=n * self.neuron_bytes(), cache_units=n)
        plan.notes.append(f"neuron buffer holds {n} of {s.ffn_neurons_total()} FFN neurons ({100 * n / s.ffn_neurons_total():.1f}%)")
        self._mem = plan
        return plan

    def cache_request(self, workload: Workload, memory: MemoryPlan) -> segmented.CacheRequest:
        freqs = neuron_frequencies(workload)
        none_hot = np.zeros(freqs.shape, bool)
        o = self.opt
        # the window only governs a buffer smaller than the FFN: with every weight in DRAM there is
        # no flash tier and nothing is dropped
        capacity = memory.cache_units
        fits = capacity >= self.sizes.ffn_neurons_total()
        window = self.window_tokens() if (o.cache == "window" and not fits) else None
        # a windowed buffer starts with what the prompt's last window of tokens used, not full
        return segmented.CacheRequest(
            workload, freqs, none_hot, capacity, recall=o.predictor_recall, precision=o.predictor_precision,
            seed=self.ctx.seed, warm="window" if window else "profile", window=window,
        )

    def access(self, workload: Workload, memory: MemoryPlan) -> segmented.NeuronAccess:
        return segmented.run(self.cache_request(workload, memory))

    def window_tokens(self) -> int:
        """The window in tokens. On a mixture-of-experts model it counts each expert's own routed
        tokens: an expert serves top_k / experts of the tokens, so k of its routings span
        k * experts / top_k tokens on average, and an expert's neurons are not dropped merely
        because the router did not pick it for a few tokens."""
        a = self.ctx.model.architecture
        if not a.is_moe:
            return self.opt.window_k
        return int(round(self.opt.window_k * a.experts / a.top_k))

    def access_summary(self, acc: segmented.NeuronAccess) -> AccessSummary:
        T = max(1, acc.tp.shape[0])
        return AccessSummary(
            hit_rate=acc.hit_rate,
            details={
                "active_neurons_per_token": float(acc.active.sum() / T),
                "loaded_neurons_per_token": float((acc.tp_miss.sum() + acc.fp_miss.sum()) / T),
                "removed_neurons_per_token": float(acc.evicted.sum() / T),
                "buffer_capacity_neurons": acc.cold_capacity,
            },
        )

    def decode_plan(self, acc: segmented.NeuronAccess, memory: MemoryPlan) -> DecodePlan:
        ctx, s, o = self.ctx, self.sizes, self.opt
        a = ctx.model.architecture
        T, L = acc.tp.shape
        dtype = ctx.quant.compute_dtype
        bpw = ctx.quant.dram_bytes_per_weight()
        mat = a.hidden * bpw
        ctxlen = ctx.context_lengths()[:, None]
        attn = s.attention_per_layer() + s.kv_per_token_layer(ctxlen)
        pred = np.full((T, L), s.predictor_per_token_layer() + s.router_per_layer())
        loaded = acc.tp_miss + acc.fp_miss
        reqs_per_neuron = len(self.layout.whole_reads) if o.bundle else len(self.layout.gate_reads) + len(self.layout.ud_reads)
        req_size = float(self.layout.bundle_bytes if o.bundle else self.layout.whole_reads[0])
        if o.bundle:
            reqs_per_neuron = 1  # the whole bundle in one request (LLM in a Flash reads large chunks)
        requests = loaded * reqs_per_neuron
        routed = a.top_k if a.is_moe else 1
        span = np.full((T, L), routed * a.ffn_neurons * self.layout.bundle_bytes)
        readers = self.readers
        cls = readers[-1].core_class  # the slowest reader sets the pace of blocking reads
        predicted = acc.tp + acc.fp
        ffn_bytes = predicted * (mat if a.gated_ffn else 0.0) + acc.tp * 2 * mat
        mm_bytes = acc.evicted * self.neuron_bytes()
        stages = [
            Compute("attention", "cpu", attn, "matvec", self.pool, dtype),
            Compute("predictor", "cpu", pred, "matvec", self.pool, dtype),
            Flash("load", requests.astype(float), req_size, span, cls, tuple(c.id for c in readers), qd=len(readers), n_issuers=len(readers)),
            Compute("memory_management", "cpu", mm_bytes, "memcpy", self.pool, dtype, category="other", fixed_s=0.0),
            Compute("ffn", "cpu", ffn_bytes, "sparse", self.pool, dtype, density=predicted / float(routed * a.ffn_neurons)),
        ]
        # bookkeeping per removed neuron, spread over the compute threads
        stages.insert(4, Compute("mm_bookkeeping", "cpu", acc.evicted * o.mm_per_neuron, "cpu_seconds", self.pool, dtype, category="other", barrier=False))
        token = [Compute("lm_head", "cpu", np.full(T, s.lm_head()), "matvec", self.pool, dtype)]
        flash_bytes = (requests * req_size).sum(axis=1)
        plan = DecodePlan(T, L, stages, token, flash_bytes=flash_bytes.astype(float), flash_reads=requests.sum(axis=1).astype(float))
        plan.validate()
        return plan

    def prefill_plan(self, memory: MemoryPlan, access=None) -> PrefillPlan:
        from .dense import cpu_prefill

        return cpu_prefill(self.ctx, self.pool, resident_share=min(1.0, memory.cache_units / max(1, self.sizes.ffn_neurons_total())), bundle_bytes=self.layout.bundle_bytes)
