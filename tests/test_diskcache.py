"""The on-disk memo (pi2sim/diskcache.py): what goes in comes back equal (arrays, tuples with
None, dataclasses, bit-packed masks), a damaged file is recomputed, the size cap holds, and
PI2SIM_NO_DISK_MEMO=1 keeps the disk out of it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from pi2sim import diskcache


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PI2SIM_CACHE", str(tmp_path))
    monkeypatch.delenv("PI2SIM_NO_DISK_MEMO", raising=False)
    return tmp_path / "memo"


@dataclass
class Result:
    counts: np.ndarray
    mask: np.ndarray
    extra: np.ndarray | None
    peak: int


def _calls():
    n = {"calls": 0}

    def compute(value):
        def f():
            n["calls"] += 1
            return value
        return f

    return n, compute


def test_values_round_trip(cache):
    rng = np.random.default_rng(1)
    mask = rng.random((3, 4, 5000)) < 0.3  # large enough to be stored a bit each
    small = np.array([True, False, True])
    n, compute = _calls()
    for key, value, kind in [
        ("arr", rng.integers(0, 9, (7, 5)), None),
        ("tup", (mask, None, 3, 2.5, small), None),
        ("dc", Result(rng.integers(0, 5, (4, 4)), mask, None, 11), Result),
    ]:
        first = diskcache.persisted(key, compute(value), kind)
        again = diskcache.persisted(key, compute(None), kind)  # read back, not recomputed
        for a, b in [(first, value), (again, value)]:
            if kind is Result:
                assert np.array_equal(a.counts, b.counts) and np.array_equal(a.mask, b.mask) and a.extra is None and a.peak == 11
                assert a.mask.dtype == np.bool_ and a.mask.shape == mask.shape
            elif isinstance(value, tuple):
                assert np.array_equal(a[0], mask) and a[0].dtype == np.bool_ and a[1] is None and a[2] == 3 and a[3] == 2.5
                assert np.array_equal(a[4], small)
            else:
                assert np.array_equal(a, b)
    assert n["calls"] == 3
    # the mask went to disk a bit each
    assert (cache / "tup.npz").stat().st_size < mask.size / 4


def test_damaged_file_is_recomputed(cache):
    n, compute = _calls()
    diskcache.persisted("k", compute(np.arange(10)), None)
    (cache / "k.npz").write_bytes(b"not an npz")
    assert np.array_equal(diskcache.persisted("k", compute(np.arange(10)), None), np.arange(10))
    assert n["calls"] == 2
    assert np.array_equal(diskcache.load("k"), np.arange(10))  # and stored again


def test_off_switch(cache, monkeypatch):
    monkeypatch.setenv("PI2SIM_NO_DISK_MEMO", "1")
    n, compute = _calls()
    diskcache.persisted("k", compute(np.arange(3)), None)
    diskcache.persisted("k", compute(np.arange(3)), None)
    assert n["calls"] == 2 and not cache.exists() and diskcache.load("k") is None


def test_size_cap_keeps_the_newest(cache, monkeypatch):
    monkeypatch.setattr(diskcache, "DISK_MAX_BYTES", 3 * 8000 + 1500)
    for i in range(6):
        diskcache.store(f"k{i}", np.arange(1000, dtype=np.int64) + i)  # ~8 KB each
    kept = sorted(p.stem for p in cache.glob("*.npz"))
    assert "k5" in kept and "k0" not in kept and len(kept) <= 3
