"""ExecuTorch on Android: XNNPACK with KleidiAI kernels on the CPU, every weight resident
(docs/sources.md §D).

The engine's published configuration, as defaults:

* **Threads.** ``-1``, ExecuTorch's default, counts the cores that are not A520/A510/A55
  (``extension/threadpool/cpuinfo_utils.cpp``): 6 on a Snapdragon 8 Gen 3, every core of an 8 Elite
  (the ``threads`` default ``0`` means this count).
* **Scheduling.** pthreadpool hands out tiles with work stealing, so the pool runs at the sum of
  its cores' rates (``dynamic``), unlike llama.cpp's equal row split.
* **Operators.** A decoder layer is a dozen delegated operators (Q/K/V/O and the three FFN linears,
  two RMSNorms, RoPE, SDPA, the SiLU product, residual adds): each is one fork-join of the pool
  (``kernels_per_layer``: 12, an assumption from the export graph's shape, not measured).
* **Format.** 8da4w (:data:`pi2sim.specs.quant.Q8DA4W`): int8-matmul GEMMs for the prompt, INT4
  streaming for a token; BF16 and 8da4w-g128 as ExecuTorch exports them.

It refuses to load a model whose weights, KV cache and buffers exceed the app's memory (a .pte
is loaded whole).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from ..schema import spec_field
from . import register
from ._common import options_in_use
from .dense import BestOfOptions, Dense, DenseOptions, step_options
from .memory import RUNTIME_BYTES


@dataclass(frozen=True, kw_only=True)
class ExecuTorchOptions(BestOfOptions):
    threads: int = spec_field(default=0, lo=0, hi=16, help="CPU threads; 0: ExecuTorch's default, the cores that are not little (A5xx)")
    cores: str = spec_field(default="auto", help="'auto' or core ids / cluster names")
    scheduling: Literal["static", "dynamic"] = spec_field(default="dynamic", help="pthreadpool's work stealing (dynamic)")
    kernels_per_layer: int = spec_field(default=12, lo=1, hi=64, help="delegated operators per layer, each a fork-join (assumption: 12)")
    runtime: float = spec_field(default=RUNTIME_BYTES, unit="bytes", lo=0.0, hi=8e9, help="app memory besides weights and KV")


def default_threads(device) -> int:
    """ExecuTorch's ``-1``: the cores that are not little (cpuinfo_utils.cpp skips A520/A510/A55)."""
    return sum(c.count for c in device.cpu.clusters if c.core_class != "little")


@register
class ExecuTorch(Dense):
    name = "executorch"
    summary = "ExecuTorch: XNNPACK + KleidiAI on the CPU, 8da4w, every weight resident; refuses models that do not fit"
    Options = ExecuTorchOptions
    in_memory_by_default = True
    presets = {}
    preset_help = {}
    default_quant = "8da4w"
    quant_formats = ("8da4w", "8da4w-g128", "bf16")  # what the engine exports and runs

    def __init__(self, ctx, options: ExecuTorchOptions):
        self.own = options
        threads = options.threads or default_threads(ctx.device)
        dense = DenseOptions(backend="cpu", threads=threads, cores=options.cores, scheduling=options.scheduling,
                             kernels_per_layer=options.kernels_per_layer, runtime=options.runtime, **step_options(options))
        super().__init__(ctx, dense)

    def engine_name(self) -> str:
        return "ExecuTorch"

    def resolved_options(self):
        return options_in_use(replace(self.own, threads=self.opt.threads))
