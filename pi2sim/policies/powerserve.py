"""PowerServe (SJTU IPADS) with its QNN backend: the transformer on the NPU, the LM head and the
glue on CPU threads, every weight resident (docs/sources.md §D).

The engine's published configuration, as defaults: QNN NPU backend, 4-bit weights and 16-bit
activations (w4a16), ``n_threads: 4``, ``batch_size: 128`` (prompt tokens per NPU graph call).

Mechanisms, and what each rests on:

* **Decode.** The decoder layers run on the NPU as a few context binaries per token (as Genie's);
  the LM head runs on the CPU threads at 8 bits (assumption: ``n_threads`` matters for the
  published configuration, and the head is the large matrix QNN graphs leave out; its bytes are
  the format's head bytes). The two run one after the other.
* **Prefill.** A batch of ``batch_size`` prompt positions per graph call (the prompt padded to a
  multiple). Besides the NPU's GEMM, each layer costs CPU time per prompt token:
  ``prefill_cpu_s`` (fitted to PowerServe's Llama-3.2-1B prefill, 1,876.58 tok/s; the 8B row,
  468.35, is predicted from it: the per-token-and-layer cost is what the two rows share, ~2.8 and
  ~3.0 ms per layer per 128-token batch). It stands for what the engine does on the CPU between
  the NPU's graphs (attention over the batch, norms, activation conversion); which of these it is
  is not published.
* **Memory.** Every weight resident once (assumption: its prompt and token graphs share the
  weights, as Genie's do); a model that does not fit the app's memory is refused.
* **Speculation** (``--set draft_model=llama-3.2-1b``): the draft decodes ``draft_tokens`` tokens
  on the NPU, the target verifies them in one batched pass, the LM head of every verified position
  on the CPU (:meth:`Dense.speculative_plan`). The acceptance rate is not published: its default
  is fitted to the one speculative row (21.02 tok/s), assuming 4 drafted tokens per step.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..schema import spec_field
from . import register
from .dense import BestOfOptions, Dense, DenseOptions, SpeculationOptions, step_options
from .memory import RUNTIME_BYTES

ACCEPTANCE = 0.864  # fitted to PowerServe's speculative row (Llama-3.1-8B, Llama-3.2-1B draft, 21.02 tok/s) with 4 drafted tokens per step (assumption; 2-6 give 0.86-0.90)
PREFILL_CPU_S = 17.8e-6  # fitted to PowerServe's Llama-3.2-1B prefill (1,876.58 tok/s, 8 Gen 3, a 128-token prompt assumed): CPU seconds per prompt token and layer


@dataclass(frozen=True, kw_only=True)
class PowerServeOptions(SpeculationOptions, BestOfOptions):
    n_threads: int = spec_field(default=4, lo=1, hi=16, help="CPU threads (PowerServe's n_threads: 4)")
    batch_size: int = spec_field(default=128, lo=1, hi=4096, help="prompt positions per NPU graph call (PowerServe's batch_size: 128)")
    prefill_cpu_s: float = spec_field(
        default=PREFILL_CPU_S, unit="time", lo=0.0, hi=1e-3,
        help="CPU time per prompt token and layer beside the NPU's work (fitted to PowerServe's Llama-3.2-1B prefill, 1876.58 tok/s)",
    )
    runtime: float = spec_field(default=RUNTIME_BYTES, unit="bytes", lo=0.0, hi=8e9, help="app memory besides weights and KV")
    acceptance: float = spec_field(  # PowerServe's own default
        default=ACCEPTANCE, gt=0.0, hi=1.0,
        help="speculative decoding: chance that each drafted token is accepted (fitted to PowerServe's Llama-3.1-8B with a Llama-3.2-1B draft, 21.02 tok/s, with draft_tokens 4)",
    )


@register
class PowerServe(Dense):
    name = "powerserve"
    summary = "PowerServe (QNN backend): decoder layers on the NPU (w4a16, 128-token prompt batches), LM head on 4 CPU threads"
    Options = PowerServeOptions
    in_memory_by_default = True
    presets = {}
    preset_help = {}
    default_quant = "w4a16"
    quant_formats = ("w4a16",)  # what the engine exports and runs

    def __init__(self, ctx, options: PowerServeOptions):
        self.own = options
        super().__init__(ctx, DenseOptions(backend="npu", threads=options.n_threads, scheduling="dynamic", weights_shared=True, runtime=options.runtime,
                                           **step_options(options)))

    def head_unit(self) -> str:
        return "cpu"

    def prefill_chunk(self) -> int:
        return self.own.batch_size

    def prefill_layer_cpu_s(self) -> float:
        return self.own.prefill_cpu_s

    def engine_name(self) -> str:
        return "PowerServe"
