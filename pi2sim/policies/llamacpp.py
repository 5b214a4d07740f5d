"""llama.cpp on Android: dense CPU inference, weights memory-mapped or loaded.

Two builds (``build``), because the engine users run in 2026 is not the one the PowerInfer-2
paper measured (llama.cpp's git history; ``docs/llamacpp-builds.md`` cites the commits and PRs):

* ``2024`` (about b3000, mid-2024, the paper's baseline): every matmul splits its rows equally
  over the threads (llamafile's ``tinyBLAS_Q0_ARM`` for Q4_0/Q8_0, static), so the slowest core
  sets the pace; the prompt runs through the INT4 dot-product kernels (``gemm_int4``); one
  barrier per stage. Every paper scenario pins it.
* ``2026`` (b7988 or later, the default): weights repacked at load for the int8 matrix
  instructions (``CPU_REPACK``: Q4_0, Q8_0, Q4_K, Q6_K), the prompt's matmuls on the i8mm GEMM
  (``i8mm_gemm_speedup`` of the device); work handed out in ``4 x threads`` chunks claimed as
  threads finish (PR #16833; :func:`pi2sim.engine.compute.chunked_efficiency`); flash attention
  on (``-fa auto``, PR #15434); a barrier after every graph node; the default thread count is
  every core (``cpu_get_num_math``). Each block type runs its own kernel, at a rate of its own
  relative to the device's INT4 kernel rate (the ``*_matvec`` / ``*_gemm`` options, fitted to a
  Galaxy S23's measurements, experiments/external/pocketpal-s23/).

* **Weights.** ``load_mode: mmap`` (default) maps the GGUF file; in the 2024 build (and the 2026
  build with ``repack=false``) the OS page cache, within the memory left after the app's own
  allocations, decides what stays in DRAM (LRU, or Linux's two-list variant), see
  :mod:`pi2sim.access.pagecache`. A token touches every weight once in file order, so a model
  larger than the cache re-reads nearly all of itself per token; for MoE models only the routed
  experts' slices are touched. ``none`` (``--no-mmap``), ``mlock`` and the 2026 build's repacked
  copy hold the whole model in the app's memory and refuse to start when it does not fit, as the
  real engine fails. A model that fits is never read again (the page cache holds every block of
  every tensor).
* **Faults.** A miss is a major page fault served by the compute thread that touched the page:
  the read of one readahead window, synchronous, several threads faulting at once (so several
  cores issue to the single UFS queue), plus the kernel's CPU path per fault.
* **Compute.** Dense matrix-vector work on ``threads`` threads: the 2024 build's static row split
  (the slowest core sets the pace: adding the A520s slows it down, arXiv 2410.03613 §V-C) at
  ``kernel_efficiency`` of the device's best-kernel rate (fitted to T18: 95% in memory); the 2026
  build's chunks at each block type's rate. No predictor, no sparsity. Prefill is a CPU GEMM over
  the prompt.
* **Best-of-N** (``--best-of N``, llama.cpp's parallel sequences; dense models): a step faults
  in and streams each weight once for every candidate still decoding, computes it per candidate
  (``cpu.batch_compute_share``), and reads each candidate's own KV cache; the prompt's KV is shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..access import pagecache
from ..engine.compute import CpuPool, pick_cores
from ..engine.plan import Compute, DecodePlan, Faults, Flash, PrefillPlan
from ..errors import InputError
from .memory import GB, RUNTIME_BYTES, MemoryPlan, budget_from
from ..schema import spec_field
from . import register
from ._common import EngineRefused, batch_schedule, best_of_kv, kernel_pool, options_in_use, refuse_moe_best_of, scaled_pool
from .base import AccessSummary, Policy
from .dense import BestOfOptions


@dataclass(frozen=True, kw_only=True)
class LlamaCppOptions(BestOfOptions):
    build: Literal["2024", "2026"] = spec_field(
        default="2026",
        help="llama.cpp build: 2024 (about b3000, the PowerInfer-2 paper's: static row split, INT4 dot-product prompt kernels) or "
        "2026 (b7988+: repacked weights on the i8mm GEMM, chunked work, flash attention, all cores by default)",
    )
    load_mode: Literal["mmap", "none", "mlock"] = spec_field(default="mmap", help="mmap (page cache decides), none (--no-mmap) or mlock")
    repack: bool = spec_field(
        default=True,
        help="build 2026: repack matmul weights at load into the anonymous CPU_REPACK buffer (the default since b4081; false: --no-repack, "
        "b6049, weights used from the mapping, so a model larger than memory pages through the page cache)",
    )
    replacement: Literal["lru", "two-list"] = spec_field(default="two-list", help="page-cache replacement (Linux: two-list)")
    threads: int | None = spec_field(
        default=None, lo=1, hi=16,
        help="compute threads (none: the build's default: 6 for 2024, as the paper ran it, the optimum on Snapdragon 8 Gen 3, "
        "arXiv 2410.03613 §V-C; every core for 2026, llama.cpp's cpu_get_num_math on a phone)",
    )
    cores: str = spec_field(default="auto", help="'auto' (fastest cores) or core ids / cluster names")
    kernel_efficiency: float = spec_field(
        default=0.951, gt=0.0, hi=1.0,
        help="build 2024: llama.cpp kernel speed relative to the device's best INT4 rate (fitted to T18: 9.3 tok/s in memory on TurboSparse-Mistral-7B, "
        "~36 GB/s of weights; arXiv 2410.03613 measured 25 GB/s with another build on another 8 Gen 3 phone; bounds: 0.5..1)",
    )
    q4_0_matvec: float = spec_field(
        default=0.965, gt=0.0, hi=4.0,
        help="build 2026: Q4_0 (and Q5_0) token kernel (repacked GEMV) speed per weight byte, relative to the device's INT4 matvec rate "
        "(fitted to experiments/external/pocketpal-s23 by pi2sim calibrate: the Galaxy S23's Q4_0 decode rows; bounds: 0.3..3; prior: 1, the device's own rate)",
    )
    q8_0_matvec: float = spec_field(
        default=1.115, gt=0.0, hi=4.0,
        help="build 2026: Q8_0 token kernel speed per weight byte, relative to the device's INT4 matvec rate "
        "(fitted to experiments/external/pocketpal-s23 by pi2sim calibrate: the Galaxy S23's Qwen3-1.7B Q8_0 decode; bounds: 0.3..3; prior: 1)",
    )
    q4_k_matvec: float = spec_field(
        default=0.956, gt=0.0, hi=4.0,
        help="build 2026: Q4_K token kernel speed per weight byte, relative to the device's INT4 matvec rate "
        "(fitted to experiments/external/pocketpal-s23 by pi2sim calibrate: the Galaxy S23's Qwen3-1.7B Q4_K_M decode; bounds: 0.3..3; prior: 1)",
    )
    q6_k_matvec: float = spec_field(
        default=0.679, gt=0.0, hi=4.0,
        help="build 2026: Q6_K token kernel speed per weight byte, relative to the device's INT4 matvec rate "
        "(fitted to experiments/external/pocketpal-s23 by pi2sim calibrate: the Galaxy S23's Q4_0 decode rows, whose output tensor is Q6_K; bounds: 0.2..3; prior: 1)",
    )
    i8mm_gemm: float = spec_field(
        default=1.108, gt=0.0, hi=2.0,
        help="build 2026: repacked Q4_0/Q8_0 prompt GEMM speed relative to the device's int8-matmul rate (gemm_int4 x i8mm_gemm_speedup) "
        "(fitted to experiments/external/pocketpal-s23 by pi2sim calibrate: the Galaxy S23's Q4_0 and Q8_0 prefill rows; bounds: 0.2..1.5; prior: 1)",
    )
    k_quant_gemm: float = spec_field(
        default=0.827, gt=0.0, hi=2.0,
        help="build 2026: repacked Q4_K/Q6_K prompt GEMM speed relative to the device's int8-matmul rate "
        "(fitted to experiments/external/pocketpal-s23 by pi2sim calibrate: the Galaxy S23's Qwen3-1.7B Q4_K_M prefill; bounds: 0.1..1.5; prior: 1)",
    )
    n_ctx: int | None = spec_field(
        default=None, lo=16, hi=1_048_576,
        help="KV cache size in tokens (none: the run's prompt + decoded tokens); the 2026 build pads it to 256 (llama_kv_cache)",
    )
    n_ubatch: int = spec_field(default=512, lo=1, hi=65536, help="physical batch (-ub): the prompt is processed in chunks of this many tokens; sizes the compute buffer")
    readahead: float | None = spec_field(
        default=31 * 1024, unit="bytes", lo=4096, hi=64 * 2**20,
        help="bytes a major fault reads (fitted to T17: llama.cpp, ProSparse-Llama-2-7B, 50% offload, 0.39 tok/s). Below the device's "
        "readahead window because a thrashing mapping reads less around each fault (Linux stops mmap read-around once misses "
        "outnumber hits, mm/filemap.c MMAP_LOTSAMISS). Not in pi2sim calibrate's free set: it changes the page-cache simulation, not only timing; "
        "None: the device's window",
    )
    runtime: float = spec_field(default=RUNTIME_BYTES, unit="bytes", lo=0.0, hi=8e9, help="app memory besides weights and KV (compute buffers, runtime)")


# The 2026 build's kernel for each GGUF block type: (token-kernel option, prompt-GEMM option).
# Q5_0 (a Q4_K fallback) is not repacked: it runs the generic kernels, taken at Q4_0's rates (assumption).
KERNELS_2026 = {"q4_0": ("q4_0_matvec", "i8mm_gemm"), "q5_0": ("q4_0_matvec", "i8mm_gemm"), "q8_0": ("q8_0_matvec", "i8mm_gemm"),
                "q4_k": ("q4_k_matvec", "k_quant_gemm"), "q6_k": ("q6_k_matvec", "k_quant_gemm")}
KV_PAD_2026 = 256  # llama_kv_cache pads n_ctx to 256 (llama-kv-cache.cpp get_padding, 2026)
STATIC_2024_THREADS = 6


def graph_nodes_per_layer(arch, flash_attention: bool) -> int:
    """Nodes of one decoder layer in llama.cpp's decode graph (llama-graph.cpp / llama-model.cpp,
    2026; view, reshape and permute nodes are skipped without a barrier since b7016): the attention
    norm (rms_norm, mul), the Q, K, V matmuls (and their bias adds), RoPE of Q and K, the two KV cache
    writes, attention (one flash-attention node, or KQ, softmax, KQV and a copy), the output matmul,
    the residual add, the FFN norm (rms_norm, mul), the gate and up matmuls, the fused activation, the
    down matmul and the residual add; an MoE layer adds the router, its top-k and weighting nodes."""
    n = 2 + 3 + (3 if arch.qkv_bias else 0) + 2 + 2 + (1 if flash_attention else 4) + 1 + 1 + 2
    n += (2 if arch.gated_ffn else 1) + 1 + 1 + 1
    if arch.is_moe:
        n += 5  # router matmul, softmax, argsort/top-k, get_rows of the weights, the weighted sum
    return n


def compute_buffer_bytes(arch, n_ubatch: int, n_ctx: int, flash_attention: bool) -> float:
    """llama.cpp's CPU compute buffer, reserved for the worst-case ubatch (llama-context.cpp
    graph_reserve): the ubatch's logits (``n_vocab`` floats per token) and two hidden-state
    tensors alive beside them; without flash attention the KQ score matrix of the full context
    (``n_kv x n_ubatch x n_head`` floats) instead of the logits when it is larger. Checked against
    a 2026 allocator log (Qwen3-1.7B 304.75 MiB, exact; Phi-3.5-mini 90.64 MiB, -18%: its FFN
    intermediates at the peak; tests/test_llamacpp_builds.py)."""
    ub = min(n_ubatch, n_ctx)
    logits = 4.0 * ub * (arch.vocab + 2 * arch.hidden)
    if flash_attention:
        return logits
    return max(logits, 4.0 * ub * (n_ctx * arch.heads + 2 * arch.hidden))


@register
class LlamaCpp(Policy):
    name = "llamacpp"
    summary = "llama.cpp: dense CPU decode, weights memory-mapped (page cache) or loaded; builds 2024 (the paper's) and 2026"
    Options = LlamaCppOptions
    needs_activity = False  # an MoE model's routing only
    quant_formats = ("int4", "int8", "fp16", "q4_0", "q8_0", "q4_k_m", "q6_k")  # GGUF files (int4/int8/fp16: the paper's generic formats)
    presets = {
        "no-mmap": {"load_mode": "none"},
        "mlock": {"load_mode": "mlock"},
        "lru": {"replacement": "lru"},
        "paper": {"build": "2024"},
    }
    preset_help = {
        "no-mmap": "read weights into anonymous memory; refuses to start if the model does not fit",
        "mlock": "lock the mapping in memory; refuses to start if the model does not fit",
        "lru": "plain LRU page cache instead of Linux's two-list",
        "paper": "the mid-2024 build the PowerInfer-2 paper compared against (build=2024)",
    }

    def __init__(self, ctx, options):
        super().__init__(ctx, options)
        d = ctx.device
        self.modern = options.build == "2026"
        threads = options.threads
        if threads is None:
            threads = sum(c.count for c in d.cpu.clusters) if self.modern else min(STATIC_2024_THREADS, sum(c.count for c in d.cpu.clusters))
        self.threads = threads
        cores = pick_cores(d, options.cores, threads, what="cores")
        if self.modern:
            base = CpuPool(cores, "chunked", 1.0, d.cpu.barrier_s)
            self.pools = {t: kernel_pool(base, getattr(options, mv), getattr(options, gm)) for t, (mv, gm) in KERNELS_2026.items()}
            self.pools["f16"] = base  # an F16 file: the cores' FP16 kernels as the device states them
            self.kv_pool = base  # flash attention streams the F16 KV cache at the cores' FP16 rate, chunked (PR #16829)
            self.pool = self.pools["q4_0"]
        else:
            self.pool = scaled_pool(CpuPool(cores, "static", 1.0, d.cpu.barrier_s), options.kernel_efficiency)
        self.block = options.readahead or d.storage.readahead_bytes or d.storage.page_bytes
        self.sizes = ctx.sizes
        self.layout = pagecache.layout_for(self.sizes, self.block)  # where each weight's blocks lie in the file
        self._mem: MemoryPlan | None = None
        refuse_moe_best_of(ctx.model, options.best_of)

    def resolved_options(self):
        d = options_in_use(self.opt)
        d["threads"] = self.threads
        if not self.modern:  # the 2026 kernels' rates and buffers do not apply: a 2024 run resolves (and hashes) as before builds existed
            for k in ("build", "repack", "q4_0_matvec", "q8_0_matvec", "q4_k_matvec", "q6_k_matvec", "i8mm_gemm", "k_quant_gemm", "n_ctx", "n_ubatch"):
                d.pop(k, None)
        else:
            d.pop("kernel_efficiency", None)
        return d

    def model_bytes(self) -> float:
        s = self.sizes
        return s.non_ffn() + s.ffn_total()

    # ------------------------------------------------------------------ memory
    def kv_tokens(self) -> int:
        """KV cache entries allocated: n_ctx, or the run's context; padded to 256 by the 2026 build."""
        ctx = self.ctx
        n = self.opt.n_ctx if self.opt.n_ctx is not None else ctx.context_tokens
        if self.modern:
            n = int(np.ceil(n / KV_PAD_2026) * KV_PAD_2026)
        return int(n)

    def loads_weights(self) -> bool:
        """Whether every matmul weight sits in the app's own memory: loaded (no mmap, mlock) or, in
        the 2026 build, repacked into the anonymous CPU_REPACK buffer at load (the mapped originals
        are clean pages the kernel drops; issues #16761, #19578)."""
        return self.opt.load_mode in ("none", "mlock") or (self.modern and self.opt.repack)

    def memory(self) -> MemoryPlan:
        if self._mem is not None:
            return self._mem
        ctx, s, o = self.ctx, self.sizes, self.opt
        if self.modern:
            n_ctx = self.kv_tokens()
            kv = best_of_kv(s, n_ctx, min(ctx.prompt_tokens, n_ctx), o.best_of)
            anon = {"kv_cache": kv, "compute_buffer": compute_buffer_bytes(ctx.model.architecture, o.n_ubatch, n_ctx, True), "runtime": o.runtime}
        else:
            anon = {"kv_cache": best_of_kv(s, ctx.context_tokens, ctx.prompt_tokens, o.best_of), "activations": s.activations(ctx.prompt_tokens), "runtime": o.runtime}
        fixed = sum(anon.values())
        file_bytes = self.layout.total_bytes()  # the file's pages: every tensor rounded up to whole blocks
        loaded = self.loads_weights()
        # loaded weights: the tensors themselves; a tied model's output is a second copy of the
        # embedding in the 2026 build (llama-model.cpp TENSOR_DUPLICATED, in the repack buffer)
        resident = self.model_bytes() + (s.lm_head() if (self.modern and loaded and ctx.model.architecture.tied_embeddings) else 0.0)
        if ctx.memory_gb is not None:
            # every weight page is pageable: the app needs only its anonymous memory to start
            budget, avail = budget_from(ctx.memory_gb, None, fixed, 0.0, ctx.device.dram.app_usable_bytes, ctx.device.name)
        else:
            # --ffn-offload: the budget of an engine keeping non-FFN weights and (1 - F) of the FFN, as
            # the engine stores them (at F = 0 the whole model: the file with its block rounding, or
            # the loaded tensors, so an in-memory model never faults)
            held = resident if loaded else file_bytes
            budget, avail = budget_from(None, ctx.ffn_offload, fixed + s.non_ffn(), held - s.non_ffn(), ctx.device.dram.app_usable_bytes, ctx.device.name)
            avail += s.non_ffn()  # the page cache holds the whole file, non-FFN weights included
        if loaded and resident > avail * (1 + 1e-9):
            if o.load_mode in ("none", "mlock"):
                flag = "--no-mmap" if o.load_mode == "none" else "--mlock"
                how = "the real engine fails to allocate / lock; use load_mode=mmap"
            else:
                flag = "(2026 build, repacked weights)"
                how = "it repacks every matmul weight into anonymous memory at load; --set repack=false maps them from the file instead, as build=2024 does"
            raise EngineRefused(
                None, f"llamacpp {flag}",
                f"cannot load: the model needs {resident / GB:.2f} GB resident but only {avail / GB:.2f} GB of the {budget / GB:.2f} GB budget is left "
                f"after KV cache and buffers ({how})",
            )
        plan = MemoryPlan(budget=budget, components=anon)
        if loaded:
            plan.components["weights"] = resident
            plan.cache_units = self.layout.n_blocks  # every block of every tensor is in memory: nothing faults
        else:
            if avail >= file_bytes * (1 - 1e-12):  # the whole file fits: the page cache holds every block of it
                plan.neuron_cache, plan.cache_units = file_bytes, self.layout.n_blocks
            else:
                plan.neuron_cache = avail  # page cache holding model pages
                plan.cache_units = int(plan.neuron_cache // self.block)
            plan.notes.append(f"page cache: {plan.neuron_cache / GB:.2f} GB for a {file_bytes / GB:.2f} GB model file ({o.replacement})")
        if self.modern:
            plan.notes.append(f"llama.cpp 2026 build: {self.threads} threads, {'repacked' if o.repack else 'mapped (no repack)'} weights, "
                              f"KV cache for {self.kv_tokens()} tokens, compute buffer {anon['compute_buffer'] / 2**20:.1f} MiB")
        self._mem = plan
        return plan

    def allocator_mib(self) -> dict[str, float]:
        """What llama.cpp's allocator log reports (``llama_model_load``/``llama_context``), MiB:
        the model buffers (CPU, CPU_Mapped and CPU_REPACK), the KV cache and the compute buffer."""
        m = self.memory().components
        weights = m.get("weights", self.layout.total_bytes())
        return {"weights_mib": weights / 2**20, "kv_cache_mib": m["kv_cache"] / 2**20,
                "compute_buffer_mib": m.get("compute_buffer", m.get("activations", 0.0)) / 2**20}

    # ------------------------------------------------------------------ access
    def access(self, workload, memory: MemoryPlan) -> pagecache.PageAccess:
        layout = self.layout
        experts = workload.experts() if (workload is not None and self.ctx.model.architecture.is_moe) else None
        if self.ctx.model.architecture.is_moe and experts is None:
            raise InputError(None, "trace", "a trace with routed experts for an MoE model")
        cap = min(memory.cache_units, layout.n_blocks)
        return pagecache.simulate(layout, cap, experts, self.ctx.decode_tokens, self.opt.replacement)

    def access_summary(self, acc: pagecache.PageAccess) -> AccessSummary:
        T = max(1, len(acc.head_miss))
        miss = acc.attn_miss.sum() + acc.ffn_miss.sum() + acc.head_miss.sum()
        details = {
            "page_cache_blocks": acc.capacity_blocks,
            "model_blocks": acc.total_blocks,
            "block_bytes": float(self.block),
            "faults_per_token": float(miss / T),
            "page_cache_evictions": acc.evictions,
            "prompt_faults": acc.prefill_miss,
        }
        if self.modern:
            details.update({f"allocator_{k}": round(v, 2) for k, v in self.allocator_mib().items()})
        return AccessSummary(hit_rate=acc.hit_rate, details=details)

    # ------------------------------------------------------------------ decode
    def decode_plan(self, acc: pagecache.PageAccess, memory: MemoryPlan) -> DecodePlan:
        if self.modern:
            return self._decode_plan_2026(acc)
        ctx, s = self.ctx, self.sizes
        a = ctx.model.architecture
        T, L = acc.attn_miss.shape
        dtype = ctx.quant.compute_dtype
        ctxlen = ctx.context_lengths()[:, None]
        kv = s.kv_per_token_layer(ctxlen)
        attn = s.attention_per_layer() + s.router_per_layer() + kv
        expert_bytes = a.ffn_neurons * a.matrices_per_neuron * a.hidden * s.bpw
        ffn = np.full((T, L), a.top_k * expert_bytes)
        fault_cpu, span = self._fault_cpu(), float(self.layout.total_bytes())
        b = bl = None
        if self.opt.best_of > 1:  # the weights' pages serve every candidate; each reads its own KV (its own pages: anonymous memory)
            b = batch_schedule(T, self.opt.best_of, self.opt.drop_every)
            bl = np.repeat(b[:, None], L, axis=1)
            attn = np.full((T, L), s.attention_per_layer() + s.router_per_layer())
        stages = [
            Faults("attention", self.pool, dtype, attn, acc.attn_miss.astype(float), self.block, span, fault_cpu, batch=bl),
            Faults("ffn", self.pool, dtype, ffn, acc.ffn_miss.astype(float), self.block, span, fault_cpu, batch=bl),
        ]
        if bl is not None:
            stages.insert(1, Compute("attention_kv", "cpu", bl * kv, "matvec", self.pool, dtype, barrier=False))
        token = [Faults("lm_head", self.pool, dtype, np.full(T, s.lm_head()), acc.head_miss.astype(float), self.block, span, fault_cpu, batch=b)]
        return self._finish(acc, stages, token, b)

    def _fault_cpu(self) -> float:
        d = self.ctx.device
        pages_per_block = self.block / d.storage.page_bytes
        return d.cpu.page_fault_s * max(1.0, pages_per_block / 16)  # fault-around maps 16 pages per fault

    def _finish(self, acc, stages, token, b) -> DecodePlan:
        T, L = acc.attn_miss.shape
        reads = acc.attn_miss.sum(axis=1) + acc.ffn_miss.sum(axis=1) + acc.head_miss
        plan = DecodePlan(T, L, stages, token, flash_bytes=reads * self.block, flash_reads=reads.astype(float))
        if b is not None:
            plan.batch = b
        plan.validate()
        return plan

    def _typed_bytes(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """[L] bytes per block type of each layer's attention and of the experts a token routes
        through (a GGUF file's exact mixture; another format: its compute class as one type)."""
        ctx, s = self.ctx, self.sizes
        a = ctx.model.architecture
        L = a.layers
        g = s.gguf()
        if g is None:
            t = self._plain_type()
            attn = {t: np.full(L, s.attention_per_layer() - 2.0 * a.attention_bias_params_per_layer)}
            ffn = {t: np.full(L, a.ffn_neurons * a.matrices_per_neuron * a.hidden * s.bpw * a.top_k)}
            return attn, ffn
        types = sorted({t for d in g.attention + g.ffn for t in d})
        attn = {t: np.array([d.get(t, 0.0) for d in g.attention]) for t in types}
        ffn = {t: a.top_k * np.array([d.get(t, 0.0) for d in g.ffn]) for t in types}
        return {t: v for t, v in attn.items() if v.any()}, {t: v for t, v in ffn.items() if v.any()}

    def _plain_type(self) -> str:
        """The kernel of a format that is not a GGUF file type (the paper's int4 / int8 / fp16)."""
        return {"int8": "q8_0", "fp16": "f16"}.get(self.ctx.quant.name, "q4_0")

    @staticmethod
    def _dtype(t: str) -> str:
        return "fp16" if t == "f16" else "int4"

    def _decode_plan_2026(self, acc: pagecache.PageAccess) -> DecodePlan:
        """Each layer: the attention matmuls of each block type (faulting in what the page cache
        misses), flash attention over the F16 KV cache, the FFN's matmuls by block type, then the
        graph's other nodes, each ending in a barrier of every thread; per token the output tensor."""
        ctx, s = self.ctx, self.sizes
        a = ctx.model.architecture
        T, L = acc.attn_miss.shape
        fault_cpu, span = self._fault_cpu(), float(self.layout.total_bytes())
        ctxlen = ctx.context_lengths()[:, None]
        kv = s.kv_per_token_layer(ctxlen)
        b = bl = None
        if self.opt.best_of > 1:
            b = batch_schedule(T, self.opt.best_of, self.opt.drop_every)
            bl = np.repeat(b[:, None], L, axis=1)
            kv = bl * kv
        attn_t, ffn_t = self._typed_bytes()
        stages = []
        for group, typed, miss in (("attention", attn_t, acc.attn_miss), ("ffn", ffn_t, acc.ffn_miss)):
            first = True
            for t, per_layer in typed.items():
                work = np.broadcast_to(per_layer[None, :], (T, L)).copy()
                if group == "attention" and first:
                    work = work + s.router_per_layer() + 2.0 * a.attention_bias_params_per_layer
                faults = miss.astype(float) if first else np.zeros((T, L))
                name = group if first else f"{group}_{t}"
                stages.append(Faults(name, self.pools[t], self._dtype(t), work, faults, self.block, span, fault_cpu, batch=bl))
                first = False
            if group == "attention":  # flash attention streams the F16 KV (llama.cpp: dynamic chunks, PR #16829)
                stages.append(Compute("attention_kv", "cpu", kv, "matvec", self.kv_pool, "fp16"))
        # the rest of the graph: every node ends in a barrier of all threads (ggml_graph_compute);
        # the stages above paid one each
        extra = max(0, graph_nodes_per_layer(a, True) - len(stages))
        pool = self.pools["q4_0"]
        stages.append(Compute("graph_barriers", "cpu", np.full((T, L), extra * pool.barrier_s * pool.n), "cpu_seconds", pool,
                              category="other", barrier=False))
        head_t = s.gguf().output[0] if s.gguf() is not None else self._plain_type()
        token = [Faults("lm_head", self.pools[head_t], self._dtype(head_t), np.full(T, s.lm_head()), acc.head_miss.astype(float),
                        self.block, span, fault_cpu, batch=b)]
        return self._finish(acc, stages, token, b)

    # ------------------------------------------------------------------ prefill
    def prefill_plan(self, memory: MemoryPlan, access: pagecache.PageAccess | None = None) -> PrefillPlan:
        ctx, s = self.ctx, self.sizes
        a = ctx.model.architecture
        L, P = a.layers, ctx.prompt_tokens
        ops_tok = a.prefill_ops_per_token(P) / L
        layer_bytes = s.attention_per_layer() + a.experts * a.ffn_neurons * a.matrices_per_neuron * a.hidden * s.bpw
        if self.modern:
            comps = self._prefill_2026(P)
            head_t = s.gguf().output[0] if s.gguf() is not None else self._plain_type()
            head = [Compute("prefill_lm_head", "cpu", np.array([s.lm_head()]), "matvec", self.pools[head_t], self._dtype(head_t))]
        else:
            comps = [Compute("prefill_layer", "cpu", np.full(L, ops_tok * P), "gemm", self.pool, ctx.quant.compute_dtype, bytes_for_gemm=np.full(L, layer_bytes))]
            head = [Compute("prefill_lm_head", "cpu", np.array([s.lm_head()]), "matvec", self.pool, ctx.quant.compute_dtype)]
        load = None
        if self.opt.load_mode == "mmap":
            # the prompt pass faults in what the page cache does not hold, synchronously (no overlap)
            # (the page-cache simulation counts them; without it, what the cache cannot hold)
            n = access.prefill_miss if access is not None else max(0, int(np.ceil(self.model_bytes() / self.block)) - memory.cache_units)
            if n > 0:
                load = Flash("prefill_faults", np.full(L, n / L), self.block, self.model_bytes(), "mid", self.pool.ids(), qd=self.pool.n, n_issuers=self.pool.n, sequential=True)
        return PrefillPlan(L, P, load, comps, head, pipelined=False)

    def _prefill_2026(self, P: int) -> list[Compute]:
        """The prompt's matmuls on the repacked i8mm GEMM, one stage per block type (operations in
        proportion to the weights of that type), and the attention scores in the F16 kernels
        (flash attention), each over the whole prompt (ubatches of n_ubatch tokens)."""
        a = self.ctx.model.architecture
        L = a.layers
        attn_t, ffn_t = self._typed_bytes()
        ops: dict[str, np.ndarray] = {}
        nbytes: dict[str, np.ndarray] = {}
        for typed in (attn_t, ffn_t):
            for t, per_layer in typed.items():
                params = per_layer / self._bytes_per_weight(t)
                ops[t] = ops.get(t, 0.0) + 2.0 * params * P
                nbytes[t] = nbytes.get(t, 0.0) + per_layer * np.ceil(P / self.opt.n_ubatch)  # each ubatch streams the weights once
        out = [Compute("prefill_layer" if i == 0 else f"prefill_{t}", "cpu", ops[t], "gemm", self.pools[t], "fp16" if t == "f16" else "i8mm",
                       bytes_for_gemm=nbytes[t]) for i, t in enumerate(ops)]
        p = max(P, 1)
        scores = 2 * 2 * a.heads * a.head_dim * (p * (p + 1) / 2) * np.ones(L)  # QK^T and AV over the causal prompt
        out.append(Compute("prefill_attention", "cpu", scores, "gemm", self.kv_pool, "fp16"))
        return out

    def _bytes_per_weight(self, t: str) -> float:
        from ..specs.quant import gguf_block_bytes_per_weight

        return gguf_block_bytes_per_weight(t) if self.sizes.gguf() is not None else self.sizes.bpw
