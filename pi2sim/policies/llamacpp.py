"""llama.cpp on Android: dense CPU inference, weights memory-mapped (peer-policies.md §2.1).

* **Weights.** ``load_mode: mmap`` (default) maps the GGUF file; the OS page cache, within the
  memory left after the app's own allocations, decides what stays in DRAM (LRU, or Linux's
  two-list variant), see :mod:`pi2sim.access.pagecache`. A token touches every weight once in
  file order, so a model larger than the cache re-reads nearly all of itself per token; for MoE
  models only the routed experts' slices are touched. ``none`` (``--no-mmap``) and ``mlock`` load
  the whole model into anonymous / locked memory and refuse to start when it does not fit, as the
  real engine fails.
* **Faults.** A miss is a major page fault served by the compute thread that touched the page:
  the read of one readahead window, synchronous, several threads faulting at once (so several
  cores issue to the single UFS queue), plus the kernel's CPU path per fault.
* **Compute.** Dense matrix-vector work on ``threads`` threads with llama.cpp's static row
  split (the slowest core sets the pace: adding the A520s slows it down, arXiv 2410.03613 §V-C),
  at ``kernel_efficiency`` of the device's best-kernel rate (fitted to T18: 95% in memory).
  No predictor, no sparsity. Prefill is a CPU GEMM over the prompt.
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
from ._common import EngineRefused, batch_schedule, best_of_kv, options_in_use, refuse_moe_best_of, scaled_pool
from .base import AccessSummary, Policy
from .dense import BestOfOptions


@dataclass(frozen=True, kw_only=True)
class LlamaCppOptions(BestOfOptions):
    load_mode: Literal["mmap", "none", "mlock"] = spec_field(default="mmap", help="mmap (page cache decides), none (--no-mmap) or mlock")
    replacement: Literal["lru", "two-list"] = spec_field(default="two-list", help="page-cache replacement (Linux: two-list)")
    threads: int = spec_field(default=6, lo=1, hi=16, help="compute threads (6 is optimal on Snapdragon 8 Gen 3, arXiv 2410.03613 §V-C)")
    cores: str = spec_field(default="auto", help="'auto' (fastest cores) or core ids / cluster names")
    kernel_efficiency: float = spec_field(
        default=0.951, gt=0.0, hi=1.0,
        help="llama.cpp kernel speed relative to the device's best INT4 rate (fitted to T18: 9.3 tok/s in memory on TurboSparse-Mistral-7B, "
        "~36 GB/s of weights; arXiv 2410.03613 measured 25 GB/s with another build on another 8 Gen 3 phone; bounds: 0.5..1)",
    )
    readahead: float | None = spec_field(
        default=31 * 1024, unit="bytes", lo=4096, hi=64 * 2**20,
        help="bytes a major fault reads (fitted to T17: llama.cpp, ProSparse-Llama-2-7B, 50% offload, 0.39 tok/s). Below the device's "
        "readahead window because a thrashing mapping reads less around each fault (Linux stops mmap read-around once misses "
        "outnumber hits, mm/filemap.c MMAP_LOTSAMISS). Not in pi2sim calibrate's free set: it changes the page-cache simulation, not only timing; "
        "None: the device's window",
    )
    runtime: float = spec_field(default=RUNTIME_BYTES, unit="bytes", lo=0.0, hi=8e9, help="app memory besides weights and KV (compute buffers, runtime)")


@register
class LlamaCpp(Policy):
    name = "llamacpp"
    summary = "llama.cpp: dense CPU decode, weights memory-mapped (page cache), no predictor"
    Options = LlamaCppOptions
    needs_activity = False  # an MoE model's routing only
    presets = {
        "no-mmap": {"load_mode": "none"},
        "mlock": {"load_mode": "mlock"},
        "lru": {"replacement": "lru"},
    }
    preset_help = {
        "no-mmap": "read weights into anonymous memory; refuses to start if the model does not fit",
        "mlock": "lock the mapping in memory; refuses to start if the model does not fit",
        "lru": "plain LRU page cache instead of Linux's two-list",
    }

    def __init__(self, ctx, options):
        super().__init__(ctx, options)
        d = ctx.device
        cores = pick_cores(d, options.cores, options.threads, what="cores")
        self.pool = scaled_pool(CpuPool(cores, "static", 1.0, d.cpu.barrier_s), options.kernel_efficiency)
        self.block = options.readahead or d.storage.readahead_bytes or d.storage.page_bytes
        self.sizes = ctx.sizes
        self.layout = pagecache.layout_for(self.sizes, self.block)  # where each weight's blocks lie in the file
        self._mem: MemoryPlan | None = None
        refuse_moe_best_of(ctx.model, options.best_of)

    def resolved_options(self):
        return options_in_use(self.opt)

    def model_bytes(self) -> float:
        s = self.sizes
        return s.non_ffn() + s.ffn_total()

    def memory(self) -> MemoryPlan:
        if self._mem is not None:
            return self._mem
        ctx, s, o = self.ctx, self.sizes, self.opt
        anon = {"kv_cache": best_of_kv(s, ctx.context_tokens, ctx.prompt_tokens, o.best_of), "activations": s.activations(ctx.prompt_tokens), "runtime": o.runtime}
        fixed = sum(anon.values())
        model = self.model_bytes()
        if ctx.memory_gb is not None:
            # every weight page is pageable: the app needs only its anonymous memory to start
            budget, avail = budget_from(ctx.memory_gb, None, fixed, 0.0, ctx.device.dram.app_usable_bytes, ctx.device.name)
        else:
            # --ffn-offload: the budget of an engine keeping non-FFN weights and (1 - F) of the FFN
            budget, avail = budget_from(None, ctx.ffn_offload, fixed + s.non_ffn(), s.ffn_total(), ctx.device.dram.app_usable_bytes, ctx.device.name)
            avail += s.non_ffn()  # the page cache holds the whole file, non-FFN weights included
        if o.load_mode in ("none", "mlock") and model > avail:
            flag = "--no-mmap" if o.load_mode == "none" else "--mlock"
            raise EngineRefused(
                None, f"llamacpp {flag}",
                f"cannot load: the model needs {model / GB:.2f} GB resident but only {avail / GB:.2f} GB of the {budget / GB:.2f} GB budget is left "
                f"after KV cache and buffers (the real engine fails to allocate / lock; use load_mode=mmap)",
            )
        plan = MemoryPlan(budget=budget, components=anon)
        if o.load_mode in ("none", "mlock"):
            plan.components["weights"] = model
            plan.cache_units = int(np.ceil(model / self.block)) + 1
        else:
            file_bytes = self.layout.total_bytes()  # the file's pages, each tensor's last block included
            if avail >= file_bytes:  # the whole file fits: the page cache holds every block of it
                plan.neuron_cache, plan.cache_units = file_bytes, self.layout.n_blocks
            else:
                plan.neuron_cache = avail  # page cache holding model pages
                plan.cache_units = int(plan.neuron_cache // self.block)
            plan.notes.append(f"page cache: {plan.neuron_cache / GB:.2f} GB for a {file_bytes / GB:.2f} GB model file ({o.replacement})")
        self._mem = plan
        return plan

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
        return AccessSummary(
            hit_rate=acc.hit_rate,
            details={
                "page_cache_blocks": acc.capacity_blocks,
                "model_blocks": acc.total_blocks,
                "block_bytes": float(self.block),
                "faults_per_token": float(miss / T),
                "page_cache_evictions": acc.evictions,
                "prompt_faults": acc.prefill_miss,
            },
        )

    def decode_plan(self, acc: pagecache.PageAccess, memory: MemoryPlan) -> DecodePlan:
        ctx, s = self.ctx, self.sizes
        a = ctx.model.architecture
        T, L = acc.attn_miss.shape
        dtype = ctx.quant.compute_dtype
        d = ctx.device
        ctxlen = ctx.context_lengths()[:, None]
        kv = s.kv_per_token_layer(ctxlen)
        attn = s.attention_per_layer() + s.router_per_layer() + kv
        expert_bytes = a.ffn_neurons * a.matrices_per_neuron * a.hidden * s.bpw
        ffn = np.full((T, L), a.top_k * expert_bytes)
        pages_per_block = self.block / d.storage.page_bytes
        fault_cpu = d.cpu.page_fault_s * max(1.0, pages_per_block / 16)  # fault-around maps 16 pages per fault
        span = float(self.layout.total_bytes())
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
        reads = acc.attn_miss.sum(axis=1) + acc.ffn_miss.sum(axis=1) + acc.head_miss
        plan = DecodePlan(T, L, stages, token, flash_bytes=reads * self.block, flash_reads=reads.astype(float))
        if b is not None:
            plan.batch = b
        plan.validate()
        return plan

    def prefill_plan(self, memory: MemoryPlan, access: pagecache.PageAccess | None = None) -> PrefillPlan:
        ctx, s = self.ctx, self.sizes
        a = ctx.model.architecture
        L, P = a.layers, ctx.prompt_tokens
        ops_tok = a.prefill_ops_per_token(P) / L
        layer_bytes = s.attention_per_layer() + a.experts * a.ffn_neurons * a.matrices_per_neuron * a.hidden * s.bpw
        comp = Compute("prefill_layer", "cpu", np.full(L, ops_tok * P), "gemm", self.pool, ctx.quant.compute_dtype, bytes_for_gemm=np.full(L, layer_bytes))
        head = [Compute("prefill_lm_head", "cpu", np.array([s.lm_head()]), "matvec", self.pool, ctx.quant.compute_dtype)]
        load = None
        if self.opt.load_mode == "mmap":
            # the prompt pass faults in what the page cache does not hold, synchronously (no overlap)
            # (the page-cache simulation counts them; without it, what the cache cannot hold)
            n = access.prefill_miss if access is not None else max(0, int(np.ceil(self.model_bytes() / self.block)) - memory.cache_units)
            if n > 0:
                load = Flash("prefill_faults", np.full(L, n / L), self.block, self.model_bytes(), "mid", self.pool.ids(), qd=self.pool.n, n_issuers=self.pool.n, sequential=True)
        return PrefillPlan(L, P, load, [comp], head, pipelined=False)
