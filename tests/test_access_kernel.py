"""The compiled access model (pi2sim/access/kernel.py) is the numpy reference
(pi2sim/access/segmented_reference.py), array for array, on the configurations that exercise each
of its paths: 1-bit (ReLU) and 2-bit (magnitude) codes at every threshold, dense and MoE models,
predictor recall below 1, no false positives, a windowed cache, an empty and a tiny cache, a cold
start. Plus the building blocks: the counter-based random numbers, the alias tables and the
hottest-first radix sort."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from pi2sim.access import kernel as K
from pi2sim.access import segmented, segmented_reference
from pi2sim.access.workload import neuron_frequencies, open_workload
from pi2sim.trace.locate import model_trace_path
from pi2sim.config import RunConfig, apply_values
from pi2sim.simulation import build


def _setup(model: str, tokens: int, values: dict):
    cfg = apply_values(RunConfig(), {"model": model, "decode_tokens": tokens, **values})
    ctx, pol, _ = build(cfg)
    w = open_workload(model_trace_path(ctx.model, tokens, 0, progress=False), ctx.model, tokens, cfg.prompt_tokens, cfg.sparsity)
    freqs = neuron_frequencies(w)
    mask, cold = pol.hot_mask(freqs, pol.memory().cache_units)
    return w, freqs, mask, cold


def _assert_same(a, b) -> None:
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray) or x is None:
            assert (x is None and y is None) or np.array_equal(x, y), f"{f.name} differs"
        else:
            assert x == y, f"{f.name}: kernel {x}, reference {y}"


CASES = [
    # model, tokens, run values, cold capacity (None: the policy's), recall, precision, warm, window
    ("turbosparse-mistral-7b", 24, {"ffn_offload": 0.5}, None, 1.0, 0.8, "profile", None),
    ("turbosparse-mistral-7b", 24, {"ffn_offload": 0.5}, None, 0.9, 1.0, "empty", None),
    ("turbosparse-mixtral-47b", 12, {"memory_gb": 12}, None, 1.0, 0.8, "profile", None),
    ("turbosparse-mixtral-47b", 12, {"memory_gb": 7}, None, 0.95, 0.7, "profile", 3),
    ("smollm2-135m", 200, {"sparsity": 0.5, "ffn_offload": 0.7}, None, 0.95, 0.8, "profile", 3),
    ("smollm2-135m", 200, {"sparsity": 0.7, "ffn_offload": 0.5}, 0, 1.0, 0.8, "profile", None),
    ("smollm2-135m", 200, {"sparsity": 0.9, "ffn_offload": 0.3}, 50, 0.8, 0.6, "empty", 2),
    ("turbosparse-mixtral-47b", 12, {"memory_gb": 19}, None, 1.0, 0.8, "window", 8),  # the warm start below capacity
    ("smollm2-135m", 200, {"sparsity": 0.5, "ffn_offload": 0.3}, None, 0.95, 0.8, "window", 3),
]


@pytest.mark.parametrize("model,tokens,values,capacity,recall,precision,warm,window", CASES)
def test_kernel_equals_reference(model, tokens, values, capacity, recall, precision, warm, window):
    w, freqs, mask, cold = _setup(model, tokens, values)
    cap = cold if capacity is None else capacity
    kw = dict(recall=recall, precision=precision, seed=3, warm=warm, window=window)
    fast = segmented._simulate(w, freqs, mask, cap, **kw)
    ref = segmented_reference.simulate(w, freqs, mask, cap, **kw)
    _assert_same(fast, ref)
    assert fast.tp.sum() > 0 and (precision == 1.0 or fast.fp.sum() > 0)
    if window is not None or 0 < cap < 1000:
        assert fast.cold_evictions > 0  # the eviction paths ran
    if cap == 0:
        assert fast.cold_insertions == 0 and fast.tp_cold_hit.sum() == 0


def test_counter_based_draws_match_numpy():
    rng = np.random.default_rng(5)
    for _ in range(50):
        seed, t, l, k = (int(x) for x in rng.integers(0, 2**31, 4))
        j = rng.integers(0, 2**40, 16)
        ref = segmented_reference.draws(segmented_reference.step_key(seed, t, l, k), 3, j)
        fast = np.array([_draw_nb(seed, t, l, k, 3, int(x)) for x in j], dtype=np.uint64)
        assert np.array_equal(ref, fast)
        assert np.array_equal(segmented_reference.uniform(ref), np.array([K.uniform(x) for x in fast]))


def _draw_nb(seed, t, l, k, stream, j):
    from numba import njit

    global _DRAW
    if "_DRAW" not in globals():
        _DRAW = njit(lambda s, t, l, k, st, j: K.draw(K.step_key(s, t, l, k), st, j))
    return _DRAW(seed, t, l, k, stream, j)


@pytest.mark.parametrize("n", [1, 7, 1536, 14336, 70000])
def test_alias_tables_give_the_frequencies(n):
    """The distribution an alias row encodes is the row's normalised frequencies (total variation
    within the threshold's fixed-point precision); neurons that never fire are never drawn."""
    rng = np.random.default_rng(n)
    f = (rng.beta(0.3, 5, (2, 1, n)) * (rng.random((2, 1, n)) > 0.2)).astype(np.float32)
    abits = K.alias_bits(n)
    table = np.zeros(f.shape, np.uint32 if abits == 16 else np.uint64)
    f[1, 0, 0] = 0.5  # at least one row that can draw
    tot = f.astype(np.float64).sum(axis=2)
    K.build_alias(f.astype(np.float64), tot, table, abits)
    full = (1 << abits) - 1
    for l in range(2):
        if tot[l, 0] == 0:
            continue  # a row that never fires is never drawn from (the kernel checks the total)
        e = table[l, 0].astype(np.uint64)
        thr = (e >> np.uint64(abits)).astype(np.float64)
        alias = (e & np.uint64(full)).astype(np.int64)
        keep = np.where(thr == full, 1.0, thr / (1 << abits))
        implied = keep / n
        np.add.at(implied, alias, (1.0 - keep) / n)
        want = f[l, 0].astype(np.float64) / tot[l, 0]
        # each column's threshold is rounded to 2**-abits of the column's 1/n share of the mass
        assert np.abs(implied - want).sum() <= 2.0 / (1 << abits) + 1e-12
        assert np.all(implied[f[l, 0] == 0] == 0.0)


def test_radix_order_is_numpys_stable_order():
    rng = np.random.default_rng(0)
    x = (rng.random(200_003) ** 3).astype(np.float32)
    x[::5] = x[1::5][: len(x[::5])]  # ties
    x[:300] = 0.0
    x[300:310] = -0.0
    assert np.array_equal(K.argsort_desc_stable(x), np.argsort(-x, kind="stable"))
    y = np.array([0.5, np.nan, 0.1], np.float32)  # not a profile: falls back to numpy
    assert np.array_equal(K.argsort_desc_stable(y), np.argsort(-y, kind="stable"))


@pytest.mark.parametrize("model,tokens,values,window", [
    ("turbosparse-mixtral-47b", 12, {"memory_gb": 12}, None),
    ("smollm2-135m", 120, {"sparsity": 0.7, "ffn_offload": 0.5}, 3),
])
@pytest.mark.parametrize("budgets", ["default", "tiny"])
def test_one_pass_equals_each_cache_alone(model, tokens, values, window, budgets, monkeypatch):
    """A memory sweep's one pass (:func:`segmented.simulate_many`) gives every cache exactly the
    result of its own replay, also when the phase-1 lists do not fit their budget (streamed block
    by block, the caches side by side) and every cache takes a pass of its own (tiny budgets)."""
    w, freqs, _, _ = _setup(model, tokens, values)
    from pi2sim.access.workload import hottest_first

    order = hottest_first(freqs)
    caches = []
    for share in (0.0, 0.05, 0.2, 0.45, 0.8):
        n = int(share * freqs.size)
        mask = np.zeros(freqs.size, bool)
        mask[order[: n // 2]] = True
        caches.append((mask.reshape(freqs.shape), n - n // 2))
    kw = dict(recall=0.95, precision=0.8, seed=5, warm="profile", window=window)
    alone = [segmented._simulate(w, freqs, m, c, **kw) for m, c in caches]
    if budgets == "tiny":
        monkeypatch.setattr(segmented, "LIST_BUDGET_BYTES", 1)
        monkeypatch.setattr(segmented, "STATE_BUDGET_BYTES", 1)
    together = segmented._simulate_many(w, freqs, caches, kw["recall"], kw["precision"], kw["seed"], kw["warm"], kw["window"])
    assert len(together) == len(caches)
    for a, b in zip(together, alone):
        _assert_same(a, b)
    assert len({a.tp_miss.sum() for a in alone}) > 2  # the caches really differ
    if budgets == "tiny":  # one cache alone under the same budgets
        _assert_same(segmented._simulate(w, freqs, caches[2][0], caches[2][1], **kw), alone[2])


def test_results_do_not_depend_on_the_number_of_threads(monkeypatch):
    """Phase 1's blocks run in parallel and a sweep's caches too: one thread gives the same counts."""
    w, freqs, mask, cold = _setup("turbosparse-mixtral-47b", 12, {"memory_gb": 12})
    caches = [(mask, cold), (mask, cold // 3)]
    kw = (1.0, 0.8, 2, "profile", None)
    many = segmented._simulate_many(w, freqs, caches, *kw)
    monkeypatch.setattr(segmented, "threads", lambda: 1)
    one = segmented._simulate_many(w, freqs, caches, *kw)
    for a, b in zip(many, one):
        _assert_same(a, b)
