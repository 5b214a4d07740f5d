"""MLC-LLM on Android: TVM-compiled OpenCL kernels on the Adreno GPU, q4f16_1, every weight in
GPU-visible memory (docs/sources.md §D).

* **Memory.** Weights plus MLC's temporary buffers must fit what the GPU runtime offers one app,
  or loading fails with MLC's own message (mlc-llm #2703); see the ``dense`` policy's GPU backend.
* **Decode** streams the weights at the GPU's matrix-vector rate (the device's ``gpu.matvec``,
  itself derived from MLC's 10 tok/s on Llama-2-7B, mlc-llm #1359: that row checks the byte model,
  not the rate).
* **Prefill.** MLC's published prefill on an 8 Gen 3 phone (7 tok/s for Llama-2-7B, slower than
  its decode) is far below what the GPU's GEMM rate (PowerInfer-2 §2.3.1's 37 tok/s) gives: its
  prefill kernels on Adreno reached a fraction of it, ``prefill_efficiency`` (fitted to that row;
  the engine's only published prefill point, so nothing tests it but held-out rows).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..schema import spec_field
from . import register
from .dense import BestOfOptions, Dense, DenseOptions, step_options
from .memory import RUNTIME_BYTES

PREFILL_EFFICIENCY = 0.174  # fitted to MLC-LLM's Llama-2-7B q4f16_1 prefill on an 8 Gen 3 phone, 7 tok/s (mlc-llm #1359)


@dataclass(frozen=True, kw_only=True)
class MlcOptions(BestOfOptions):
    prefill_efficiency: float = spec_field(
        default=PREFILL_EFFICIENCY, gt=0.0, hi=1.0,
        help="prefill kernels' speed relative to the GPU's GEMM rate (fitted to mlc-llm #1359: Llama-2-7B prefill 7 tok/s)",
    )
    large_buffers: bool = spec_field(default=True, help="cl_qcom_large_buffer available (no 1 GB per-allocation cap)")
    runtime: float = spec_field(default=RUNTIME_BYTES, unit="bytes", lo=0.0, hi=8e9, help="app memory besides weights and KV")


@register
class Mlc(Dense):
    name = "mlc"
    summary = "MLC-LLM: OpenCL on the Adreno GPU, q4f16_1, weights in GPU memory; refuses what does not fit"
    Options = MlcOptions
    in_memory_by_default = True
    presets = {}
    preset_help = {}
    default_quant = "q4f16_1"
    quant_formats = ("q4f16_1",)  # what the engine exports and runs

    def __init__(self, ctx, options: MlcOptions):
        self.own = options
        super().__init__(ctx, DenseOptions(backend="gpu", threads=1, large_buffers=options.large_buffers, runtime=options.runtime,
                                           **step_options(options)))

    def prefill_efficiency(self) -> float:
        return self.own.prefill_efficiency

    def engine_name(self) -> str:
        return "MLC-LLM"
