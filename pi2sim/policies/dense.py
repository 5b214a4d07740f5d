"""Dense in-memory engines: every weight resident, nothing read from flash (docs/sources.md §D).

``backend`` chooses the engine family:

* ``cpu``: llama.cpp / ExecuTorch-style CPU decoding, threads with a static row split (or
  ``scheduling: dynamic``, work stealing), ``kernels_per_layer`` fork-joins per layer, at
  ``kernel_efficiency`` of the device's best INT4 rate (1.0: ExecuTorch with KleidiAI, which
  reaches the DRAM limit; 0.951: llama.cpp's Q4_0 kernels, fitted to T18). Prefill is a CPU GEMM.
* ``npu``: QNN / Genie-style. Static graphs: a prompt-processor graph of ``graph_tokens`` tokens
  per call and a token-generator graph (batch 1); per-channel quantization; unless the two graphs
  share weights (``weights_shared``) the weights are held twice, as QNN context binaries do.
* ``gpu``: MLC-LLM-style OpenCL. All weights plus temporary buffers must fit in the memory the
  GPU runtime offers one app; otherwise loading fails with MLC's error (mlc-llm #2703).

No predictor and no sparsity: every FFN neuron of the (routed experts of the) layer is computed.
A model that does not fit the memory budget is refused the way the real engine fails.

The named engines (``executorch``, ``genie``, ``powerserve``, ``mlc``) are thin subclasses that
set the options to their published configuration and override the hooks below (static context,
where the head runs, prompt chunk, CPU work in prefill, prefill efficiency, default budget).
Two options change what a decode step is, for every backend: speculative decoding
(``draft_model``: :meth:`Dense.speculative_plan`) and Best-of-N (``best_of``:
:meth:`Dense.batched_plan`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, Literal

import numpy as np

from ..engine.compute import CpuPool, pick_cores
from ..engine.plan import Compute, DecodePlan, Flash, PrefillPlan
from ..errors import InputError
from ..specs.model import load_model
from .memory import GB, RUNTIME_BYTES, MemoryPlan, ModelBytes, budget_from
from ..schema import spec_field
from . import register
from .base import AccessSummary, Policy
from ._common import EngineRefused, batch_schedule, best_of_kv, options_in_use, refuse_moe_best_of, scaled_pool

QNN_SPLITS = 4  # assumption: QNN/Genie 7B models ship as 4 context binaries (AI Hub splits Llama-2-7B so)
MLC_TEMP_BYTES = 278e6  # MLC's temporary buffers for a 7-8B model at default prefill chunk (mlc-llm #2703: "temp 278 MB")


@dataclass(frozen=True, kw_only=True)
class BestOfOptions:
    """Best-of-N, for every engine built on this policy (and their options classes)."""

    best_of: int = spec_field(default=1, lo=1, hi=64, help="Best-of-N: candidates decoded together after one prefill (--best-of)")
    drop_every: int = spec_field(default=4, lo=1, hi=1_000_000, help="Best-of-N: a candidate finishes every this many steps (PI2 v3 §7.4: 4)")


@dataclass(frozen=True, kw_only=True)
class SpeculationOptions:
    """Speculative decoding, for the engines built on this policy that have it."""

    draft_model: str | None = spec_field(default=None, help="speculative decoding: the draft model (bundled name or YAML path); none: one token per step")
    draft_tokens: int = spec_field(default=4, lo=1, hi=32, help="speculative decoding: tokens the draft proposes per step (assumption: 4)")
    acceptance: float = spec_field(default=0.8, gt=0.0, hi=1.0, help="speculative decoding: chance that each drafted token is accepted, independently (assumption: 0.8, a typical same-family draft; no published value)")


def step_options(options) -> dict:
    """The Best-of-N and speculation options an engine's options carry, to hand to
    :class:`DenseOptions`."""
    names = {f.name for f in fields(BestOfOptions)} | {f.name for f in fields(SpeculationOptions)}
    return {f.name: getattr(options, f.name) for f in fields(options) if f.name in names}


@dataclass(frozen=True, kw_only=True)
class DenseOptions(SpeculationOptions, BestOfOptions):
    backend: Literal["cpu", "npu", "gpu"] = spec_field(default="cpu", help="cpu (llama.cpp/ExecuTorch), npu (QNN/Genie), gpu (MLC-LLM)")
    threads: int = spec_field(default=6, lo=1, hi=16, help="CPU threads (cpu backend; also CPU-side work of the others)")
    cores: str = spec_field(default="auto", help="'auto' or core ids / cluster names")
    scheduling: Literal["static", "dynamic"] = spec_field(
        default="static", help="CPU work split: static (equal rows per thread, the slowest core sets the pace: llama.cpp) or dynamic (work stealing: pthreadpool, XNNPACK)"
    )
    kernels_per_layer: int = spec_field(default=1, lo=1, hi=64, help="CPU operators dispatched per layer, each a fork-join of the thread pool")
    kernel_efficiency: float = spec_field(default=1.0, gt=0.0, hi=1.0, help="CPU kernel speed relative to the device's best INT4 rate (llama.cpp: 0.951)")
    weights_shared: bool = spec_field(default=False, help="npu: prefill and decode graphs share one copy of the weights")
    large_buffers: bool = spec_field(default=True, help="gpu: cl_qcom_large_buffer available (no 1 GB per-allocation cap)")
    runtime: float = spec_field(default=RUNTIME_BYTES, unit="bytes", lo=0.0, hi=8e9, help="app memory besides weights and KV")


def tokens_per_step(acceptance: float, draft_tokens: int) -> float:
    """Expected tokens a speculative step advances: the accepted prefix of the k drafted tokens
    plus the target's own next token, (1 - a^(k+1)) / (1 - a) for independent acceptances a
    (Leviathan et al. 2023)."""
    a, k = acceptance, draft_tokens
    return float(k + 1) if a >= 1.0 else (1.0 - a ** (k + 1)) / (1.0 - a)


@register
class Dense(Policy):
    name = "dense"
    summary = "dense in-memory engines: CPU (llama.cpp/ExecuTorch), NPU (QNN), GPU (MLC-LLM); refuses models that do not fit"
    Options = DenseOptions
    presets = {
        "llama.cpp": {"backend": "cpu", "kernel_efficiency": 0.951, "threads": 6},
        "executorch": {"backend": "cpu", "kernel_efficiency": 1.0, "threads": 6},
        "qnn": {"backend": "npu"},
        "mlc": {"backend": "gpu"},
    }
    preset_help = {
        "llama.cpp": "CPU, llama.cpp Q4_0 kernels (95% of the best rate, the llamacpp policy's value fitted to T18), 6 threads",
        "executorch": "CPU, ExecuTorch XNNPACK + KleidiAI kernels, 6 threads",
        "qnn": "Qualcomm QNN / Genie on the NPU, static prefill and decode graphs",
        "mlc": "MLC-LLM on the GPU (OpenCL)",
    }
    uses_trace = True  # only for the routed experts of MoE models
    needs_activity = False
    in_memory_by_default: ClassVar[bool] = False  # a run naming no memory condition gets the phone's app memory (the named engines)

    def __init__(self, ctx, options):
        super().__init__(ctx, options)
        self.own = getattr(self, "own", options)  # the options as given (a named engine's own class, set before this)
        d = ctx.device
        if self.backend == "npu":  # QNN graphs (Genie, PowerServe, the dense QNN engine): a Hexagon NPU
            d.require_npu(self.name)
        elif self.backend == "gpu":
            d.require_gpu(self.name)
        cores = pick_cores(d, options.cores, options.threads, what="cores")
        self.pool = scaled_pool(CpuPool(cores, options.scheduling, d.cpu.sparse_efficiency, d.cpu.barrier_s), options.kernel_efficiency)
        self.sizes = ctx.sizes
        self._mem: MemoryPlan | None = None
        self.draft_sizes = self._draft(options)
        if self.draft_sizes is not None and options.best_of > 1:
            raise InputError(None, "best_of", "one sequence with speculative decoding (draft_model): not both", options.best_of)
        refuse_moe_best_of(ctx.model, options.best_of)

    def _draft(self, o) -> ModelBytes | None:
        """The draft model's sizes (same weight format as the target: assumption), or None."""
        if not o.draft_model:
            return None
        try:
            draft = load_model(o.draft_model)
        except InputError as e:  # name the option the user set, not --model
            raise InputError(e.source, "draft_model", e.expected, e.got) from None
        target = self.ctx.model
        if draft.architecture.vocab != target.architecture.vocab:
            raise InputError(None, "draft_model", f"a draft model with {target.name}'s vocabulary ({target.architecture.vocab} tokens; {draft.name} has {draft.architecture.vocab})", o.draft_model)
        if draft.architecture.is_moe:
            raise InputError(None, "draft_model", "a dense draft model", o.draft_model)
        return ModelBytes(draft, self.ctx.quant)

    def resolved_options(self):
        return options_in_use(self.own)

    # ---- what an engine built on this policy changes (pi2sim/policies/executorch.py, genie.py, ...)
    @property
    def backend(self) -> str:
        return self.opt.backend

    def static_context(self) -> int | None:
        """KV positions a static token-generator graph attends to every token, whatever the
        position (None: the tokens so far, as a dynamic engine does)."""
        return None

    def head_unit(self) -> str:
        """Where the LM head runs."""
        return self.backend

    def prefill_chunk(self) -> int:
        """Prompt tokens per prefill graph call (npu backend)."""
        return self.ctx.device.npu.graph_tokens

    def prefill_layer_cpu_s(self) -> float:
        """CPU time per prompt token and layer beside the accelerator's work (0: none)."""
        return 0.0

    def prefill_efficiency(self) -> float:
        """The engine's prefill kernels relative to the unit's GEMM rate."""
        return 1.0

    def batches_sequences(self) -> bool:
        """Whether one decode pass serves several sequences (Best-of-N). QNN's token graph is a
        static one-sequence shape (AR-1, one KV cache), so an NPU engine runs a pass per sequence;
        the CPU and GPU kernels take any batch."""
        return self.backend != "npu"

    def unbounded_budget(self, need: float) -> float:
        """The budget of a run that names neither --memory-gb nor --ffn-offload: the phone's app
        memory for a named engine (``in_memory_by_default``); for the generic policy, as for the
        other policies, a budget keeping half the FFN out of DRAM (so the engine refuses)."""
        if self.in_memory_by_default:
            return self.ctx.device.dram.app_usable_bytes
        s = self.sizes
        share = 0.5 if self.ctx.ffn_offload is None else self.ctx.ffn_offload
        twice = 2 if (self.backend == "npu" and not self.opt.weights_shared) else 1
        return min(need - share * s.ffn_total() * twice, self.ctx.device.dram.app_usable_bytes)

    def kv_resident(self) -> float:
        ctx = self.ctx
        return best_of_kv(self.sizes, self.static_context() or ctx.context_tokens, ctx.prompt_tokens, self.opt.best_of)

    def weights(self) -> float:
        s = self.sizes
        return s.non_ffn() + s.ffn_total()

    def resident(self) -> dict[str, float]:
        """What the engine keeps in DRAM, by component (bytes): every weight, the KV cache, buffers."""
        ctx, s, o = self.ctx, self.sizes, self.opt
        comps = {"weights": self.weights(), "kv_cache": self.kv_resident(), "activations": s.activations(ctx.prompt_tokens), "runtime": o.runtime}
        if self.backend == "npu" and not o.weights_shared:
            comps["weights_second_graph"] = self.weights()
        if self.draft_sizes is not None:  # speculative decoding: the draft model resides beside the target
            ds = self.draft_sizes
            comps["draft_weights"] = ds.non_ffn() + ds.ffn_total()
            comps["draft_kv_cache"] = ds.kv_cache(ctx.context_tokens)
        return comps

    def memory(self) -> MemoryPlan:
        if self._mem is not None:
            return self._mem
        ctx, s, o = self.ctx, self.sizes, self.opt
        d = ctx.device
        comps = self.resident()
        need = sum(comps.values())
        if ctx.memory_gb is not None:
            budget = ctx.memory_gb * GB
            if budget > d.dram.app_usable_bytes * (1 + 1e-9):
                budget_from(ctx.memory_gb, None, 0.0, 0.0, d.dram.app_usable_bytes, d.name)  # raises the one-line error
        elif ctx.ffn_offload is None:
            budget = self.unbounded_budget(need)
        else:
            budget = min(need - ctx.ffn_offload * s.ffn_total() * (2 if "weights_second_graph" in comps else 1), d.dram.app_usable_bytes)
        if need > budget * (1 + 1e-9):
            raise EngineRefused(
                None, f"{self.name} ({self.backend})",
                f"cannot load: {self.engine_name()} keeps every weight resident and needs {need / GB:.2f} GB, the budget is {budget / GB:.2f} GB",
            )
        if self.backend == "gpu":
            temp = MLC_TEMP_BYTES
            if self.weights() + temp > d.gpu.usable_bytes:
                raise EngineRefused(
                    None, f"{self.name} (gpu)",
                    f"cannot allocate: available single GPU memory {d.gpu.usable_bytes / 2**20:.0f} MB < weights "
                    f"{self.weights() / 2**20:.0f} MB + temp {temp / 2**20:.0f} MB (MLC-LLM's check, mlc-llm #2703)",
                )
            biggest = max(s.lm_head(), s.embeddings(), s.arch.experts * s.arch.ffn_neurons * s.arch.hidden * s.bpw)
            if not o.large_buffers and biggest > d.gpu.max_alloc_bytes:
                raise EngineRefused(
                    None, f"{self.name} (gpu)",
                    f"cannot allocate a {biggest / 2**20:.0f} MB buffer: the OpenCL per-allocation cap is {d.gpu.max_alloc_bytes / 2**20:.0f} MB without cl_qcom_large_buffer",
                )
        plan = MemoryPlan(budget=budget, components=comps)
        if ctx.memory_gb is None and ctx.ffn_offload is None and self.in_memory_by_default:
            plan.condition = "in memory"  # the engine's own default: the phone's app memory
        self._mem = plan
        return plan

    def engine_name(self) -> str:
        return {"cpu": "a CPU engine (llama.cpp --no-mmap / ExecuTorch)", "npu": "QNN", "gpu": "MLC-LLM"}[self.backend]

    def access(self, workload, memory: MemoryPlan):
        experts = workload.experts() if (workload is not None and self.ctx.model.architecture.is_moe) else None
        return {"experts": experts}

    def access_summary(self, acc) -> AccessSummary:
        return AccessSummary(hit_rate=1.0, details={"resident": "all weights"})

    def decode_plan(self, acc, memory: MemoryPlan) -> DecodePlan:
        if self.draft_sizes is not None:
            return self.speculative_plan()
        if self.opt.best_of > 1:
            return self.batched_plan()
        ctx, s = self.ctx, self.sizes
        a = ctx.model.architecture
        d = ctx.device
        T, L = ctx.decode_tokens, a.layers
        static = self.static_context()
        ctxlen = np.full((T, 1), float(static)) if static else ctx.context_lengths()[:, None]
        expert = a.ffn_neurons * a.matrices_per_neuron * a.hidden * s.bpw
        layer = s.attention_per_layer() + s.router_per_layer() + a.top_k * expert + s.kv_per_token_layer(ctxlen)
        dtype = ctx.quant.compute_dtype
        backend = self.backend
        if backend == "cpu":
            stages = [Compute("layer", "cpu", layer, "matvec", self.pool, dtype)]
            k = self.opt.kernels_per_layer
            if k > 1:  # every further operator of the layer is one more fork-join of the pool
                stages.append(Compute("dispatch", "cpu", np.full((T, L), (k - 1) * self.pool.barrier_s * self.pool.n), "cpu_seconds",
                                      self.pool, category="other", barrier=False))
        else:
            # QNN runs a 7B-class model as a few fused context binaries (Qualcomm splits them in
            # ~4 parts): one graph execution per split per token, not one per layer; MLC launches
            # a handful of kernels per layer
            if backend == "npu":
                layer_fixed = 0.0
            else:
                layer_fixed = 4 * d.gpu.launch_s
            stages = [Compute("layer", backend, layer, "matvec", fixed_s=layer_fixed)]
        head = np.full(T, s.lm_head())
        unit = self.head_unit()
        fixed = self._unit_fixed()
        if unit == "cpu":
            token = [Compute("lm_head", "cpu", head, "matvec", self.pool, dtype, fixed_s=fixed)]
        else:
            token = [Compute("lm_head", unit, head, "matvec", fixed_s=fixed)]
        plan = DecodePlan(T, L, stages, token, flash_bytes=np.zeros(T), flash_reads=np.zeros(T))
        plan.validate()
        return plan

    def _unit_fixed(self) -> float:
        """Fixed cost of one pass of a model on the backend (QNN's context binaries, a GPU launch)."""
        d = self.ctx.device
        if self.backend == "npu":
            return QNN_SPLITS * d.npu.invocation_s + d.npu.sync_s
        return d.gpu.launch_s if self.backend == "gpu" else 0.0

    def _stage(self, name: str, unit: str, work, op: str, fixed_s: float = 0.0, bytes_for_gemm=None) -> Compute:
        pool = self.pool if unit == "cpu" else None
        return Compute(name, unit, work, op, pool, self.ctx.quant.compute_dtype, fixed_s=fixed_s, bytes_for_gemm=bytes_for_gemm)

    def speculative_plan(self) -> DecodePlan:
        """Speculative decoding. A step: the draft model decodes ``draft_tokens`` (k) tokens one
        after another, then the target verifies the k + 1 positions in one batched pass (each
        weight read once for all of them: a GEMM at the unit's rate, floored by streaming the
        layer's bytes), and the step advances by the expected accepted tokens E
        (:func:`tokens_per_step`). Each simulated token carries 1/E of a step (mean throughput is
        exact; the per-token latency is the step's average, not its burst). The draft runs on the
        target's backend, in the same weight format (assumption)."""
        ctx, s, o = self.ctx, self.sizes, self.opt
        a = ctx.model.architecture
        T, L = ctx.decode_tokens, a.layers
        k = o.draft_tokens
        E = tokens_per_step(o.acceptance, k)
        static = self.static_context()
        ctxlen = np.full((T, 1), float(static)) if static else ctx.context_lengths()[:, None]
        expert_params = a.ffn_neurons * a.matrices_per_neuron * a.hidden
        layer_bytes = s.attention_per_layer() + s.router_per_layer() + a.top_k * expert_params * s.bpw + s.kv_per_token_layer(ctxlen)
        layer_params = a.attention_params_per_layer + a.router_params_per_layer + a.top_k * expert_params
        scores = 4.0 * a.heads * a.head_dim * np.minimum(ctxlen, a.kv_window())  # QK^T and AV of one position
        verify_ops = (k + 1) * (2.0 * layer_params + scores)
        unit = self.backend
        fixed = self._unit_fixed()
        stages = [self._stage("verify", unit, verify_ops / E, "gemm", bytes_for_gemm=layer_bytes / E)]
        head_unit = self.head_unit()
        head_ops = np.full(T, (k + 1) * 2.0 * a.vocab * a.hidden)
        token = [self._stage("verify_lm_head", head_unit, head_ops / E, "gemm", fixed_s=fixed / E, bytes_for_gemm=np.full(T, s.lm_head() / E))]
        ds = self.draft_sizes
        da = ds.arch
        d_expert = da.ffn_neurons * da.matrices_per_neuron * da.hidden * ds.bpw
        d_layer = ds.attention_per_layer() + ds.router_per_layer() + da.top_k * d_expert + ds.kv_per_token_layer(ctxlen)  # [T, Ld]
        draft_bytes = d_layer.sum(axis=1) + ds.lm_head()
        token.append(self._stage("draft", unit, k * draft_bytes / E, "matvec", fixed_s=k * fixed / E))
        plan = DecodePlan(T, L, stages, token, flash_bytes=np.zeros(T), flash_reads=np.zeros(T))
        plan.speculation = {"draft_model": ds.model.name, "draft_tokens": k, "acceptance": o.acceptance, "tokens_per_step": E}
        plan.validate()
        return plan

    def batched_plan(self) -> DecodePlan:
        """Best-of-N: the alive candidates decode together, one step per token of each. On the CPU
        and the GPU a step streams every weight once for all of them (a batched matvec: the unit's
        compute is shared by the sequences, :meth:`pi2sim.engine.components.Components.demand`);
        on the NPU a static one-sequence graph runs once per sequence (:meth:`batches_sequences`).
        Each sequence reads its own KV cache. The per-step batch is :func:`batch_schedule`."""
        ctx, s, o = self.ctx, self.sizes, self.opt
        a = ctx.model.architecture
        d = ctx.device
        T, L = ctx.decode_tokens, a.layers
        b = batch_schedule(T, o.best_of, o.drop_every)
        bl = np.repeat(b[:, None], L, axis=1)
        static = self.static_context()
        ctxlen = np.full((T, 1), float(static)) if static else ctx.context_lengths()[:, None]
        expert = a.ffn_neurons * a.matrices_per_neuron * a.hidden * s.bpw
        weights = np.full((T, L), s.attention_per_layer() + s.router_per_layer() + a.top_k * expert)
        kv = bl * s.kv_per_token_layer(ctxlen)
        dtype = ctx.quant.compute_dtype
        backend = self.backend
        per_op = s.bpw / 2.0
        if backend == "cpu":
            stages = [Compute("layer", "cpu", weights, "matvec", self.pool, dtype, batch=bl),
                      Compute("kv", "cpu", kv, "matvec", self.pool, dtype, barrier=False)]
            k = self.opt.kernels_per_layer
            if k > 1:
                stages.append(Compute("dispatch", "cpu", np.full((T, L), (k - 1) * self.pool.barrier_s * self.pool.n), "cpu_seconds",
                                      self.pool, category="other", barrier=False))
        elif self.batches_sequences():
            stages = [Compute("layer", backend, weights, "matvec", fixed_s=4 * d.gpu.launch_s, batch=bl, bytes_per_op=per_op),
                      Compute("kv", backend, kv, "matvec")]
        else:  # a static one-sequence graph: every sequence its own pass, weights streamed each time
            stages = [Compute("layer", backend, bl * weights + kv, "matvec")]
        head = np.full(T, s.lm_head())
        unit = self.head_unit()
        seq = self.batches_sequences()
        fixed = self._unit_fixed()
        if unit == "cpu":
            token = [Compute("lm_head", "cpu", head, "matvec", self.pool, dtype, fixed_s=fixed, batch=b)]
        else:
            token = [Compute("lm_head", unit, head * (1 if seq else b), "matvec", fixed_s=fixed, batch=b if seq else None, bytes_per_op=per_op)]
        if not seq:  # the graphs' fixed costs, once per sequence
            token.append(Compute("graph_calls", "cpu", (b - 1) * fixed * self.pool.n, "cpu_seconds", self.pool, category="other", barrier=False))
        plan = DecodePlan(T, L, stages, token, flash_bytes=np.zeros(T), flash_reads=np.zeros(T))
        plan.batch = b
        plan.validate()
        return plan

    def prefill_plan(self, memory: MemoryPlan, access=None) -> PrefillPlan:
        plan = self._prefill_plan()
        ds = self.draft_sizes
        if ds is not None:  # the draft reads the prompt too (after the target, on the same unit)
            ops = ds.arch.prefill_ops_per_token(self.ctx.prompt_tokens) * self.ctx.prompt_tokens
            plan.head.append(self._stage("draft_prefill", self.backend, np.array([ops]), "gemm", fixed_s=self._unit_fixed(),
                                         bytes_for_gemm=np.array([ds.non_ffn() + ds.ffn_total() - ds.embeddings()])))
        return plan

    def _prefill_plan(self) -> PrefillPlan:
        ctx, s = self.ctx, self.sizes
        backend = self.backend
        if backend == "cpu":
            return cpu_prefill(ctx, self.pool, resident_share=1.0, bundle_bytes=0.0)
        a = ctx.model.architecture
        d = ctx.device
        L, P = a.layers, ctx.prompt_tokens
        eff = self.prefill_efficiency()
        layer_bytes = s.attention_per_layer() + a.experts * a.ffn_neurons * a.matrices_per_neuron * a.hidden * s.bpw
        extra = []
        cpu_s = self.prefill_layer_cpu_s()
        if backend == "npu":
            g = self.prefill_chunk()
            padded = -(-P // g) * g
            chunks = padded // g
            static = self.static_context()
            # a static prompt graph computes all its g positions and attends to the whole static
            # context (its KV cache is a fixed-shape input); a dynamic one to the prompt so far
            ops_tok = (a.prefill_ops_attending(static) if static else a.prefill_ops_per_token(P)) / L
            kv = s.kv_per_token_layer(np.full((1, 1), float(static)))[0] if static else np.zeros(L)
            comp = Compute("prefill_layer", "npu", np.full(L, ops_tok * padded / eff), "gemm", dtype=ctx.quant.compute_dtype,
                           fixed_s=chunks * QNN_SPLITS * d.npu.invocation_s / L, bytes_for_gemm=(layer_bytes + kv) * chunks)
            head = [Compute("prefill_lm_head", "npu", np.array([s.lm_head()]), "matvec", fixed_s=d.npu.invocation_s + d.npu.sync_s)]
            if cpu_s > 0:
                extra = [Compute("prefill_cpu_work", "cpu", np.full(L, cpu_s * padded * self.pool.n), "cpu_seconds", self.pool, category="other", barrier=False)]
        else:
            ops_tok = a.prefill_ops_per_token(P) / L
            comp = Compute("prefill_layer", "gpu", np.full(L, ops_tok * P / eff), "gemm", dtype=ctx.quant.compute_dtype,
                           fixed_s=4 * d.gpu.launch_s, bytes_for_gemm=np.full(L, layer_bytes))
            head = [Compute("prefill_lm_head", "gpu", np.array([s.lm_head()]), "matvec", fixed_s=d.gpu.launch_s)]
        if self.head_unit() == "cpu":
            head = [Compute("prefill_lm_head", "cpu", np.array([s.lm_head()]), "matvec", self.pool, ctx.quant.compute_dtype)]
        return PrefillPlan(L, P, None, [comp, *extra], head, pipelined=False)


def cpu_prefill(ctx, pool: CpuPool, resident_share: float, bundle_bytes: float) -> PrefillPlan:
    """Dense CPU prefill; FFN weights not resident are read layer by layer (large reads, no overlap)."""
    s = ctx.sizes
    a = ctx.model.architecture
    L, P = a.layers, ctx.prompt_tokens
    ops_tok = a.prefill_ops_per_token(P) / L
    layer_bytes = s.attention_per_layer() + a.experts * a.ffn_neurons * a.matrices_per_neuron * a.hidden * s.bpw
    comp = Compute("prefill_layer", "cpu", np.full(L, ops_tok * P), "gemm", pool, ctx.quant.compute_dtype, bytes_for_gemm=np.full(L, layer_bytes))
    head = [Compute("prefill_lm_head", "cpu", np.array([s.lm_head()]), "matvec", pool, ctx.quant.compute_dtype)]
    load = None
    off = (1.0 - resident_share) * a.experts * a.ffn_neurons * bundle_bytes
    if off > 0:
        size = 512 * 1024
        core = pool.cores[0]
        load = Flash("prefill_load", np.full(L, np.ceil(off / size)), size, a.experts * a.ffn_neurons * bundle_bytes, core.core_class, (core.id,), sequential=True)
    return PrefillPlan(L, P, load, [comp], head, pipelined=False)
