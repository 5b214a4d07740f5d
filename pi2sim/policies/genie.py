"""Qualcomm Genie / QNN on the Hexagon NPU: static context-binary graphs, w4a16, every weight
resident (docs/sources.md §D).

The engine's published configuration, as defaults:

* **Graphs.** A prompt processor of ``prompt_graph_tokens`` (128) positions per call and a
  token generator (one position), both compiled for a fixed ``context`` (AI Hub: 4,096; its
  Llama-3-8B S24 row: 1,024). The shapes are static, so every call attends to the whole context's
  KV cache, filled or not: a prompt of up to 128 tokens costs one full call, and a token reads the
  context's KV cache whatever its position. The model is split into a few context binaries (4,
  as for the ``dense`` policy's NPU backend).
* **Weights.** The two graphs share one copy (``weights_shared``: AI Hub's exports use QNN weight
  sharing, which is what lets an 8B model run on a 12 GB phone; assumption as to the mechanism).
* **Memory.** The KV cache of the whole context is allocated up front. A model whose weights,
  KV cache and buffers do not fit the app's memory is refused, as AI Hub's maintainers say
  ("8B models need an 8 Elite or a 12 GB+ phone: it is the size of the RAM", ai-hub-apps #43).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..schema import spec_field
from . import register
from ._common import EngineRefused
from .dense import BestOfOptions, Dense, DenseOptions, SpeculationOptions, step_options
from .memory import GB, RUNTIME_BYTES


@dataclass(frozen=True, kw_only=True)
class GenieOptions(SpeculationOptions, BestOfOptions):
    context: int = spec_field(default=4096, lo=128, hi=131072, help="context length the graphs are compiled for (AI Hub: 4096)")
    prompt_graph_tokens: int = spec_field(default=128, lo=1, hi=4096, help="positions per prompt-processor call (AI Hub: AR-128)")
    weights_shared: bool = spec_field(default=True, help="prompt and token graphs share one copy of the weights (QNN weight sharing)")
    threads: int = spec_field(default=1, lo=1, hi=16, help="CPU threads (sampling and glue only)")
    runtime: float = spec_field(default=RUNTIME_BYTES, unit="bytes", lo=0.0, hi=8e9, help="app memory besides weights and KV")


@register
class Genie(Dense):
    name = "genie"
    summary = "Qualcomm Genie/QNN on the NPU: static 128-token prompt graphs over a fixed context, w4a16, weights resident"
    Options = GenieOptions
    in_memory_by_default = True
    presets = {}
    preset_help = {}
    default_quant = "w4a16"
    quant_formats = ("w4a16",)  # what the engine exports and runs

    def __init__(self, ctx, options: GenieOptions):
        self.own = options
        super().__init__(ctx, DenseOptions(backend="npu", threads=options.threads, weights_shared=options.weights_shared, runtime=options.runtime,
                                           **step_options(options)))

    def static_context(self) -> int:
        return self.own.context

    def prefill_chunk(self) -> int:
        return self.own.prompt_graph_tokens

    def memory(self):
        ctx = self.ctx
        # the last decoded token is not fed back, so it takes no KV position
        needed = ctx.context_tokens - ctx.context_stride
        if needed > self.own.context:
            raise EngineRefused(None, "genie context",
                                f"cannot run: the graphs hold {self.own.context} positions and the run needs {needed} (prompt + decoded tokens fed back); set context= larger")
        try:
            return super().memory()
        except EngineRefused as e:
            if ctx.memory_gb is None and ctx.ffn_offload is None:
                need = sum(self.resident().values())
                raise EngineRefused(None, "genie",
                                    f"cannot load: the weights and the {self.own.context}-token KV cache need {need / GB:.2f} GB and "
                                    f"{ctx.device.name} gives an app {ctx.device.dram.app_usable_bytes / GB:.2f} GB (AI Hub: an 8B model needs a 12 GB+ phone)") from e
            raise

    def engine_name(self) -> str:
        return "Genie"
