"""UFS flash model: request service, queueing and the issuing core.

Effective model (docs/sources.md §B, with PowerInfer-2's three effects):

* **Issuing core.** Every request costs ``issue_cost[core class]`` of CPU time on the core that
  issues and completes it (syscall, interrupt, queue management). PowerInfer-2 Table 1 measures
  4 KB random-read throughput from one core at 1,076 / 1,008 / 762 MB/s (big / mid / little):
  there the issuing CPU is the limit, so those rates give the costs directly.
* **Device service.** The device handles one request every
  ``request_service * max(1, span / span_reference) ** span_exponent + size / bw``
  seconds (pipelined), where ``span`` is the address range the recent requests cover (the
  controller's logical-to-physical mapping cache covers ~128 MB; PowerInfer-2 Fig. 3-b) and
  ``bw`` the media rate for random or sequential reads. Several issuing cores contend for the one
  command queue and lose up to ``multi_issuer_penalty`` of throughput (PowerInfer-2 §2.3.2).
* **Latency and queue depth.** A request completes ``latency`` after its service slot; at most
  ``queue_depth`` (32) requests are outstanding.

Steady-state period per request (one issuer, ``qd`` outstanding allowed)::

    period = max(issue_cost, service / (1 - penalty), (issue_cost + service + latency) / qd)

and a batch of n requests that starts on an idle device takes
``issue_cost + (n - 1) * period + service + latency``. The discrete-event tiers simulate the
same three limits request by request (cluster tier) or per batch (layer tier); this module is
the closed form both tiers and the analytic tier share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..specs.device import Storage


@dataclass(frozen=True)
class UfsModel:
    spec: Storage

    def service_time(self, size, span, sequential: bool = False):
        """Device time per request (vectorised over ``size`` / ``span``)."""
        s = self.spec
        if sequential:
            overhead = s.request_service_s
            bw = s.bw_sequential_bps
        else:
            ratio = np.maximum(1.0, np.asarray(span, dtype=np.float64) / s.span_reference_bytes)
            overhead = s.request_service_s * ratio**s.span_exponent
            bw = s.bw_random_bps
        return overhead + np.asarray(size, dtype=np.float64) / bw

    def penalty(self, n_issuers: int) -> float:
        """Throughput lost to queue contention with ``n_issuers`` cores issuing (0 for one).

        "Up to 40%" (PowerInfer-2 §2.3.2): we take the full penalty from two issuers on
        (assumption: the paper does not give the curve)."""
        return 0.0 if n_issuers <= 1 else self.spec.multi_issuer_penalty

    def request_latency(self, size, span, issuer_class: str, sequential: bool = False):
        """Issue to completion of one request on an idle device: issue cost + service + latency."""
        return self.spec.issue_cost.of(issuer_class) + self.service_time(size, span, sequential) + self.spec.latency_s

    def period(self, size, span, issuer_class: str, qd: int | None = None, n_issuers: int = 1, sequential: bool = False):
        """Steady-state time between request completions."""
        s = self.spec
        qd = s.queue_depth if qd is None else min(qd, s.queue_depth)
        c = s.issue_cost.of(issuer_class)
        svc = self.service_time(size, span, sequential)
        per_issuer = c / max(1, n_issuers)  # several issuers share the per-request CPU work
        return np.maximum(np.maximum(per_issuer, svc / (1.0 - self.penalty(n_issuers))), self.request_latency(size, span, issuer_class, sequential) / qd)

    def batch_time(self, n, size, span, issuer_class: str, qd: int | None = None, n_issuers: int = 1, sequential: bool = False):
        """Time for ``n`` requests issued back to back on an idle device (vectorised over n)."""
        n = np.asarray(n, dtype=np.float64)
        s = self.spec
        c = s.issue_cost.of(issuer_class)
        svc = self.service_time(size, span, sequential)
        p = self.period(size, span, issuer_class, qd, n_issuers, sequential)
        t = c + np.maximum(n - 1, 0) * p + svc + s.latency_s
        return np.where(n > 0, t, 0.0)

    def bandwidth(self, size, span, issuer_class: str = "big", qd: int | None = None, n_issuers: int = 1, sequential: bool = False) -> float:
        """Steady-state read bandwidth (bytes/s) of a long stream of such requests."""
        return float(np.asarray(size, dtype=np.float64) / self.period(size, span, issuer_class, qd, n_issuers, sequential))

    def issuer_busy(self, n, issuer_class: str):
        """CPU time the issuing core spends on ``n`` requests."""
        return np.asarray(n, dtype=np.float64) * self.spec.issue_cost.of(issuer_class)
