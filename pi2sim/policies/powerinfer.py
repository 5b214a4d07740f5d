"""PowerInfer (v1, arXiv 2312.12456) ported to the phone and extended with asynchronous flash
reads, as PowerInfer-2's motivation study ran it (v3 §2.4, Table 2).

PowerInfer splits neurons offline into a hot set kept in fast memory and cold ones; on a phone
without a GPU the hot set is what fits in DRAM and the cold neurons are read from flash when the
predictor selects them: a static resident set, Gate/Up/Down stored as separate matrices (no
bundles), the layer's cold reads submitted asynchronously at full queue depth (AIO) and waited
for before the layer computes (``serial``), no neuron-cluster pipeline. It reuses PowerInfer-2's access model and engine with these choices
fixed, which is also why it coincides with the first step of PowerInfer-2's ablation.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..schema import spec_field
from . import register
from .powerinfer2 import PowerInfer2, PowerInfer2Options


@dataclass(frozen=True, kw_only=True)
class PowerInferOptions:
    compute_threads: int = spec_field(default=4, lo=1, hi=16, help="CPU compute threads")
    aio_depth: int = spec_field(
        default=1, lo=1, hi=32, help="asynchronous reads in flight (fitted to T11a: the port's I/O is latency-bound, 81.9% of the time; bounds: 1..4)"
    )
    compute_cores: str = spec_field(default="auto", help="'auto' or core ids / cluster names")
    predictor_recall: float = spec_field(default=1.0, gt=0.0, hi=1.0, help="share of active neurons predicted (assumption)")
    predictor_precision: float = spec_field(default=0.8, gt=0.0, hi=1.0, help="share of predicted neurons truly active (assumption)")


@register
class PowerInfer(PowerInfer2):
    name = "powerinfer"
    summary = "PowerInfer v1 on the phone with AIO flash reads: static hot set, no bundles, no pipelining (PI2 §2.4)"
    Options = PowerInferOptions
    presets = {}
    preset_help = {}

    def __init__(self, ctx, options):
        full = PowerInfer2Options(
            decode="cpu", attention="cpu", bundle=False, two_phase=False, neuron_cache="static", pipeline="serial",
            compute_threads=options.compute_threads, compute_cores=options.compute_cores,
            predictor_recall=options.predictor_recall, predictor_precision=options.predictor_precision,
            io_core="prime0" if options.compute_cores == "auto" else options.compute_cores.split(",")[0],
            # the port has no planner: its threads are the same in memory and offloaded (T11a.1)
            io_thread="always",
        )
        super().__init__(ctx, full)
        self.user_opt = options

    def io_queue_depth(self) -> int:
        return self.user_opt.aio_depth

    def resolved_options(self):
        from ..schema import to_dict

        return to_dict(self.user_opt)
