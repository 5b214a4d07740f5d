"""Heat and throttling: a lumped RC model of the phone and a step-wise governor.

Two nodes (temperatures above ambient ``x = [soc, body]``)::

    C_soc  dx_soc/dt  = P - (x_soc - x_body) / R_soc_body
    C_body dx_body/dt = (x_soc - x_body) / R_soc_body - x_body / R_body_ambient

The phone's power ``P`` (:mod:`pi2sim.engine.power`) is constant within a token, so each token
advances the state exactly (the 2x2 system's matrix exponential), however long the token is.

The governor (Linux's ``step_wise``, the kind Android phones run for CPU cooling devices) acts
every ``poll`` seconds between tokens: while its sensor is above ``trip`` and rising it moves to
the next cooling level (a lower CPU clock), and below ``trip - hysteresis`` it moves back. A
level is a clock share for every CPU cluster; the token's latency and power at that level come
from the caller (the timing engine run on the device at that clock), so a hot phone decodes
slower *and* draws less. The NPU, GPU, DRAM and UFS are not throttled (the 8 Elite anchor: the
CPU fell from 37 to 19 tok/s while the NPU held, docs/sources.md §B).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..specs.device import Thermal


@dataclass
class ThermalTrace:
    level: np.ndarray  # [T] cooling level each decode token ran at (0 = nominal clock)
    clock_share: np.ndarray  # [T] CPU clock share of that level
    soc_c: np.ndarray  # [T] SoC node temperature at the end of each token
    body_c: np.ndarray  # [T] body node temperature at the end of each token
    start_c: tuple[float, float]  # (soc, body) when the run began
    after_prefill_c: tuple[float, float]  # (soc, body) when decoding began
    ambient_c: float


class RC:
    """The two-node model, stepped exactly for a constant power over an interval."""

    def __init__(self, th: Thermal):
        self.th = th
        cs, cb, rsb, rba = th.soc_heat_capacity, th.body_heat_capacity, th.soc_to_body, th.body_to_ambient
        a, b = 1.0 / (cs * rsb), 1.0 / (cb * rsb)
        self.A = ((-a, a), (b, -b - 1.0 / (cb * rba)))
        tr = self.A[0][0] + self.A[1][1]
        det = self.A[0][0] * self.A[1][1] - self.A[0][1] * self.A[1][0]
        disc = math.sqrt(max(tr * tr / 4.0 - det, 0.0))
        self.l1, self.l2 = tr / 2.0 + disc, tr / 2.0 - disc  # real, negative (a passive network)

    def steady(self, p: float) -> tuple[float, float]:
        th = self.th
        return p * (th.body_to_ambient + th.soc_to_body), p * th.body_to_ambient

    def step(self, x: tuple[float, float], p: float, dt: float) -> tuple[float, float]:
        """State after ``dt`` seconds at power ``p``: ``x* + exp(A dt) (x - x*)``."""
        s = self.steady(p)
        d0, d1 = x[0] - s[0], x[1] - s[1]
        (a00, a01), (a10, a11) = self.A
        l1, l2 = self.l1, self.l2
        e1, e2 = math.exp(l1 * dt), math.exp(l2 * dt)
        if abs(l1 - l2) < 1e-12:  # repeated eigenvalue: exp(A dt) = e (I + (A - l I) dt)
            m00, m01, m10, m11 = e1 * (1 + (a00 - l1) * dt), e1 * a01 * dt, e1 * a10 * dt, e1 * (1 + (a11 - l1) * dt)
        else:  # Sylvester: (e1 (A - l2 I) - e2 (A - l1 I)) / (l1 - l2)
            k = 1.0 / (l1 - l2)
            m00 = k * (e1 * (a00 - l2) - e2 * (a00 - l1))
            m01 = k * (e1 - e2) * a01
            m10 = k * (e1 - e2) * a10
            m11 = k * (e1 * (a11 - l2) - e2 * (a11 - l1))
        return s[0] + m00 * d0 + m01 * d1, s[1] + m10 * d0 + m11 * d1


def run(th: Thermal, n_tokens: int, at_level: Callable[[int], tuple[np.ndarray, np.ndarray]], *, prefill_s: float, prefill_w: float,
        initial_c: float | None = None, ambient_c: float | None = None) -> ThermalTrace:
    """Walk the decode token by token. ``at_level(k)`` returns ``(latency [T], power [T])`` of
    every token at cooling level ``k`` (asked for lazily, once per level the governor reaches)."""
    amb = th.ambient_c if ambient_c is None else ambient_c
    start = amb if initial_c is None else initial_c
    gov = th.governor
    levels = gov.cpu_clock_levels
    rc = RC(th)
    x = (start - amb, start - amb)
    x = rc.step(x, prefill_w, prefill_s) if prefill_s > 0 else x
    after_prefill = (x[0] + amb, x[1] + amb)
    level = 0
    now = prefill_s
    next_poll = gov.poll_s
    sensed_before = x[0] if gov.sensor == "soc" else x[1]
    rows = {}
    lv = np.zeros(n_tokens, dtype=np.int64)
    soc = np.zeros(n_tokens)
    body = np.zeros(n_tokens)
    trip = gov.trip_c - amb
    for t in range(n_tokens):
        if level not in rows:
            rows[level] = at_level(level)
        lat, pw = rows[level]
        dt = float(lat[t])
        x = rc.step(x, float(pw[t]), dt)
        now += dt
        lv[t] = level
        soc[t], body[t] = x[0] + amb, x[1] + amb
        while now >= next_poll:  # the governor acts between tokens, at each poll that has come
            next_poll += gov.poll_s
            sensed = x[0] if gov.sensor == "soc" else x[1]
            if sensed > trip and sensed > sensed_before:
                level = min(level + 1, len(levels) - 1)
            elif sensed < trip - gov.hysteresis_k:
                level = max(level - 1, 0)
            sensed_before = sensed
    return ThermalTrace(lv, np.asarray(levels, dtype=np.float64)[lv], soc, body, (start, start), after_prefill, amb)
