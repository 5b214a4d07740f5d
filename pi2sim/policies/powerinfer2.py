"""PowerInfer-2 (arXiv 2406.06282): the reference policy.

Mechanisms (design doc PI2, docs/sources.md §A), each a switch for the ablation:

* **Segmented neuron cache** (§6): fixed region (attention, embeddings, KV, predictors, scales,
  runtime), a *hot* region of the profile's hottest neurons, a *cold* per-neuron LRU. Without it
  (``neuron_cache: none``, the ablation's first two steps) the DRAM share of the FFN is a fixed set
  of neurons chosen without any activation profile (the first neurons of every layer);
  ``static`` keeps the profile's hottest neurons and nothing else (PowerInfer v1's split).
* **Bundles and two-phase loading** (§7): Gate/Up/Down of a neuron stored together (INT4: 8 KB
  read as two 4 KB reads); the Up/Down part is read only if the Gate output is non-zero.
  Without bundles each matrix-neuron is a separate read.
* **Neuron-cluster pipeline** (§8): one I/O thread and N compute threads; clusters of cached
  neurons compute while missing ones load, with no barrier between matrices (``cluster``);
  ``matrix`` keeps the barrier at each matrix boundary; ``sync`` has the compute threads block
  on their own reads (no I/O thread).
* **Decode** (§4): ``cpu`` (v1, CPU-centric: attention, predictor and all FFN clusters on the
  CPU threads) or ``hybrid`` (v3: the NPU computes each layer's hot rows densely while the CPU
  computes predicted cold neurons; attention heads split between NPU and CPU).
* **Prefill** (§4.1): the NPU runs every layer densely (no predictor); a big core preloads the
  next layer's offloaded weights with large sequential reads while the current layer computes.

Presets: ``v1`` and ``v3`` follow the two paper versions; ``baseline``, ``+bundle``, ``+cache``,
``+pipeline``, ``+xpu`` are the cumulative steps of the paper's ablation (v3 §7.5, Fig. 14).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .. import diskcache
from ..access import memo, segmented
from ..access.workload import Workload, hottest_first, neuron_frequencies
from ..engine.compute import CpuPool, pick_cores
from ..engine.plan import Compute, DecodePlan, Flash, NeuronPipeline, PrefillPlan
from ..errors import ConfigurationRefused, InputError
from .memory import MemoryPlan, budget_from, sparse_resident
from ..schema import spec_field
from ..specs.quant import bundle_layout
from . import register
from ._common import batch_schedule, options_in_use
from .base import AccessSummary, Policy

PREFILL_READ_BYTES = 512 * 1024  # large reads for layer preloading (PI2 §4.1.1; 512 KB reach 3.5-4 GB/s, §2.3.2)


@dataclass(frozen=True, kw_only=True)
class PowerInfer2Options:
    decode: Literal["cpu", "hybrid"] = spec_field(default="cpu", help="cpu: v1 CPU-centric decoding; hybrid: v3 CPU+NPU row split")
    bundle: bool = spec_field(default=True, help="store Gate/Up/Down of a neuron as one bundle on flash")
    two_phase: bool = spec_field(default=True, help="read the Up/Down part only when the Gate output is non-zero")
    neuron_cache: Literal["segmented", "static", "none"] = spec_field(
        default="segmented",
        help="segmented: hot region + per-neuron LRU cold region; static: the profile's hottest neurons only; none: a fixed share of each layer's neurons, chosen without a profile",
    )
    pipeline: Literal["cluster", "matrix", "sync", "serial"] = spec_field(
        default="cluster",
        help="cluster: neuron-cluster pipeline with one I/O thread; matrix: barrier per matrix; sync: compute threads block on reads; serial: one async reader, then compute",
    )
    compute_threads: int = spec_field(default=4, lo=1, hi=16, help="CPU compute threads beside the I/O thread (PI2 Fig. 6 uses 4)")
    sync_threads: int = spec_field(
        default=6, lo=1, hi=16,
        help="pipeline=sync: threads that compute and block on their own reads; with no I/O thread they may use "
        "the I/O core too (6: the big cores, PI2 Fig. 3-a's sparse-compute configuration)",
    )
    compute_cores: str = spec_field(default="auto", help="'auto' (fastest cores other than the I/O core) or core ids / cluster names")
    io_core: str = spec_field(default="prime0", help="core of the I/O thread (PI2: the big core gives the best 4 KB reads, Table 1)")
    io_thread: Literal["auto", "always"] = spec_field(
        default="auto",
        help="auto: an I/O thread only when part of the FFN is in flash (in memory its core computes too); always: keep it idle in memory as well",
    )
    cluster_neurons: int = spec_field(default=32, lo=1, hi=8192, help="neurons per cluster of the CPU pipeline")
    hot_fraction: float = spec_field(default=0.5, lo=0.0, hi=1.0, help="share of the neuron cache given to the hot region (cpu decode)")
    npu_row_share: float = spec_field(
        default=0.5, lo=0.0, hi=1.0,
        help="hybrid: share of each layer's FFN rows the NPU computes densely (batch 1: 50/50, PI2 §4.1.2), capped at hot_fraction of the cache",
    )
    attention: Literal["cpu", "npu", "split"] = spec_field(default="cpu", help="where decode attention runs (hybrid: split)")
    attention_npu_share: float = spec_field(default=0.5, lo=0.0, hi=1.0, help="split attention: share of heads on the NPU")
    predictor_recall: float = spec_field(default=1.0, gt=0.0, hi=1.0, help="share of active neurons the predictor finds (assumption)")
    predictor_precision: float = spec_field(
        default=0.8, gt=0.0, hi=1.0, help="share of predicted neurons truly active (0.8: PI2 §4.4, ~20% of bundles not co-activated)"
    )
    scale_placement: Literal["dram", "in_bundle"] = spec_field(
        default="dram", help="FFN quantization scales resident in DRAM (PI2 §7.2.3) or only inside flash bundles"
    )
    prefill: Literal["npu", "cpu"] = spec_field(default="npu", help="processor of the dense prefill")
    prefill_loader_core: str = spec_field(default="prime0", help="core that preloads the next layer during prefill (v3: one big core)")
    prefill_overlap: bool = spec_field(
        default=False,
        help="prefill: load layer i+1's offloaded weights while the NPU computes layer i (the v3 design's claim). "
        "Off by default, fitted to T12c: the measured 404.6 tok/s at 50% offload (vs 721 in memory) is what loads "
        "and NPU compute in series give",
    )
    cache_warmup: Literal["profile", "empty"] = spec_field(
        default="profile", help="cold region at the start: the next-hottest neurons (planner preload) or empty"
    )
    best_of: int = spec_field(default=1, lo=1, hi=16, help="Best-of-N: candidates decoded together after one prefill (--best-of); the access model replays their union")
    drop_every: int = spec_field(default=4, lo=1, hi=1_000_000, help="Best-of-N: a candidate finishes every this many steps (PI2 v3 §7.4: 4)")
    npu_row_share_batched: float = spec_field(
        default=0.7, lo=0.0, hi=1.0,
        help="hybrid, Best-of-N: the NPU's row share at batch 4 and more (PI2 §4.1.2: ~70% at large batch; linear from npu_row_share at batch 1)",
    )

    def validate(self, source) -> None:
        if self.decode == "cpu" and self.attention != "cpu":
            raise InputError(source, "attention", "'cpu' when decode is 'cpu' (v1 decodes on the CPU only)", self.attention)


@register
class PowerInfer2(Policy):
    name = "powerinfer2"
    quant_formats = ("int4", "int8", "fp16")  # its own neuron-bundle formats (PI2 §4.4); another engine's file format is refused
    summary = "PowerInfer-2: segmented neuron cache, bundles + two-phase loads, neuron-cluster pipeline, NPU prefill"
    Options = PowerInfer2Options
    presets = {
        "v1": {"decode": "cpu", "attention": "cpu"},
        "v3": {"decode": "hybrid", "attention": "split"},
        "baseline": {
            "decode": "cpu", "attention": "cpu", "bundle": False, "two_phase": False, "neuron_cache": "none", "pipeline": "sync",
        },
        "+bundle": {"decode": "cpu", "attention": "cpu", "bundle": True, "two_phase": False, "neuron_cache": "none", "pipeline": "sync"},
        "+cache": {"decode": "cpu", "attention": "cpu", "bundle": True, "two_phase": True, "neuron_cache": "segmented", "pipeline": "sync"},
        "+pipeline": {"decode": "cpu", "attention": "cpu", "neuron_cache": "segmented", "pipeline": "cluster"},
        "+xpu": {"decode": "hybrid", "attention": "split", "neuron_cache": "segmented", "pipeline": "cluster"},
    }
    preset_help = {
        "v1": "paper v1: CPU-centric decoding",
        "v3": "paper v3: hybrid CPU+NPU decoding, attention split",
        "baseline": "ablation step 1: CPU only, no bundles, no neuron cache (a fixed share of neurons resident), compute threads block on reads",
        "+bundle": "ablation step 2: + Gate/Up/Down bundles, each read whole (its two 4 KB parts in flight together)",
        "+cache": "ablation step 3: + segmented neuron cache (hot region + cold LRU) and two-phase loading (interpretation, experiments/paper/README.md)",
        "+pipeline": "ablation step 4: + neuron-cluster pipeline with one I/O thread",
        "+xpu": "ablation step 5: + hybrid CPU/NPU decoding (= v3)",
    }
    ABLATION = ("baseline", "+bundle", "+cache", "+pipeline", "+xpu")

    def __init__(self, ctx, options):
        super().__init__(ctx, options)
        d = ctx.device
        o = options
        a = ctx.model.architecture
        self.layout = bundle_layout(ctx.quant, a.hidden, a.matrices_per_neuron, o.bundle, d.storage.read_unit_bytes)
        self.sizes = ctx.sizes
        self._mem: MemoryPlan | None = None
        self.io_core = d.core(o.io_core)
        # With the whole FFN in DRAM nothing is read during decoding, so there is no I/O thread to
        # keep: its core computes too (PI2's offline planner picks the threads per configuration,
        # v3 §5; an in-memory run that idles the X4 would be 25% slower, docs/sources.md §C T18)
        self.io_thread = o.io_thread == "always" or not self._ffn_fits()
        if o.pipeline == "sync":  # no I/O thread: every thread computes and reads for itself
            cores = pick_cores(d, o.compute_cores, o.sync_threads)
        elif self.io_thread:
            cores = pick_cores(d, o.compute_cores, o.compute_threads, exclude=(o.io_core,))
        elif o.compute_cores == "auto":
            cores = pick_cores(d, "auto", o.compute_threads + 1)
        else:  # the user's own cores, as given
            cores = pick_cores(d, o.compute_cores, o.compute_threads)
        self.pool = CpuPool(cores, "dynamic", d.cpu.sparse_efficiency, d.cpu.barrier_s)
        # a decode-time NPU call: submit the graph, then the CPU waits for its result in the layer
        if o.prefill == "npu" or o.decode == "hybrid" or o.attention != "cpu":  # QNN graphs: a Hexagon NPU (PI2 §4.1)
            try:
                d.require_npu(self.name)
            except InputError as exc:
                raise type(exc)(None, self.name, f"{exc.expected}; or run it on the CPU alone: --set prefill=cpu --set preset=v1") from None
        self.npu_call_s = (d.npu.invocation_s + d.npu.sync_s) if d.npu is not None else 0.0

    # ------------------------------------------------------------------ memory
    def _ffn_fits(self) -> bool:
        """Whether the neuron cache holds every FFN neuron (False too when the configuration does
        not fit at all: memory() refuses it when the run starts, as for every policy)."""
        try:
            self.memory()
        except ConfigurationRefused:
            return False
        return self.memory().cache_units >= self.sizes.ffn_neurons_total()

    def cached_neuron_bytes(self) -> float:
        s = self.sizes
        return s.neuron_weight_bytes() + (s.neuron_scale_bytes() if self.opt.scale_placement == "in_bundle" else 0.0)

    def memory(self) -> MemoryPlan:
        if self._mem is not None:
            return self._mem
        ctx, s = self.ctx, self.sizes
        comps = sparse_resident(s, ctx.context_tokens, ctx.prompt_tokens)
        if self.opt.scale_placement == "dram":
            comps["ffn_scales"] = s.ffn_scales()
        fixed = sum(comps.values())
        ffn_cacheable = s.ffn_neurons_total() * self.cached_neuron_bytes()
        scales = comps.get("ffn_scales", 0.0)
        # --ffn-offload F: F of the FFN's bytes (weights and scales) in flash; the resident scales
        # are part of the (1 - F) in DRAM (memory.budget_from)
        budget, avail = budget_from(ctx.memory_gb, ctx.ffn_offload, fixed, ffn_cacheable + scales, ctx.device.dram.app_usable_bytes,
                                    ctx.device.name, resident_ffn=scales)
        cache = min(avail, ffn_cacheable)
        n = int(cache // self.cached_neuron_bytes())
        plan = MemoryPlan(budget=budget, components=comps, neuron_cache=n * self.cached_neuron_bytes(), cache_units=n)
        plan.notes.append(f"neuron cache holds {n} of {s.ffn_neurons_total()} FFN neurons ({100 * n / s.ffn_neurons_total():.1f}%)")
        self._mem = plan
        return plan

    # ------------------------------------------------------------------ access
    def row_share(self) -> float:
        """The NPU's share of each layer's rows (hybrid): npu_row_share at batch 1, rising to
        npu_row_share_batched at batch 4 (PI2 builds a graph per batch size 1-4, §4.1.3). A run
        keeps the split of its starting batch (the graph swaps as candidates finish are not modelled)."""
        o = self.opt
        if o.best_of == 1:
            return o.npu_row_share
        return o.npu_row_share + (o.npu_row_share_batched - o.npu_row_share) * min(1.0, (o.best_of - 1) / 3.0)

    def sequences(self) -> int:
        return self.opt.best_of

    def sequence_schedule(self, n_steps: int) -> np.ndarray:
        return batch_schedule(n_steps, self.opt.best_of, self.opt.drop_every)

    def resolved_options(self):
        return options_in_use(self.opt)

    def hot_mask(self, freqs: np.ndarray, cache_neurons: int) -> tuple[np.ndarray, int]:
        """Hot region (read-only mask [L, E, N]) and cold capacity (neurons) of a cache of
        ``cache_neurons`` for the chosen decode mode; memoised on the profile and every option it
        depends on."""
        # the mask is the policy's own computation: the class that computes it, its code and every
        # option are part of the key (the disk memo's own code digest covers only the access model
        # and the trace reader; a subclass may override _hot_mask or read options of its own)
        key = memo.digest("hot_mask", diskcache.code_digest("policies"), self.identity(), sorted(self.resolved_options().items(), key=str),
                          freqs, cache_neurons, self.row_share())
        return memo.PROFILES.get(key, lambda: memo.persisted(key, lambda: self._hot_mask(freqs, cache_neurons)))

    def _hot_mask(self, freqs: np.ndarray, total: int) -> tuple[np.ndarray, int]:
        L, E, N = freqs.shape
        o = self.opt
        if o.decode == "hybrid":
            # the NPU computes the hottest npu_row_share of every (layer, expert) densely: those rows
            # must be resident, within hot_fraction of the cache; the rest of the cache is the cold LRU.
            # A cache that holds every neuron (in memory) has no split to respect: every row is
            # resident, so the NPU takes its full share (Best-of-N's ~70% at batch 4, PI2 §4.1.2)
            rows = int(round(self.row_share() * N))
            if total < L * E * N:
                rows = min(rows, int(o.hot_fraction * total) // max(1, L * E))
            order = hottest_first(freqs, axis=2)
            mask = np.zeros((L, E, N), bool)
            np.put_along_axis(mask, order[:, :, :rows], True, axis=2)
            hot = rows * L * E
        elif o.neuron_cache == "none":
            # no profile: the same share of every (layer, expert), by neuron index
            per = total // max(1, L * E)
            mask = np.zeros((L, E, N), bool)
            mask[:, :, :per] = True
            hot = per * L * E
        else:
            share = 1.0 if o.neuron_cache == "static" else o.hot_fraction
            hot = int(total * share)
            top = hottest_first(freqs)[:hot]
            mask = np.zeros((L, E, N), bool)
            mask.reshape(-1)[top] = True
        cold = 0 if o.neuron_cache in ("static", "none") else max(0, total - hot)
        return mask, cold

    def cache_request(self, workload: Workload, memory: MemoryPlan) -> segmented.CacheRequest:
        freqs = neuron_frequencies(workload)
        mask, cold = self.hot_mask(freqs, memory.cache_units)
        o = self.opt
        return segmented.CacheRequest(workload, freqs, mask, cold, recall=o.predictor_recall, precision=o.predictor_precision,
                                      seed=self.ctx.seed, warm=o.cache_warmup)

    def access(self, workload: Workload, memory: MemoryPlan) -> segmented.NeuronAccess:
        return segmented.run(self.cache_request(workload, memory))

    def access_summary(self, acc: segmented.NeuronAccess) -> AccessSummary:
        tp = max(1, int(acc.tp.sum()))
        T = max(1, acc.tp.shape[0])
        return AccessSummary(
            hit_rate=acc.hit_rate,
            details={
                "active_neurons_per_token": float(acc.active.sum() / T),
                "predicted_neurons_per_token": float((acc.tp.sum() + acc.fp.sum()) / T),
                "hot_hit_share": float(acc.tp_hot.sum() / tp),
                "cold_hit_share": float(acc.tp_cold_hit.sum() / tp),
                "miss_share": float(acc.tp_miss.sum() / tp),
                "false_positive_misses_per_token": float(acc.fp_miss.sum() / T),
                "hot_region_neurons": acc.hot_neurons,
                "cold_region_capacity_neurons": acc.cold_capacity,
                "cold_region_peak_neurons": acc.cold_peak,
                "cold_evictions": acc.cold_evictions,
            },
        )

    # ------------------------------------------------------------------ decode
    def io_queue_depth(self) -> int | None:
        """Reads the I/O thread keeps in flight (None: the device's queue depth). PowerInfer-2's
        I/O thread fills the UFS queue; the v1 port overrides this with its AIO depth."""
        return None

    def decode_plan(self, acc: segmented.NeuronAccess, memory: MemoryPlan) -> DecodePlan:
        ctx, s, o = self.ctx, self.sizes, self.opt
        a = ctx.model.architecture
        T, L = acc.tp.shape
        hybrid = o.decode == "hybrid"
        bpw = ctx.quant.dram_bytes_per_weight()
        mat_bytes = a.hidden * bpw  # one matrix-neuron streamed by a kernel (weights + scales)
        gate_b = mat_bytes if a.gated_ffn else 0.0
        ud_b = 2 * mat_bytes
        ctxlen = ctx.context_lengths()[:, None]  # KV entries attended at token t
        kv = s.kv_per_token_layer(ctxlen)
        attn = s.attention_per_layer() + kv
        stages = []
        # Best-of-N: each step serves the alive candidates; weights stream once for all of them
        # (compute shared by the sequences), each candidate reads its own KV
        bt = self.sequence_schedule(T) if o.best_of > 1 else None
        bl = None if bt is None else np.repeat(bt[:, None], L, axis=1)
        per_op = ctx.quant.dram_bytes_per_weight() / 2.0
        if bl is not None:
            attn = np.full((T, L), s.attention_per_layer())
            stages.append(Compute("attention_kv", "cpu", bl * kv, "matvec", self.pool, ctx.quant.compute_dtype, barrier=False))
        # 1. attention (+ norms), CPU or split with the NPU
        if o.attention == "cpu":
            stages.append(Compute("attention", "cpu", attn, "matvec", self.pool, ctx.quant.compute_dtype, batch=bl))
        elif o.attention == "npu":
            stages.append(Compute("attention", "npu", attn, "matvec", fixed_s=self.npu_call_s, batch=bl, bytes_per_op=per_op))
        else:
            share = o.attention_npu_share
            npu_part = Compute("attention_npu", "npu", attn * share, "matvec", fixed_s=self.npu_call_s, batch=bl, bytes_per_op=per_op)
            stages.append(Compute("attention", "cpu", attn * (1 - share), "matvec", self.pool, ctx.quant.compute_dtype, parallel=npu_part, batch=bl))
        # 2. router + predictors of the routed experts
        pred = np.full((T, L), s.predictor_per_token_layer() + s.router_per_layer())
        stages.append(Compute("predictor", "cpu", pred, "matvec", self.pool, ctx.quant.compute_dtype, batch=bl))
        # 3. FFN: CPU part through the neuron pipeline, hot rows on the NPU in hybrid mode
        if hybrid:
            gate_hit_n = acc.tp_cold_hit + acc.fp_cold_hit
            ud_hit_n = acc.tp_cold_hit
            npu_rows = acc.routed_hot
            parallel = Compute("ffn_hot_npu", "npu", npu_rows * a.matrices_per_neuron * mat_bytes, "matvec", fixed_s=self.npu_call_s, batch=bl, bytes_per_op=per_op)
        else:
            gate_hit_n = acc.tp_hot + acc.tp_cold_hit + acc.fp_hot + acc.fp_cold_hit
            ud_hit_n = acc.tp_hot + acc.tp_cold_hit
            parallel = None
        gate_miss_n = acc.tp_miss + acc.fp_miss
        ud_miss_n = acc.tp_miss
        lay = self.layout
        if o.two_phase and lay.bundled:
            gate_reqs = gate_miss_n * len(lay.gate_reads)
            ud_reqs = acc.tp_miss * len(lay.ud_reads)
            gate_size = lay.gate_reads[0]
            ud_size = lay.ud_reads[0] if lay.ud_reads else lay.gate_reads[0]
        else:
            # one-phase: every missing predicted neuron is read whole (Gate+Up+Down)
            gate_reqs = gate_miss_n * len(lay.gate_reads)
            ud_reqs = gate_miss_n * len(lay.ud_reads)
            gate_size = lay.gate_reads[0]
            ud_size = lay.ud_reads[0] if lay.ud_reads else lay.gate_reads[0]
        routed = a.top_k if a.is_moe else 1
        span = np.full((T, L), routed * a.ffn_neurons * lay.region_bytes_per_neuron)
        rows_total = np.full((T, L), float(routed * a.ffn_neurons)) - (acc.routed_hot if hybrid else 0)
        pipe = NeuronPipeline(
            "ffn",
            o.pipeline,
            self.pool,
            ctx.quant.compute_dtype,
            gate_hit_bytes=gate_hit_n * gate_b,
            gate_miss_bytes=gate_miss_n * gate_b,
            ud_hit_bytes=ud_hit_n * ud_b,
            ud_miss_bytes=ud_miss_n * ud_b,
            gate_hit_n=gate_hit_n,
            gate_miss_n=gate_miss_n,
            ud_hit_n=ud_hit_n,
            ud_miss_n=ud_miss_n,
            gate_reqs=gate_reqs,
            ud_reqs=ud_reqs,
            gate_req_size=gate_size,
            ud_req_size=ud_size,
            span=span,
            io_core=self.io_core.id,
            io_class=self.io_core.core_class,
            cluster_neurons=o.cluster_neurons,
            gate_bytes_per_neuron=gate_b,
            ud_bytes_per_neuron=ud_b,
            two_phase=o.two_phase and lay.bundled,
            parallel=parallel,
            rows_total=rows_total,
            # a blocked thread reads a whole bundle at once (its 4 KB parts together); rows of
            # separate matrices are read one by one as each matrix is computed
            sync_inflight=len(lay.whole_reads) if lay.bundled else 1,
            io_qd=self.io_queue_depth(),
            batch=bl,
        )
        stages.append(pipe)
        # per token: final norm + LM head (NPU in hybrid mode)
        head = np.full(T, s.lm_head())
        if hybrid:
            token = [Compute("lm_head", "npu", head, "matvec", fixed_s=self.npu_call_s, batch=bt, bytes_per_op=per_op)]
        else:
            token = [Compute("lm_head", "cpu", head, "matvec", self.pool, ctx.quant.compute_dtype, batch=bt)]
        if hybrid and bt is not None:
            # a candidate finishing changes the batch: the NPU switches to that batch size's graph
            # (PI2 §4.1.3: ~10 KB, loaded while attention runs; the device's graph_switch is what stays exposed)
            swaps = np.concatenate([[0.0], (np.diff(bt) != 0).astype(np.float64)])
            if swaps.any() and ctx.device.npu.graph_switch_s > 0:
                token.append(Compute("graph_swap", "cpu", swaps * ctx.device.npu.graph_switch_s * self.pool.n, "cpu_seconds", self.pool,
                                     category="other", barrier=False))
        flash_bytes = (gate_reqs * gate_size + ud_reqs * ud_size).sum(axis=1)
        flash_reads = (gate_reqs + ud_reqs).sum(axis=1)
        plan = DecodePlan(T, L, stages, token, flash_bytes=flash_bytes.astype(float), flash_reads=flash_reads.astype(float))
        plan.dram_resident_bytes = memory.fixed + (acc.hot_neurons + acc.cold_size) * self.cached_neuron_bytes()
        plan.batch = bt
        plan.validate()
        return plan

    def check(self, acc: segmented.NeuronAccess, plan: DecodePlan) -> None:
        """computed-once: every predicted active neuron is computed once, by the CPU pipeline (cold
        hit or flash read) or, in hybrid mode, by the NPU's dense hot rows; flash reads are the misses."""
        from ..engine.invariants import _require

        pipe = next(st for st in plan.layer_stages if isinstance(st, NeuronPipeline))
        npu = acc.tp_hot if self.opt.decode == "hybrid" else 0
        _require("computed-once", pipe.ud_hit_n + pipe.ud_miss_n + npu == acc.tp, "predicted active neurons = CPU-computed (cached + loaded) + NPU hot rows")
        _require("computed-once", pipe.gate_hit_n + pipe.gate_miss_n + (acc.tp_hot + acc.fp_hot if self.opt.decode == "hybrid" else 0) == acc.tp + acc.fp,
                 "every predicted neuron's Gate row is computed once")
        _require("flash-accounting", pipe.gate_miss_n == acc.tp_miss + acc.fp_miss, "neurons read from flash = cache misses (true and false positives)")

    # ------------------------------------------------------------------ prefill
    def prefill_plan(self, memory: MemoryPlan, access=None) -> PrefillPlan:
        ctx, s, o = self.ctx, self.sizes, self.opt
        d = ctx.device
        a = ctx.model.architecture
        L = a.layers
        P = ctx.prompt_tokens
        # every layer is computed densely: attention + all experts' FFN weights stream through
        attn_params = a.attention_params_per_layer
        ffn_params_layer = a.ffn_params_per_layer
        layer_weight_bytes = (attn_params + ffn_params_layer + a.router_params_per_layer) * ctx.quant.dram_bytes_per_weight()
        ops_tok = a.prefill_ops_per_token(P) / L  # per layer: attention + top_k experts densely, plus scores
        if o.prefill == "npu":
            padded = -(-P // d.npu.graph_tokens) * d.npu.graph_tokens
            chunks = padded // d.npu.graph_tokens
            work = np.full(L, ops_tok * padded)
            factor = d.npu.mixed_precision_factor
            comp = Compute(
                "prefill_layer", "npu", work, "gemm", dtype=ctx.quant.compute_dtype, fixed_s=chunks * d.npu.invocation_s,
                bytes_for_gemm=np.full(L, layer_weight_bytes * chunks), gemm_factor=factor,
            )
            head = [Compute("prefill_lm_head", "npu", np.array([s.lm_head()]), "matvec", fixed_s=d.npu.invocation_s + d.npu.sync_s)]
        else:
            comp = Compute("prefill_layer", "cpu", np.full(L, ops_tok * P), "gemm", self.pool, ctx.quant.compute_dtype,
                           bytes_for_gemm=np.full(L, layer_weight_bytes))
            head = [Compute("prefill_lm_head", "cpu", np.array([s.lm_head()]), "matvec", self.pool, ctx.quant.compute_dtype)]
        # offloaded FFN weights of each layer stream from flash (the resident share is in the cache)
        ffn_flash_per_layer = a.experts * a.ffn_neurons * self.layout.bundle_bytes
        resident_share = min(1.0, memory.cache_units / max(1, s.ffn_neurons_total()))
        off_bytes = ffn_flash_per_layer * (1.0 - resident_share)
        loader = d.core(o.prefill_loader_core)
        load = None
        if off_bytes > 0:
            # 512 KB requests at scattered offsets: the offloaded (cold) bundles of a layer are
            # interleaved with the resident (hot) ones in the layer's flash region [interp]
            load = Flash(
                "prefill_load", np.full(L, np.ceil(off_bytes / PREFILL_READ_BYTES)), PREFILL_READ_BYTES, ffn_flash_per_layer,
                loader.core_class, (loader.id,), qd=d.storage.queue_depth, sequential=False,
            )
        return PrefillPlan(L, P, load, [comp], head, pipelined=o.prefill_overlap)
