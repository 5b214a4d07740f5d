"""Policy registry: policies are found by name.

Every module in this package is imported on first use; a module registers its policy class with
``@register``. Adding a policy therefore means adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from ..errors import InputError
from .base import AccessSummary, Policy, RunContext

_REGISTRY: dict[str, type[Policy]] = {}
_loaded = False


def register(cls: type[Policy]) -> type[Policy]:
    name = cls.name
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"policy name {name!r} registered twice")
    _REGISTRY[name] = cls
    return cls


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name not in ("base",) and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _loaded = True


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get(name: str) -> type[Policy]:
    _load_all()
    if name not in _REGISTRY:
        raise InputError(None, "--policy", "one of " + ", ".join(sorted(_REGISTRY)), name)
    return _REGISTRY[name]


def build_options(cls: type[Policy], given: dict[str, Any], source: str = "--set") -> Any:
    """Typed options of ``cls`` from ``given`` (preset expanded first, explicit keys win)."""
    from .. import schema

    given = dict(given)
    preset = given.pop("preset", None)
    merged: dict[str, Any] = {}
    if preset is not None:
        if preset not in cls.presets:
            raise InputError(None, f"{source} preset", f"a preset of {cls.name} ({', '.join(cls.presets) or 'none'})", preset)
        merged.update(cls.presets[preset])
    merged.update(given)
    opts = schema.build(cls.Options, merged, f"policy {cls.name}")
    return opts, preset


__all__ = ["AccessSummary", "Policy", "RunContext", "build_options", "get", "names", "register"]
