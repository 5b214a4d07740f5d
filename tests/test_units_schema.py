"""Unit parsing (one place, SI inside) and the strict schema loader."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pytest

from pi2sim import schema, units, yamlio
from pi2sim.errors import InputError
from pi2sim.schema import spec_field


@pytest.mark.parametrize(
    "text,kind,value",
    [
        ("4 GB/s", "bandwidth", 4e9),
        ("450 MB/s", "bandwidth", 450e6),
        ("1076.10 MB/s", "bandwidth", 1076.10e6),
        ("23.2 Gb/s", "bandwidth", 23.2e9 / 8),
        ("3.3 GHz", "frequency", 3.3e9),
        ("60 us", "time", 60e-6),
        ("60 µs", "time", 60e-6),
        ("1.5ms", "time", 1.5e-3),
        ("8 KiB", "bytes", 8192),
        ("8 KB", "bytes", 8000),
        ("2.6 GB", "bytes", 2.6e9),
        ("1 GiB", "bytes", 1024**3),
        ("10.8 TOPS", "ops_rate", 10.8e12),
        ("112 GFLOPS", "ops_rate", 112e9),
        ("770 tok/s", "token_rate", 770.0),
        ("40%", "fraction", 0.4),
        (0.4, "fraction", 0.4),
        ("100 KIOPS", "iops", 1e5),
    ],
)
def test_parse(text, kind, value):
    assert math.isclose(units.parse(text, kind), value, rel_tol=1e-12)


@pytest.mark.parametrize(
    "text,kind",
    [
        (4, "bandwidth"),  # a bare number needs a unit
        ("4", "bandwidth"),
        ("4 GB", "bandwidth"),  # wrong dimension
        ("4 gb/s", "bandwidth"),  # unknown spelling
        ("fast", "time"),
        ("nan GB/s", "bandwidth"),
        ("inf s", "time"),
        (True, "fraction"),
        (None, "bytes"),
        ("1e999 B", "bytes"),
    ],
)
def test_parse_rejects(text, kind):
    with pytest.raises(units.UnitError):
        units.parse(text, kind)


def test_format_round_trip():
    for kind, v in [("bandwidth", 4e9), ("time", 60e-6), ("bytes", 8192), ("frequency", 3.3e9)]:
        assert math.isclose(units.parse(units.format_quantity(v, kind, 8), kind), v, rel_tol=1e-6)


@dataclass(frozen=True, kw_only=True)
class Inner:
    bw: float = spec_field(unit="bandwidth", gt=0.0, hi=1e12, help="bandwidth")
    n: int = spec_field(default=1, lo=1, hi=8)


@dataclass(frozen=True, kw_only=True)
class Outer:
    name: str = spec_field()
    mode: Literal["a", "b"] = spec_field(default="a")
    inner: Inner = spec_field()
    items: list[Inner] = spec_field(default_factory=list)
    share: float = spec_field(default=0.5, unit="fraction", lo=0.0, hi=1.0)

    def validate(self, source):
        if self.mode == "b" and not self.items:
            raise InputError(source, "items", "at least one item when mode is b")


def _build(data):
    return schema.build(Outer, data, "f.yaml")


def test_build_ok():
    o = _build({"name": "x", "inner": {"bw": "2 GB/s"}, "items": [{"bw": "1 MB/s", "n": 3}], "share": "25%"})
    assert o.inner.bw == 2e9 and o.items[0].n == 3 and o.share == 0.25
    assert schema.to_dict(o)["inner"] == {"bw": 2e9, "n": 1}


@pytest.mark.parametrize(
    "data,key,fragment",
    [
        ({"name": "x", "inner": {"bw": "2 GB/s"}, "extra": 1}, "extra", "unknown key"),
        ({"name": "x"}, "inner", "missing key"),
        ({"name": "x", "inner": {"bw": "0 GB/s"}}, "inner.bw", "greater than"),
        ({"name": "x", "inner": {"bw": "-3 GB/s"}}, "inner.bw", "greater than"),
        ({"name": "x", "inner": {"bw": 2}}, "inner.bw", "with a unit"),
        ({"name": "x", "inner": {"bw": "2 GB/s", "n": 9}}, "inner.n", "between"),
        ({"name": "x", "inner": {"bw": "2 GB/s", "n": True}}, "inner.n", "integer"),
        ({"name": "x", "inner": {"bw": "2 GB/s", "n": 1.5}}, "inner.n", "integer"),
        ({"name": 3, "inner": {"bw": "2 GB/s"}}, "name", "string"),
        ({"name": "x", "mode": "c", "inner": {"bw": "2 GB/s"}}, "mode", "one of"),
        ({"name": "x", "mode": "b", "inner": {"bw": "2 GB/s"}}, "items", "at least one"),
        ({"name": "x", "inner": {"bw": "2 GB/s"}, "items": [{"bw": "x"}]}, "items[0].bw", "with a unit"),
        ({"name": "x", "inner": {"bw": "2 GB/s"}, "share": 1.5}, "share", "between"),
        ({"name": "x", "inner": "fast"}, "inner", "mapping"),
    ],
)
def test_build_rejects_with_key_path(data, key, fragment):
    with pytest.raises(InputError) as exc:
        _build(data)
    line = exc.value.line()
    assert line.startswith("f.yaml: ") and f": {key}: " in line and fragment in line, line
    assert "\n" not in line


def test_yaml_duplicate_keys_rejected(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text("a: 1\nb: 2\na: 3\n")
    with pytest.raises(InputError) as exc:
        yamlio.load(p)
    assert "duplicate key 'a'" in exc.value.line() and "line 3" in exc.value.line()


def test_yaml_syntax_error_one_line(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("a: [1, 2\nb: 3\n")
    with pytest.raises(InputError) as exc:
        yamlio.load(p)
    assert str(p) in exc.value.line() and "\n" not in exc.value.line()


def test_scalar_notes(tmp_path):
    p = tmp_path / "n.yaml"
    p.write_text("# head\na: 1  # source: here\nb:\n  # assumption: why\n  c: '2 # not a comment'\n")
    notes = {n.key: n for n in yamlio.scalar_notes(p)}
    assert notes["a"].comment == "source: here"
    assert notes["b.c"].comment == "assumption: why"
