"""Typed, strict loading of nested mappings into frozen dataclasses.

A spec class is a frozen dataclass whose fields declare, through :func:`spec_field`, the YAML key,
the unit kind (parsed by :mod:`pi2sim.units`), the allowed range and a help text. One function,
:func:`build`, turns a mapping into an instance and rejects, with a one-line
:class:`~pi2sim.errors.InputError` naming file and key path:

* unknown keys and missing required keys,
* wrong types (a string where a number is needed, a bool where an int is needed, ...),
* bad or missing units, NaN, infinities,
* values outside the declared range.

Cross-field checks live in each class's ``validate(self, source)`` method, called after
construction. The same field metadata drives ``--set`` overrides and the resolved-config dump,
so the CLI, the YAML and the saved config cannot drift apart (the Vidur ``flat_dataclass`` idea).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, Literal, get_args, get_origin

from . import units
from .errors import InputError


@dataclass(frozen=True)
class FieldSpec:
    key: str | None = None  # YAML key if it differs from the field name
    unit: str | None = None  # units.KINDS key; None for plain numbers / strings
    lo: float | None = None  # inclusive lower bound (SI)
    hi: float | None = None  # inclusive upper bound (SI)
    lo_open: bool = False  # lower bound is exclusive
    help: str = ""
    zero_ok: bool = False  # exactly 0 is allowed besides [lo, hi] (an ideal "free" cost in a what-if)


def spec_field(
    *,
    default: Any = MISSING,
    default_factory: Any = MISSING,
    key: str | None = None,
    unit: str | None = None,
    lo: float | None = None,
    hi: float | None = None,
    gt: float | None = None,
    zero_ok: bool = False,
    help: str = "",
) -> Any:
    """A dataclass field with loading metadata. ``gt`` is an exclusive lower bound; ``zero_ok``
    also allows exactly 0. Bounds are physical plausibility ranges, narrower than 1000x where the
    quantity allows, so that a unit slip (ns for us, MB for GB) is rejected rather than simulated."""
    meta = FieldSpec(key=key, unit=unit, lo=gt if gt is not None else lo, hi=hi, lo_open=gt is not None, help=help, zero_ok=zero_ok)
    kwargs: dict[str, Any] = {"metadata": {"pi2sim": meta}}
    if default is not MISSING:
        kwargs["default"] = default
    if default_factory is not MISSING:
        kwargs["default_factory"] = default_factory
    return field(**kwargs)


def field_spec(f: dataclasses.Field) -> FieldSpec:
    return f.metadata.get("pi2sim", FieldSpec())


def yaml_key(f: dataclasses.Field) -> str:
    return field_spec(f).key or f.name


def _join(prefix: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


def _range_text(fs: FieldSpec) -> str:
    def fmt(v: float) -> str:
        return units.format_quantity(v, fs.unit) if fs.unit else f"{v:g}"

    if fs.zero_ok:
        return f"0 or between {fmt(fs.lo)} and {fmt(fs.hi)}"
    if fs.lo is not None and fs.hi is not None:
        if fs.lo_open:
            return f"greater than {fmt(fs.lo)} and at most {fmt(fs.hi)}"
        return f"between {fmt(fs.lo)} and {fmt(fs.hi)}"
    if fs.lo is not None:
        return f"{'greater than' if fs.lo_open else 'at least'} {fmt(fs.lo)}"
    if fs.hi is not None:
        return f"at most {fmt(fs.hi)}"
    return ""


def _check_range(value: float, fs: FieldSpec, source: Any, key: str, raw: Any) -> None:
    if fs.zero_ok and value == 0:
        return
    bad = False
    if fs.lo is not None:
        bad |= value <= fs.lo if fs.lo_open else value < fs.lo
    if fs.hi is not None:
        bad |= value > fs.hi
    if bad:
        example = f" (e.g. {units.EXAMPLES[fs.unit].split(' or ')[0]})" if fs.unit else ""
        raise InputError(source, key, f"a value {_range_text(fs)}{example}", raw)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of a spec class (resolving them is the slow part of building a spec)."""
    return typing.get_type_hints(cls)


def convert(value: Any, tp: Any, fs: FieldSpec, source: Any, key: str) -> Any:
    """Convert one YAML value to the annotated type ``tp``, enforcing ``fs``."""
    if tp is Any:  # validated later by whoever consumes it
        return value
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise InputError(source, key, f"a value ({_describe(tp, fs)})", None)
    origin = get_origin(tp)
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise InputError(source, key, f"a mapping of {tp.__name__} keys", value)
        return build(tp, value, source, key)
    if origin is list or origin is tuple:
        if not isinstance(value, list):
            raise InputError(source, key, f"a list ({_describe(tp, fs)})", value)
        (item_tp,) = get_args(tp)[:1]
        items = [convert(v, item_tp, fs, source, _join(key, i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(source, key, "a mapping", value)
        _, val_tp = get_args(tp)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputError(source, _join(key, str(k)), "a string key", k)
            out[k] = convert(v, val_tp, fs, source, _join(key, k))
        return out
    if origin is Literal:
        allowed = get_args(tp)
        if isinstance(value, int) and not isinstance(value, bool) and str(value) in allowed and all(isinstance(a, str) for a in allowed):
            value = str(value)  # a choice whose name is a number ("2024"), written unquoted in YAML or --set
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            raise InputError(source, key, "one of " + ", ".join(repr(a) for a in allowed), value)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise InputError(source, key, "true or false", value)
        return value
    if tp is str:
        if not isinstance(value, str) or not value.strip():
            raise InputError(source, key, "a non-empty string", value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and math.isfinite(value):
                value = int(value)
            else:
                raise InputError(source, key, f"an integer{(' ' + _range_text(fs)) if _range_text(fs) else ''}", value)
        _check_range(float(value), fs, source, key, value)
        return value
    if tp is float:
        if fs.unit:
            try:
                number = units.parse(value, fs.unit)
            except units.UnitError as exc:
                raise InputError(source, key, exc.expected, value) from None
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(source, key, f"a number{(' ' + _range_text(fs)) if _range_text(fs) else ''}", value)
            number = float(value)
            if not math.isfinite(number):
                raise InputError(source, key, "a finite number", value)
        _check_range(number, fs, source, key, value)
        return number
    raise TypeError(f"unsupported field type {tp!r} at {key}")  # programming error


def _describe(tp: Any, fs: FieldSpec) -> str:
    if fs.unit:
        return units.EXAMPLES[fs.unit]
    return getattr(tp, "__name__", str(tp))


def build(cls: type, data: dict, source: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from mapping ``data``; strict about keys, types, units and ranges."""
    hints = _type_hints(cls)
    by_key = {yaml_key(f): f for f in fields(cls) if f.init}
    unknown = [k for k in data if k not in by_key]
    if unknown:
        allowed = ", ".join(sorted(by_key))
        raise InputError(source, _join(prefix, str(unknown[0])), f"unknown key (allowed here: {allowed})")
    kwargs = {}
    for key, f in by_key.items():
        path = _join(prefix, key)
        if key not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise InputError(source, path, f"missing key ({field_spec(f).help or _describe(hints[f.name], field_spec(f))})")
            continue
        kwargs[f.name] = convert(data[key], hints[f.name], field_spec(f), source, path)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate(source)
        except InputError as exc:
            raise exc.with_prefix(prefix) if prefix else exc
    return obj


def to_dict(obj: Any) -> Any:
    """A dataclass as plain data with SI values under the code's (unit-suffixed) field names."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj) if not f.name.startswith("_")}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def describe_fields(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type/unit, default, help) rows for documentation and ``--help`` output."""
    rows = []
    hints = _type_hints(cls)
    for f in fields(cls):
        if not f.init:
            continue
        fs = field_spec(f)
        key = _join(prefix, yaml_key(f))
        tp, _ = _unwrap_optional(hints[f.name])
        if is_dataclass(tp):
            rows.extend(describe_fields(tp, key))
            continue
        if get_origin(tp) is Literal:
            kind = "|".join(str(a) for a in get_args(tp))
        elif fs.unit:
            kind = fs.unit
        else:
            kind = getattr(tp, "__name__", str(tp))
        rng = _range_text(fs)
        if f.default is not MISSING:
            default = f.default
            if fs.unit and isinstance(default, (int, float)) and not isinstance(default, bool):
                default = units.format_quantity(default, fs.unit)
        elif f.default_factory is not MISSING:
            default = "(computed)"
        else:
            default = "(required)"
        text = fs.help + (f" [{rng}]" if rng else "")
        rows.append((key, kind, str(default), text.strip()))
    return rows
