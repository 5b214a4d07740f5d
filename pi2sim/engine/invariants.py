"""Invariants of a simulation run, checked when checking is on (``--check``, ``PI2SIM_CHECK=1``).

Each invariant has a stable name; :data:`INVARIANTS` states it in one line and
``docs/invariants.md`` says why it must hold. A violation raises :class:`InvariantViolation`
naming the invariant, the decode token and the layer. The checks here look at the layers'
outputs (access counts, the plan, the timing result, the summary); the ones that need the clock
(``monotonic-clock``, ``data-before-compute``, ``requests-complete``, ``work-conserved``) run
inside the event tiers (:mod:`pi2sim.engine.des`).
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import SimulationError

INVARIANTS: dict[str, str] = {
    "flash-accounting": "flash bytes read = missed neurons x requests per neuron x request bytes, per token and layer",
    "dram-budget": "DRAM held by the engine never exceeds the memory budget, at any token and layer",
    "computed-once": "each active neuron is served from exactly one place and computed exactly once per token",
    "data-before-compute": "no compute on a neuron cluster starts before its weights have arrived from flash",
    "monotonic-clock": "simulated time never goes back",
    "requests-complete": "every flash request that is issued completes, and exactly the planned requests are issued",
    "work-conserved": "the event tiers compute exactly the neurons the plan lists (none lost, none twice)",
    "busy-le-elapsed": "no resource is busy for longer than the time that elapsed",
    "busy-per-token": "the per-token busy times and DRAM bytes (what energy is charged for) add up to the run's totals",
    "throughput-consistent": "tokens/s equals tokens divided by the sum of the per-token latencies, and the critical-path split adds up to each latency",
}


class InvariantViolation(SimulationError):
    def __init__(self, name: str, detail: str, token: int | None = None, layer: int | None = None):
        if name not in INVARIANTS:  # pragma: no cover - a typo in a check is a bug here
            raise KeyError(name)
        self.name, self.detail, self.token, self.layer = name, detail, token, layer
        # args are the constructor's: SimPy re-raises a failed process's exception as type(e)(*e.args)
        super().__init__(name, detail, token, layer)

    def __str__(self) -> str:
        where = "".join([f" at token {self.token}" if self.token is not None else "", f", layer {self.layer}" if self.layer is not None else ""])
        return f"invariant {self.name!r} violated{where}: {self.detail} (docs/invariants.md#{self.name})"


def enabled(flag: bool | None = None) -> bool:
    """Explicit flag, else ``PI2SIM_CHECK=1`` in the environment (the test suite sets it)."""
    return bool(flag) if flag is not None else os.environ.get("PI2SIM_CHECK") == "1"


def _first(mask: np.ndarray) -> tuple[int | None, int | None]:
    idx = np.argwhere(mask)
    if len(idx) == 0:
        return None, None
    i = idx[0]
    return int(i[0]), (int(i[1]) if len(i) > 1 else None)


def _require(name: str, ok: np.ndarray | bool, detail: str) -> None:
    ok = np.asarray(ok)
    if ok.all():
        return
    t, l = _first(~ok) if ok.ndim else (None, None)
    raise InvariantViolation(name, detail, t, l)


def check_access(acc) -> None:
    """Segmented-cache access counts (:class:`~pi2sim.access.segmented.NeuronAccess`)."""
    _require("computed-once", acc.active == acc.tp + acc.fn, "active neurons = predicted-and-active + missed by the predictor")
    _require("computed-once", acc.tp == acc.tp_hot + acc.tp_cold_hit + acc.tp_miss, "each predicted active neuron is a hot hit, a cold hit or a flash read, exactly one")
    _require("computed-once", acc.fp == acc.fp_hot + acc.fp_cold_hit + acc.fp_miss, "each false positive is a hot hit, a cold hit or a flash read, exactly one")
    for f in ("active", "tp", "fp", "fn", "tp_miss", "fp_miss", "evicted", "cold_size"):
        _require("computed-once", getattr(acc, f) >= 0, f"count {f} is non-negative")
    _require("dram-budget", acc.cold_size <= acc.cold_capacity, f"cold region holds at most its capacity ({acc.cold_capacity} neurons)")


def check_plan(plan, memory) -> None:
    """A decode plan against its memory plan: flash accounting and DRAM held."""
    T, L = plan.n_tokens, plan.n_layers
    layer_bytes = np.zeros((T, L))
    layer_reads = np.zeros((T, L))
    for st in plan.layer_stages:
        for name, ok, detail in st.plan_checks((T, L)):
            _require(name, ok, detail)
        b, n = st.flash_traffic((T, L))
        layer_bytes += b
        layer_reads += n
    tok_bytes, tok_reads = layer_bytes.sum(axis=1), layer_reads.sum(axis=1)
    for st in plan.token_stages:
        for name, ok, detail in st.plan_checks((T,)):
            _require(name, ok, detail)
        b, n = st.flash_traffic((T,))
        tok_bytes = tok_bytes + b
        tok_reads = tok_reads + n
    if plan.flash_bytes is not None:
        _require("flash-accounting", np.isclose(plan.flash_bytes, tok_bytes, rtol=1e-9, atol=0.5), "reported flash bytes per token = the sum of the requests the stages issue x their size")
    if plan.flash_reads is not None:
        _require("flash-accounting", np.isclose(plan.flash_reads, tok_reads, rtol=1e-9, atol=0.5), "reported flash reads per token = the requests the stages issue")
    if memory is not None:
        _require("dram-budget", memory.total <= memory.budget * (1 + 1e-9), f"planned resident {memory.total / 1e9:.3f} GB within the budget {memory.budget / 1e9:.3f} GB")
        if plan.dram_resident_bytes is not None:
            _require("dram-budget", plan.dram_resident_bytes <= memory.budget * (1 + 1e-9), f"DRAM held within the budget {memory.budget / 1e9:.3f} GB")


def check_pipeline_outcome(stage: str, where, computed_gate, computed_ud, planned_gate, planned_ud, issued, completed, planned_reqs) -> None:
    """``work-conserved`` and ``requests-complete`` for a neuron-pipeline stage, as both event
    tiers check them after simulating it: arrays over the stage's simulated (token, layer)
    instances (one for the layer tier, all for the cluster tier); ``where(i)`` gives instance i's
    (token, layer)."""
    def fail(name: str, bad: np.ndarray, detail) -> None:
        i = int(np.flatnonzero(bad)[0])
        t, l = where(i)
        raise InvariantViolation(name, detail(i), t, l)

    for what, got, want in (("Gate", computed_gate, planned_gate), ("Up/Down", computed_ud, planned_ud)):
        got, want = np.atleast_1d(np.asarray(got, dtype=np.float64)), np.atleast_1d(np.asarray(want, dtype=np.float64))
        bad = ~np.isclose(got, want, rtol=1e-9, atol=1e-6)
        if bad.any():
            fail("work-conserved", bad, lambda i: f"{stage}: {what} compute streamed {got[i]:.0f} bytes, the plan lists {want[i]:.0f}")
    planned = np.atleast_1d(np.asarray(planned_reqs, dtype=np.float64))
    for what, got in (("issued", issued), ("completed", completed)):
        got = np.atleast_1d(np.asarray(got, dtype=np.float64))
        bad = got != planned
        if bad.any():
            fail("requests-complete", bad, lambda i: f"{stage}: {got[i]:.0f} requests {what}, the plan lists {planned[i]:.0f}")


def check_timing(timing, plan) -> None:
    T = plan.n_tokens
    tok = np.asarray(timing.token_s)
    _require("throughput-consistent", tok.shape == (T,), f"one latency per decode token ({T})")
    _require("throughput-consistent", np.isfinite(tok) & (tok > 0), "every token latency is finite and positive")
    parts = timing.compute_s + timing.io_s + timing.other_s
    _require("throughput-consistent", np.isclose(parts, tok, rtol=1e-6, atol=1e-12), "compute + I/O stall + other = token latency")
    for part in ("compute_s", "io_s", "other_s"):
        _require("throughput-consistent", getattr(timing, part) >= -1e-12, f"critical-path {part} is non-negative")
    elapsed = float(tok.sum())
    for res, busy in sorted(timing.busy_s.items()):
        if busy > elapsed * (1 + 1e-6) + 1e-9:
            raise InvariantViolation("busy-le-elapsed", f"{res} busy {busy:.6f} s in {elapsed:.6f} s of decode")
    # the per-token ledgers (what the energy account reads) are the same busy times, token by token
    for res, per_token in sorted(timing.busy_token_s.items()):
        _require("busy-per-token", np.shape(per_token) == (T,), f"{res}: one busy time per decode token ({T})")
        _require("busy-per-token", np.isclose(float(np.sum(per_token)), timing.busy_s.get(res, 0.0), rtol=1e-6, atol=1e-12),
                 f"{res}: the per-token busy times add up to its busy time")
    for agent, per_token in sorted(timing.dram_token_bytes.items()):
        _require("busy-per-token", np.isclose(float(np.sum(per_token)), timing.dram_bytes.get(agent, 0.0), rtol=1e-6, atol=1.0),
                 f"{agent}: the per-token DRAM bytes add up to its bytes")


def check_summary(summary: dict, timing, plan=None) -> None:
    tok = np.asarray(timing.token_s)
    batch = getattr(plan, "batch", None)
    n = len(tok) if batch is None else float(np.sum(batch))  # a batched step yields a token of every sequence in it
    want = n / float(tok.sum())
    got = summary["decode_tok_s"]
    if not np.isclose(got, want, rtol=1e-5):
        raise InvariantViolation("throughput-consistent", f"decode_tok_s {got} but {n:g} tokens in {tok.sum():.6f} s give {want:.6f}")
    if not np.isclose(summary["tbt_ms"]["mean"], tok.mean() * 1e3, rtol=1e-5):
        raise InvariantViolation("throughput-consistent", f"mean TBT {summary['tbt_ms']['mean']} ms but the token latencies average {tok.mean() * 1e3:.6f} ms")
