"""The one place where unit strings become SI numbers.

YAML files and ``--set`` values carry explicit units (``"4 GB/s"``, ``"3.3 GHz"``, ``"60 us"``,
``"8 KiB"``); code works in SI base units (bytes, seconds, hertz, bytes per second, operations per
second). :func:`parse` is the only function that converts; :func:`format_quantity` goes back for
display.

Decimal prefixes are powers of 1000 (``KB``, ``MB``, ``GB``), binary ones powers of 1024 (``KiB``,
``MiB``, ``GiB``). ``B`` is a byte and ``b`` a bit: ``"23.2 Gb/s"`` is a link rate in bits.
"""

from __future__ import annotations

import math
import re

# kind -> {unit spelling: factor to SI}
_DEC = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_BIN = {"Ki": 1024.0, "Mi": 1024.0**2, "Gi": 1024.0**3, "Ti": 1024.0**4}


def _byte_units() -> dict[str, float]:
    units = {}
    for p, f in _DEC.items():
        units[f"{p}B"] = f
        units[f"{p}b"] = f / 8.0  # bits
    for p, f in _BIN.items():
        units[f"{p}B"] = f
    return units


_BYTES = _byte_units()
_BANDWIDTH = {f"{u}/s": f for u, f in _BYTES.items()} | {f"{u}ps": f for u, f in _BYTES.items() if u.endswith("b")}
_TIME = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}
_FREQUENCY = {"Hz": 1.0, "kHz": 1e3, "MHz": 1e6, "GHz": 1e9}
_OPS = {}
for _p, _f in {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}.items():
    for _name in ("FLOPS", "FLOP/s", "OPS", "OP/s"):
        _OPS[f"{_p}{_name}"] = _f
_IOPS = {"IOPS": 1.0, "KIOPS": 1e3, "kIOPS": 1e3, "MIOPS": 1e6}
_TOKEN_RATE = {"tok/s": 1.0}
_FRACTION = {"%": 0.01, "": 1.0}
_POWER = {"W": 1.0, "mW": 1e-3, "kW": 1e3}
_ENERGY = {"J": 1.0, "mJ": 1e-3, "uJ": 1e-6, "nJ": 1e-9, "pJ": 1e-12, "Wh": 3600.0, "mWh": 3.6, "kWh": 3.6e6}
# per byte moved: pJ/bit (how DRAM and link energy is usually quoted) or per byte
_ENERGY_PER_BYTE = {f"{e}/{b}": f * (8.0 if b == "bit" else 1.0) for e, f in {"pJ": 1e-12, "nJ": 1e-9, "uJ": 1e-6}.items() for b in ("bit", "B")}
# absolute temperatures are kept in degrees Celsius (differences are kelvin)
_TEMPERATURE = {"C": 1.0, "°C": 1.0, "degC": 1.0}
_THERMAL_RESISTANCE = {"K/W": 1.0}
_HEAT_CAPACITY = {"J/K": 1.0, "kJ/K": 1e3}

KINDS: dict[str, dict[str, float]] = {
    "bytes": _BYTES,
    "bandwidth": _BANDWIDTH,
    "time": _TIME,
    "frequency": _FREQUENCY,
    "ops_rate": _OPS,
    "iops": _IOPS,
    "token_rate": _TOKEN_RATE,
    "fraction": _FRACTION,
    "power": _POWER,
    "energy": _ENERGY,
    "energy_per_byte": _ENERGY_PER_BYTE,
    "temperature": _TEMPERATURE,
    "thermal_resistance": _THERMAL_RESISTANCE,
    "heat_capacity": _HEAT_CAPACITY,
}

EXAMPLES = {
    "bytes": "'8 KiB' or '2.6 GB'",
    "bandwidth": "'4 GB/s' or '450 MB/s'",
    "time": "'60 us' or '1.5 ms'",
    "frequency": "'3.3 GHz'",
    "ops_rate": "'10.8 TOPS' or '112 GFLOPS'",
    "iops": "'100 KIOPS'",
    "token_rate": "'770 tok/s'",
    "fraction": "'40%' or 0.4",
    "power": "'1.2 W' or '30 mW'",
    "energy": "'20.9 Wh' or '0.3 J'",
    "energy_per_byte": "'4 pJ/bit' or '30 pJ/B'",
    "temperature": "'25 C'",
    "thermal_resistance": "'6 K/W'",
    "heat_capacity": "'40 J/K'",
}

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_QUANTITY_RE = re.compile(rf"^\s*({_NUMBER})\s*([^\s\d].*?)?\s*$")


class UnitError(ValueError):
    """A value that is not a valid quantity of the requested kind. The caller adds file and key."""

    def __init__(self, expected: str):
        super().__init__(expected)
        self.expected = expected


def parse(value: object, kind: str) -> float:
    """Parse ``value`` as a quantity of ``kind`` and return it in SI units.

    Raises :class:`UnitError` (with the expected form) for a missing or wrong unit, a non-number,
    NaN or infinity. Range checks are the caller's job.
    """
    if kind not in KINDS:  # programming error, not user error
        raise KeyError(f"unknown quantity kind {kind!r}")
    units = KINDS[kind]
    expected = f"a {kind.replace('_', ' ')} with a unit, e.g. {EXAMPLES[kind]}"
    if isinstance(value, bool):
        raise UnitError(expected)
    if isinstance(value, (int, float)):
        if "" in units:  # dimensionless kinds accept bare numbers
            number, factor = float(value), units[""]
        else:
            raise UnitError(expected)
    elif isinstance(value, str):
        m = _QUANTITY_RE.match(value)
        if not m:
            raise UnitError(expected)
        number = float(m.group(1))
        unit = m.group(2) or ""
        if unit not in units:
            raise UnitError(expected)
        factor = units[unit]
    else:
        raise UnitError(expected)
    result = number * factor
    if not math.isfinite(result):
        raise UnitError(expected)
    return result


_DISPLAY = {
    "bytes": [(1e9, "GB"), (1e6, "MB"), (1e3, "KB"), (1.0, "B")],
    "bandwidth": [(1e9, "GB/s"), (1e6, "MB/s"), (1e3, "KB/s"), (1.0, "B/s")],
    "time": [(1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")],
    "frequency": [(1e9, "GHz"), (1e6, "MHz"), (1.0, "Hz")],
    "ops_rate": [(1e12, "TOPS"), (1e9, "GOPS"), (1e6, "MOPS"), (1.0, "OPS")],
    "iops": [(1e3, "KIOPS"), (1.0, "IOPS")],
    "token_rate": [(1.0, "tok/s")],
    "fraction": [(0.01, "%")],
    "power": [(1.0, "W"), (1e-3, "mW")],
    "energy": [(3600.0, "Wh"), (1.0, "J"), (1e-3, "mJ"), (1e-6, "uJ"), (1e-9, "nJ"), (1e-12, "pJ")],
    "energy_per_byte": [(1e-12, "pJ/B")],
    "temperature": [(1.0, "C")],
    "thermal_resistance": [(1.0, "K/W")],
    "heat_capacity": [(1.0, "J/K")],
}


def format_quantity(value: float, kind: str, digits: int = 4) -> str:
    """Human-readable form of an SI value, e.g. ``format_quantity(4e9, 'bandwidth') == '4 GB/s'``."""
    for factor, unit in _DISPLAY[kind]:
        if abs(value) >= factor or factor == _DISPLAY[kind][-1][0]:
            return f"{value / factor:.{digits}g} {unit}"
    raise AssertionError("unreachable")
