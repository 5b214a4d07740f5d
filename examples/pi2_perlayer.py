"""An example scheduling change, written outside the package: PowerInfer-2 with a hot region
split evenly across layers instead of taken globally.

PowerInfer-2's hot region holds the globally hottest neurons (pi2sim/policies/powerinfer2.py
``_hot_mask``). This variant gives every (layer, expert) the same share of it, each filled with its
own hottest neurons: a policy that does not let a few hot layers take the whole region. Run it
wherever a policy name is accepted:

    pi2sim run --policy examples/pi2_perlayer.py:PerLayerHot --model smollm2-135m --ffn-offload 0.8 --set sparsity=0.7
    pi2sim compare --model bamboo-7b --policies powerinfer2,examples/pi2_perlayer.py:PerLayerHot

docs/tutorial-scheduling-change.md walks through it.
"""

from __future__ import annotations

import numpy as np

from pi2sim.access.workload import hottest_first
from pi2sim.policies.powerinfer2 import PowerInfer2


class PerLayerHot(PowerInfer2):
    name = "pi2-perlayer"
    summary = "PowerInfer-2 with its hot region split evenly across layers (an example of a scheduling change)"

    def _hot_mask(self, freqs: np.ndarray, total: int) -> tuple[np.ndarray, int]:
        o = self.opt
        if o.decode == "hybrid" or o.neuron_cache != "segmented":
            return super()._hot_mask(freqs, total)  # only the segmented CPU cache changes
        L, E, N = freqs.shape
        per = min(N, int(total * o.hot_fraction) // max(1, L * E))  # the same hot rows in every (layer, expert)
        order = hottest_first(freqs, axis=2)
        mask = np.zeros((L, E, N), bool)
        np.put_along_axis(mask, order[:, :, :per], True, axis=2)
        return mask, max(0, total - per * L * E)
