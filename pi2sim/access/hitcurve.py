"""The hit-rate-vs-capacity curve of a trace: a property of its activations, not of any timing.

For each cached share of the FFN, PowerInfer-2's segmented cache (``cpu`` decode: half the cache
a hot region of the offline profile's hottest neurons, half a per-neuron LRU, warm-started with
the next-hottest) replays the trace and reports the share of active neurons it serves. How fast
this rises with the share is what decides a memory sweep: hot-neuron skew gives hits to small
caches and little beyond, token-to-token reuse gives hits to an LRU holding the last few tokens,
expert routing spreads the working set over all experts (docs/sources.md §C T14).

No predictor errors (recall and precision 1): the curve describes the trace, not a predictor.
"""

from __future__ import annotations

import numpy as np

from . import segmented
from .workload import Workload, hottest_first, neuron_frequencies

DEFAULT_SHARES = (0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8)


def hit_curve(w: Workload, shares=DEFAULT_SHARES, hot_fraction: float = 0.5) -> list[dict[str, float]]:
    """``[{"cached_share": s, "hit_rate": h}, ...]`` for the given shares of all FFN neurons."""
    freqs = neuron_frequencies(w)
    total = freqs.size
    order = hottest_first(freqs)
    caches = []
    for s in shares:
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"cached share {s} outside [0, 1]")
        n = int(round(s * total))
        hot = int(n * hot_fraction)
        mask = np.zeros(total, bool)
        mask[order[:hot]] = True
        caches.append((mask.reshape(freqs.shape), n - hot))
    # every share's cache over the same replay: one pass (segmented.simulate_many)
    accs = segmented.simulate_many(w, freqs, caches, recall=1.0, precision=1.0, seed=0, warm="profile")
    return [{"cached_share": float(s), "hit_rate": a.hit_rate} for s, a in zip(shares, accs)]
