"""Trace statistics: definitions checked by brute force, and the bundled trace against docs/sources.md §E."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from pi2sim.trace import format as f
from pi2sim.trace import stats as S
from pi2sim.trace.stats import _gap_histograms, _union_sizes, compute, moe_repetition

from conftest import BUNDLED_TRACE, REPO


def _brute_window(A, pos, k):
    hit = tot = 0
    for t in range(len(A)):
        if pos[t] < k:
            continue
        prev = A[t - k : t].any(axis=0)
        hit += (A[t] & prev).sum()
        tot += A[t].sum()
    return hit / max(1, tot)


def _brute_union(A, pos, k):
    vals = [A[t - k + 1 : t + 1].any(axis=0).sum() for t in range(len(A)) if pos[t] >= k - 1]
    return float(np.sum(vals)), len(vals)


@pytest.mark.parametrize("seed", range(5))
def test_gap_formulas_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    T, M = 90, 40
    A = rng.random((T, M)) < rng.uniform(0.05, 0.6, M)
    seq = np.repeat([0, 1, 2], [30, 35, 25])
    pos = np.concatenate([np.arange(30), np.arange(35), np.arange(25)])
    gaps, n = _gap_histograms(A, pos)
    cum = np.cumsum(gaps[:, 1:], axis=1)
    for k in (1, 2, 4, 8):
        ok = pos >= k
        fast = cum[ok, k - 1].sum() / max(1, n[ok].sum())
        assert fast == pytest.approx(_brute_window(A, pos, k))
    us = _union_sizes(gaps, n, pos, (1, 2, 4, 8, 16))
    for k, (total, count) in us.items():
        assert (total, count) == _brute_union(A, pos, k)
    del seq


def _tiny_trace(tmp_path, A, seq, phase):
    T, M = A.shape
    meta = f.TraceMeta(model="tiny", n_layers=1, n_neurons=M, n_experts=1, top_k=1, activation_kind="zero", levels=(f.ActivationLevel("nonzero"),))
    p = tmp_path / "tiny.pi2t"
    f.save(p, meta, np.zeros(T), seq, phase, A[:, None, None, :].astype(np.uint8))
    return f.load(p)


def test_known_values(tmp_path):
    # neuron 0 always on, neurons 1/2 alternate: Jaccard(t,t-1) = 1/3, reuse = 1/2
    T = 40
    A = np.zeros((T, 4), bool)
    A[:, 0] = True
    A[::2, 1] = True
    A[1::2, 2] = True
    st = compute(_tiny_trace(tmp_path, A, np.zeros(T), np.ones(T)))
    o = st.overall["nonzero"]
    assert o["sparsity"] == pytest.approx(0.5)
    assert o["jaccard_prev"] == pytest.approx(1 / 3)
    assert o["reuse_prev"] == pytest.approx(0.5)
    assert o["window_2"] == pytest.approx(1.0)
    assert o["share_above_80"] == pytest.approx(0.25) and o["share_below_1"] == pytest.approx(0.25)
    assert st.union["nonzero"]["k=2"] == pytest.approx(0.75)


def test_temporal_stats_do_not_cross_sequences(tmp_path):
    # two sequences with disjoint neurons: reuse inside each is perfect, nothing leaks across
    A = np.zeros((20, 4), bool)
    A[:10, 0] = True
    A[10:, 1] = True
    st = compute(_tiny_trace(tmp_path, A, np.repeat([0, 1], 10), np.ones(20)))
    assert st.overall["nonzero"]["jaccard_prev"] == pytest.approx(1.0)


def test_moe_repetition_counts():
    experts = np.array([[[0, 1]], [[0, 2]], [[3, 4]], [[4, 3]]], np.uint8)  # [T, L=1, K=2]
    pos = np.arange(4)
    r = moe_repetition(experts, pos)
    assert r["first_repeat_mean"] == pytest.approx(1 / 3)  # only 0 -> 0
    assert r["pair_overlap_mean"] == pytest.approx(2 / 3)  # (0,1)->(0,2) and (3,4)->(4,3)


# --------------------------------------------------------------------------- bundled trace vs its reference statistics

# Tolerances per metric family ("within a few points"): sampling noise of a 2,100-token trace
# and the different prompt set (see traces/README.md for the explanation of the residuals).
TOL = {"default": 0.02, "closest_friend_non_hot": 0.05, "prompt_active": 0.02}


@pytest.fixture(scope="module")
def bundled_stats():
    if not BUNDLED_TRACE.is_file():
        pytest.fail("bundled trace missing: traces/smollm2-135m.pi2t")
    with f.load(BUNDLED_TRACE) as t:
        return compute(t)


def test_bundled_trace_matches_published_statistics(bundled_stats):
    ref = yaml.safe_load((REPO / "traces" / "reference" / "smollm2-135m.yaml").read_text())
    st = bundled_stats
    assert st.n_decode >= 2000
    checked = 0
    failures = []
    for level in ("s50", "s70", "s90"):
        for key, want in ref[level].items():
            if key.startswith("union_"):
                got = st.union[level].get(key[len("union_") :])
            elif key in st.coactivation.get(level, {}):
                got = st.coactivation[level][key]
            else:
                got = st.overall[level].get(key)
            assert got is not None, (level, key)
            tol = TOL.get(key, TOL["default"])
            checked += 1
            if abs(got - want) > tol:
                failures.append(f"{level} {key}: {got:.3f} vs {want:.3f} (tol {tol})")
    assert checked > 80
    assert not failures, failures


def test_render_and_write(bundled_stats, tmp_path):
    text = S.render(bundled_stats, {"s50": {"hot80": 0.748}, "_source": "x"})
    assert "hot@80" in text and "(0.748)" in text
    paths = S.write(bundled_stats, tmp_path / "out")
    assert {p.suffix for p in paths} == {".json", ".csv"}
    import pandas as pd

    df = pd.read_csv(tmp_path / "out.csv")
    assert set(df.columns) == {"level", "layer", "metric", "value"} and len(df) > 100


def test_hit_curve_rises_with_the_cached_share(tmp_path):
    """`trace stats --hit-curve`: the segmented cache's hit rate against the cached share of the
    FFN is non-decreasing, near the share itself for a tiny cache and 1 when everything fits."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "pi2sim", "trace", "stats", "bamboo-7b", "--tokens", "64", "--hit-curve", "--json"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    import json

    curve = json.loads(p.stdout)["hit_curve"]
    hits = [c["hit_rate"] for c in curve]
    assert all(b >= a - 1e-9 for a, b in zip(hits, hits[1:])), hits
    assert hits[0] < 0.3 and hits[-1] > 0.99
