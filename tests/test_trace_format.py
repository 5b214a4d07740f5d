"""The .pi2t container: round trips, packing, integrity checks, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi2sim.errors import InputError
from pi2sim.trace import format as f


def _meta(moe: bool = False, levels: int = 3, neurons: int = 37, layers: int = 3) -> f.TraceMeta:
    if levels == 1:
        lv = (f.ActivationLevel("nonzero"),)
        kind = "zero"
    else:
        lv = tuple(f.ActivationLevel(f"s{i}", 0.5 + 0.1 * i, tuple(float(x) for x in range(layers))) for i in range(levels))
        kind = "magnitude"
    return f.TraceMeta(
        model="toy", n_layers=layers, n_neurons=neurons, n_experts=8 if moe else 1, top_k=2 if moe else 1,
        activation_kind=kind, levels=lv, provenance={"kind": "test"},
    )


def _write(path, meta, n=150, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, len(meta.levels) + 1, (n, meta.n_layers, meta.routed, meta.n_neurons)).astype(np.uint8)
    experts = None
    if meta.is_moe:
        experts = np.stack([np.stack([rng.choice(8, 2, replace=False) for _ in range(meta.n_layers)]) for _ in range(n)]).astype(np.uint8)
    seq = np.repeat(np.arange(3), n // 3 + 1)[:n]
    phase = (np.arange(n) % 50 >= 10).astype(np.uint8)
    f.save(path, meta, np.arange(n), seq, phase, codes, experts)
    return codes, experts, seq, phase


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_pack_unpack_roundtrip(bits, data):
    n = data.draw(st.integers(1, 70))
    rows = data.draw(st.integers(1, 4))
    codes = data.draw(st.lists(st.integers(0, 2**bits - 1), min_size=n * rows, max_size=n * rows))
    arr = np.array(codes, np.uint8).reshape(rows, n)
    packed = f.pack_codes(arr, bits)
    assert packed.shape[-1] == f.packed_width(n, bits)
    assert np.array_equal(f.unpack_codes(packed, bits, n), arr)


@pytest.mark.parametrize("moe,levels", [(False, 1), (False, 3), (True, 1)])
def test_roundtrip(tmp_path, moe, levels):
    meta = _meta(moe, levels)
    p = tmp_path / "t.pi2t"
    codes, experts, seq, phase = _write(p, meta)
    with f.load(p) as t:
        assert len(t) == 150 and t.n_chunks == 3
        assert np.array_equal(t.codes(), codes)
        assert np.array_equal(t.codes(40, 90), codes[40:90])
        assert np.array_equal(t.token_id, np.arange(150))
        assert np.array_equal(t.seq, seq) and np.array_equal(t.phase, phase)
        if moe:
            assert np.array_equal(t.experts, experts)
        else:
            assert t.experts is None
        blocks = list(t.iter_blocks())
        assert sum(len(b) for b in blocks) == 150
        assert np.array_equal(np.concatenate([b.active(0) for b in blocks]), codes >= 1)
        assert t.meta.provenance == {"kind": "test"}
        t.verify()


def test_same_input_same_bytes(tmp_path):
    meta = _meta()
    _write(tmp_path / "a.pi2t", meta)
    _write(tmp_path / "b.pi2t", meta)
    assert (tmp_path / "a.pi2t").read_bytes() == (tmp_path / "b.pi2t").read_bytes()


def _expect_bad(path, text):
    with pytest.raises(InputError) as exc:
        with f.load(path) as t:
            t.verify()
    line = exc.value.line()
    assert "\n" not in line and str(path) in line and text in line, line


def test_truncated_anywhere_is_detected(tmp_path):
    p = tmp_path / "t.pi2t"
    _write(p, _meta())
    data = p.read_bytes()
    for cut in [0, 5, 16, 100, len(data) // 2, len(data) - 17, len(data) - 1]:
        q = tmp_path / f"cut{cut}.pi2t"
        q.write_bytes(data[:cut])
        _expect_bad(q, "")


def test_corruption_anywhere_is_detected(tmp_path):
    p = tmp_path / "t.pi2t"
    _write(p, _meta(moe=True, levels=1))
    data = bytearray(p.read_bytes())
    rng = np.random.default_rng(1)
    for pos in sorted(set(rng.integers(0, len(data), 40).tolist()) | {0, 9, 20, len(data) - 3, len(data) - 12}):
        bad = bytearray(data)
        bad[pos] ^= 0x5A
        q = tmp_path / f"flip{pos}.pi2t"
        q.write_bytes(bytes(bad))
        with pytest.raises(InputError):
            with f.load(q) as t:
                t.verify()
                t.token_id  # small streams too


@pytest.mark.parametrize("number", ["1e999", "-1e999", "NaN", "Infinity"])
def test_header_numbers_beyond_json_are_rejected(tmp_path, number):
    """Found by atheris: Python's json reads 1e999 as infinity (and NaN, Infinity as constants),
    which the header's canonical form cannot encode; that used to escape as a ValueError."""
    p = tmp_path / "t.pi2t"
    _write(p, _meta())
    data = p.read_bytes()
    hlen = int.from_bytes(data[-16:-8], "little")
    header = data[-16 - hlen : -16]
    bad = header.replace(b'"n_tokens":150', b'"n_tokens":' + number.encode(), 1)
    assert bad != header
    q = tmp_path / "bad.pi2t"
    q.write_bytes(data[: -16 - hlen] + bad + len(bad).to_bytes(8, "little") + data[-8:])
    _expect_bad(q, "header is not valid JSON")


def test_wrong_version_names_versions(tmp_path):
    p = tmp_path / "t.pi2t"
    _write(p, _meta())
    data = bytearray(p.read_bytes())
    data[8:10] = (7).to_bytes(2, "little")
    p.write_bytes(bytes(data))
    _expect_bad(p, "version 1 (this file is version 7")


def test_not_a_trace(tmp_path):
    p = tmp_path / "x.pi2t"
    p.write_bytes(b"hello world, this is not a trace at all" * 3)
    _expect_bad(p, "magic")
    _expect_bad(tmp_path / "missing.pi2t", "does not exist")
    _expect_bad(tmp_path, "directory")


def test_shape_mismatch_is_one_line(tmp_path):
    p = tmp_path / "t.pi2t"
    _write(p, _meta())
    with f.load(p) as t:
        with pytest.raises(InputError) as exc:
            f.require_shape(t, "big-model", 32, 14336, 1, 1)
    assert "big-model" in exc.value.line() and "toy" in exc.value.line()


def test_level_selection(tmp_path):
    meta = _meta(levels=3)
    assert meta.level_index(0.6) == 1
    with pytest.raises(InputError):
        meta.level_index(0.55)
    zero = _meta(levels=1)
    assert zero.level_index(None) == 0
    with pytest.raises(InputError):
        zero.level_index(0.5)


def test_writer_rejects_bad_codes(tmp_path):
    meta = _meta(levels=1)
    w = f.TraceWriter(tmp_path / "w.pi2t", meta)
    with pytest.raises(ValueError):
        w.append([0], [0], [1], np.full((1, 3, 1, 37), 5, np.uint8))
    w.abort()
    assert not (tmp_path / "w.pi2t").exists()  # aborted writes leave nothing behind
