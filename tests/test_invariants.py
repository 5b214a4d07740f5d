"""Each invariant of docs/invariants.md, broken on purpose: the check must name it, the token and
the layer. (Every other test runs with checking on, so these checks also pass on correct runs.)"""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pi2sim.engine import invariants as checks
from pi2sim.engine.invariants import INVARIANTS, InvariantViolation
from pi2sim.config import RunConfig, apply_values
from pi2sim.engine import analytic, cluster, des
from pi2sim.engine import pipeline_kernel as PK
from pi2sim.engine.plan import Compute, Flash, NeuronPipeline
from pi2sim.engine.stages import neuron_pipeline_des as npdes
from pi2sim.errors import SimulationError
from pi2sim.simulation import run

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pi2():
    """A checked PowerInfer-2 run of the real SmolLM2 trace, 6 tokens, half the FFN in flash."""
    cfg = apply_values(RunConfig(), {"model": "smollm2-135m", "decode_tokens": 6, "fidelity": "cluster"})
    r = run(cfg, check=True)
    plan = r.policy.decode_plan(r.access, r.memory)
    return r, plan


def _pipe(plan) -> NeuronPipeline:
    return next(st for st in plan.layer_stages if isinstance(st, NeuronPipeline))


def _broken(exc: pytest.ExceptionInfo, name: str, token=None, layer=None) -> None:
    e = exc.value
    assert isinstance(e, InvariantViolation) and e.name == name, str(e)
    if token is not None:
        assert e.token == token, str(e)
    if layer is not None:
        assert e.layer == layer, str(e)
    assert f"docs/invariants.md#{name}" in str(e)


def test_docs_list_every_invariant():
    text = (REPO / "docs" / "invariants.md").read_text()
    documented = set(re.findall(r"^## ([a-z-]+)$", text, flags=re.M))
    assert documented == set(INVARIANTS)
    for name in INVARIANTS:  # each has at least one test here
        assert f"def test_{name.replace('-', '_')}" in Path(__file__).read_text()


def test_checked_runs_pass(pi2):
    r, plan = pi2
    checks.check_access(r.access)
    checks.check_plan(plan, r.memory)
    r.policy.check(r.access, plan)
    checks.check_timing(r.timing, plan)
    checks.check_summary(r.summary, r.timing)


# ---------------------------------------------------------------- flash-accounting
def test_flash_accounting_reported_bytes(pi2):
    r, plan = pi2
    bad = copy.deepcopy(plan)
    bad.flash_bytes[3] += 4096
    with pytest.raises(InvariantViolation) as e:
        checks.check_plan(bad, r.memory)
    _broken(e, "flash-accounting", token=3)


def test_flash_accounting_reads_per_missed_neuron(pi2):
    r, plan = pi2
    bad = copy.deepcopy(plan)
    p = _pipe(bad)
    t, l = map(int, np.argwhere(p.gate_miss_n > 0)[0])
    p.gate_reqs = p.gate_reqs.copy()
    p.gate_reqs[t, l] += 1  # one read more than the misses ask for
    with pytest.raises(InvariantViolation) as e:
        checks.check_plan(bad, r.memory)
    _broken(e, "flash-accounting", token=t, layer=l)


def test_flash_accounting_reads_are_the_misses(pi2):
    r, plan = pi2
    acc = replace(r.access, fp_miss=r.access.fp_miss * 0)  # a plan that forgot false-positive reads
    if not r.access.fp_miss.any():
        pytest.skip("no false-positive misses in this run")
    with pytest.raises(InvariantViolation) as e:
        r.policy.check(acc, plan)
    assert e.value.name in ("flash-accounting", "computed-once")


# ---------------------------------------------------------------- dram-budget
def test_dram_budget_resident(pi2):
    r, plan = pi2
    bad = copy.deepcopy(plan)
    bad.dram_resident_bytes = np.array(bad.dram_resident_bytes, dtype=float)
    bad.dram_resident_bytes[1, 4] = r.memory.budget * 1.01
    with pytest.raises(InvariantViolation) as e:
        checks.check_plan(bad, r.memory)
    _broken(e, "dram-budget", token=1, layer=4)


def test_dram_budget_cold_region(pi2):
    r, _ = pi2
    size = np.array(r.access.cold_size)
    size[2, 7] = r.access.cold_capacity + 1
    with pytest.raises(InvariantViolation) as e:
        checks.check_access(replace(r.access, cold_size=size))
    _broken(e, "dram-budget", token=2, layer=7)


# ---------------------------------------------------------------- computed-once
def test_computed_once_access(pi2):
    r, _ = pi2
    miss = np.array(r.access.tp_miss)
    miss[0, 2] += 1  # a neuron counted as both a hit and a read
    with pytest.raises(InvariantViolation) as e:
        checks.check_access(replace(r.access, tp_miss=miss))
    _broken(e, "computed-once", token=0, layer=2)


def test_computed_once_plan(pi2):
    r, plan = pi2
    bad = copy.deepcopy(plan)
    p = _pipe(bad)
    p.ud_hit_n = np.array(p.ud_hit_n)
    p.ud_hit_n[4, 0] += 1
    with pytest.raises(InvariantViolation) as e:
        r.policy.check(r.access, bad)
    _broken(e, "computed-once", token=4, layer=0)


# ---------------------------------------------------------------- event-tier invariants
# Both event tiers check these: the layer tier (SimPy, pi2sim/engine/des.py) and the cluster
# tier (compiled event loop, pi2sim/engine/pipeline_kernel.py). The cluster tier's loop is a numba
# function; `pure_kernel` runs it as plain Python (its py_func) so that a test can swap one of
# its helpers for a broken one.
def _run_des(r, plan, **kw):
    return des.run_decode(r.device, plan, check=True, **kw)


def _run_cluster(r, plan):
    return cluster.run_decode(r.device, plan, check=True)


@pytest.fixture
def pure_kernel(monkeypatch):
    monkeypatch.setattr(PK, "simulate", PK.simulate.py_func)
    return monkeypatch


def test_data_before_compute(pi2, monkeypatch):
    r, plan = pi2

    def too_early(self, task, flow, n, after_s):  # the bug: compute released at issue time
        self._complete(task, flow, n, self.eng.env.now + after_s)

    monkeypatch.setattr(npdes._IoThread, "_schedule_completion", too_early)
    with pytest.raises(InvariantViolation) as e:
        _run_des(r, plan)
    _broken(e, "data-before-compute", token=0)


def test_data_before_compute_cluster_tier(pi2, pure_kernel):
    r, plan = pi2
    pure_kernel.setattr(PK, "_read_done", lambda start, lat, per, n: start)  # the bug: released at issue
    with pytest.raises(InvariantViolation) as e:
        _run_cluster(r, plan)
    _broken(e, "data-before-compute", token=0)


def test_requests_complete(pi2, monkeypatch):
    r, plan = pi2
    orig = npdes._IoThread._complete

    def lose_one(self, task, flow, n, at):  # the bug: a completion counted short
        orig(self, task, flow, n - 1, at)

    monkeypatch.setattr(npdes._IoThread, "_complete", lose_one)
    with pytest.raises(InvariantViolation) as e:
        _run_des(r, plan)
    _broken(e, "requests-complete", token=0)


def test_requests_complete_cluster_tier(pi2, pure_kernel):
    r, plan = pi2
    orig = PK._split_requests

    def short(total, neurons, groups, out):  # the bug: the last loaded cluster loses a read
        orig(total, neurons, groups, out)
        if total > 0:
            out[groups - 1] -= 1

    pure_kernel.setattr(PK, "_split_requests", short)
    with pytest.raises(InvariantViolation) as e:
        _run_cluster(r, plan)
    _broken(e, "requests-complete", token=0)


def test_work_conserved(pi2, monkeypatch):
    r, plan = pi2
    orig = npdes._split

    def lossy(a, b, groups):  # the bug: the last group loses a neuron
        parts = orig(a, b, groups)
        if parts and parts[-1][0] > 0:
            parts[-1] = (parts[-1][0] - 1, parts[-1][1])
        return parts

    monkeypatch.setattr(npdes, "_split", lossy)
    with pytest.raises(InvariantViolation) as e:
        _run_des(r, plan)
    _broken(e, "work-conserved", token=0, layer=0)


def test_work_conserved_cluster_tier(pi2, pure_kernel):
    r, plan = pi2
    orig = PK._split_even

    def lossy(total, groups, out):  # the bug: the last cluster loses a neuron
        orig(total, groups, out)
        if total > 0:
            out[groups - 1] -= 1

    pure_kernel.setattr(PK, "_split_even", lossy)
    with pytest.raises(InvariantViolation) as e:
        _run_cluster(r, plan)
    _broken(e, "work-conserved", token=0, layer=0)


def test_monotonic_clock(pi2, monkeypatch):
    r, plan = pi2

    def backwards(self, eng, t, l):  # the bug: a stage reporting a negative duration
        yield eng.env.timeout(0)
        return -1e-6, 0.0, 0.0

    bad = copy.deepcopy(plan)
    bad.layer_stages.insert(0, Flash("extra", np.ones((plan.n_tokens, plan.n_layers)), 4096, 1e9, "big", ("prime0",)))
    monkeypatch.setattr(Flash, "simulate", backwards)
    with pytest.raises(InvariantViolation) as e:
        _run_des(r, bad)
    _broken(e, "monotonic-clock", token=0, layer=0)


def test_monotonic_clock_cluster_and_analytic_tiers(pi2, monkeypatch):
    r, plan = pi2
    orig = Compute.closed_form
    assert any(isinstance(st, Compute) and st.name == "attention" for st in plan.layer_stages)

    def backwards(st, comp):  # the bug: a closed form gives one stage a negative duration
        res = orig(st, comp)
        if st.name == "attention":
            total = np.array(np.broadcast_to(res.total, (plan.n_tokens, plan.n_layers)))
            total[3, 7] = -1e-6
            res = replace(res, total=total)
        return res

    monkeypatch.setattr(Compute, "closed_form", backwards)
    for run_tier in (lambda: _run_cluster(r, plan), lambda: analytic.run_decode(r.device, plan, check=True)):
        with pytest.raises(InvariantViolation) as e:
            run_tier()
        _broken(e, "monotonic-clock", token=3, layer=7)


# ---------------------------------------------------------------- outputs
def test_busy_le_elapsed(pi2):
    r, plan = pi2
    t = copy.deepcopy(r.timing)
    t.busy_s["ufs"] = 2 * float(t.token_s.sum())
    with pytest.raises(InvariantViolation) as e:
        checks.check_timing(t, plan)
    _broken(e, "busy-le-elapsed")
    assert "ufs" in str(e.value)


def test_busy_per_token(pi2):
    r, plan = pi2
    checks.check_timing(r.timing, plan)  # intact: passes
    assert r.timing.busy_token_s and r.timing.dram_token_bytes
    t = copy.deepcopy(r.timing)
    res = sorted(t.busy_token_s)[0]
    t.busy_token_s[res] = t.busy_token_s[res].copy()
    t.busy_token_s[res][3] += 1e-3  # a token charged for busy time the run never had
    with pytest.raises(InvariantViolation) as e:
        checks.check_timing(t, plan)
    _broken(e, "busy-per-token")
    assert res in str(e.value)


def test_throughput_consistent_split(pi2):
    r, plan = pi2
    t = copy.deepcopy(r.timing)
    t.io_s = t.io_s.copy()
    t.io_s[5] += 1e-3
    with pytest.raises(InvariantViolation) as e:
        checks.check_timing(t, plan)
    _broken(e, "throughput-consistent", token=5)


def test_throughput_consistent_summary(pi2):
    r, _ = pi2
    s = copy.deepcopy(r.summary)
    s["decode_tok_s"] *= 1.01
    with pytest.raises(InvariantViolation) as e:
        checks.check_summary(s, r.timing)
    _broken(e, "throughput-consistent")


def test_violation_is_one_line_exit_3(monkeypatch, capsys):
    from pi2sim import cli

    def broken(acc):
        raise InvariantViolation("computed-once", "deliberately broken", 1, 2)

    monkeypatch.setattr(checks, "check_access", broken)
    code = cli.main(["run", "--model", "smollm2-135m", "--decode-tokens", "4", "--check", "--quiet"])
    err = capsys.readouterr().err
    assert code == 3
    assert err.strip() == "pi2sim: simulation error: invariant 'computed-once' violated at token 1, layer 2: deliberately broken (docs/invariants.md#computed-once)"


# ---------------------------------------------------------------- watchdog
def test_watchdog_deadlock_no_events_left(pi2, monkeypatch):
    """Completions that never release their compute: the queue drains, the decoder waits forever."""
    r, plan = pi2
    monkeypatch.setattr(npdes._IoThread, "_complete", lambda self, task, flow, n, at: None)
    with pytest.raises(SimulationError, match="deadlock") as e:
        des.run_decode(r.device, plan)
    assert "0/6 tokens done" in str(e.value)
    assert e.value.state["token"] == 0 and e.value.state["stage"] == "ffn"
    Path(str(e.value).rsplit("state dump in ", 1)[1]).unlink()


def test_watchdog_time_stops_advancing(pi2, monkeypatch):
    """A zero-time loop: events keep firing at one instant; SimPy alone would spin forever."""
    r, plan = pi2

    def spin(self):
        while True:
            yield self.eng.env.timeout(0)

    monkeypatch.setattr(npdes._IoThread, "run", spin)
    dog = des.Watchdog(events_at_one_instant=20_000)
    with pytest.raises(SimulationError, match="simulated time stopped advancing") as e:
        des.run_decode(r.device, plan, watchdog=dog)
    state = e.value.state
    assert state["token"] == 0 and state["layer"] == 0 and state["stage"] == "ffn"
    dump = Path(str(e.value).rsplit("state dump in ", 1)[1])
    assert dump.is_file() and '"reason"' in dump.read_text()
    dump.unlink()


def test_watchdog_work_stops_draining(pi2, monkeypatch):
    """A stage that never finishes in simulated time (e.g. a bandwidth of ~0 from a unit slip)."""
    r, plan = pi2

    def crawl(self, eng, t, l):
        while True:
            yield eng.env.timeout(1.0)

    bad = copy.deepcopy(plan)
    bad.layer_stages.insert(1, Flash("stuck", np.ones((plan.n_tokens, plan.n_layers)), 4096, 1e9, "big", ("prime0",)))
    monkeypatch.setattr(Flash, "simulate", crawl)
    dog = des.Watchdog(stage_s=30.0)
    with pytest.raises(SimulationError, match="work stopped draining") as e:
        des.run_decode(r.device, bad, watchdog=dog)
    assert e.value.state["stage"] == "stuck"
    Path(str(e.value).rsplit("state dump in ", 1)[1]).unlink()


def test_watchdog_deadlock_cluster_tier(pi2, pure_kernel):
    """Reads that never complete: the cluster tier's loop runs out of events with tasks left and
    stops the run naming the stage, instead of returning a stage that silently skipped them."""
    r, plan = pi2
    pure_kernel.setattr(PK, "_read_done", lambda start, lat, per, n: np.inf)
    with pytest.raises(SimulationError, match="deadlock") as e:
        cluster.run_decode(r.device, plan)
    assert e.value.state["token"] == 0 and e.value.state["stage"] == "ffn" and e.value.state["tasks_not_run"] > 0
    Path(str(e.value).rsplit("state dump in ", 1)[1]).unlink()  # the same dump as the layer tier's
