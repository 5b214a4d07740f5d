"""Policy registry: policies are found by name, by path or by entry point.

Every module in this package is imported on first use; a module registers its policy class with
``@register``. Adding a policy therefore means adding one file. A policy outside the package is
named where any policy name is accepted (run, compare, ablate, sweep, plan, regress, validate
scenarios, ``pi2sim.simulate(policy=...)``):

* ``path/to/file.py:ClassName``: the class, loaded from that file (relative paths from the
  working directory);
* an entry point of the ``pi2sim.policies`` group of an installed distribution (a research repo's
  ``pyproject.toml``: ``[project.entry-points."pi2sim.policies"] my-policy = "mypkg.mod:MyPolicy"``),
  by its entry-point name.

Either way the class must honour the contract of :class:`pi2sim.policies.base.Policy`
(:func:`check_contract`); a mistake is one line naming the file and what was expected.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import sys
from dataclasses import is_dataclass
from pathlib import Path
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


ENTRY_POINT_GROUP = "pi2sim.policies"
_EXTERNAL: dict[str, type[Policy]] = {}  # "path.py:Class" or an entry-point name -> its class


def split_spec(spec: str) -> tuple[str, str | None]:
    """``name@preset`` -> (name, preset); a name without one -> (name, None)."""
    name, at, preset = spec.rpartition("@") if "@" in spec else (spec, "", "")
    return (name, preset or None) if at else (spec, None)


def get(name: str) -> type[Policy]:
    """The policy class a name stands for: a bundled policy, ``file.py:ClassName``, or an entry
    point of the ``pi2sim.policies`` group (a ``@preset`` suffix names one of its presets, which
    :func:`pi2sim.simulation.build` applies)."""
    _load_all()
    name = split_spec(name)[0]
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _EXTERNAL:
        return _EXTERNAL[name]
    if ":" in name and name.split(":", 1)[0].endswith(".py"):
        cls = _from_file(name)
    else:
        ep = _entry_points().get(name)
        if ep is None:
            raise InputError(None, "--policy", "one of " + ", ".join(sorted(_REGISTRY)) + ", a file.py:ClassName, or an installed "
                             f"'{ENTRY_POINT_GROUP}' entry point" + (f" ({', '.join(sorted(_entry_points()))})" if _entry_points() else ""), name)
        try:
            cls = ep.load()
        except Exception as exc:  # the user's package failed to import: say where, in one line
            raise InputError(None, f"--policy {name}", f"entry point {ep.value} to import ({type(exc).__name__}: {exc})") from None
        check_contract(cls, f"entry point {name} ({ep.value})")
    _EXTERNAL[name] = cls
    return cls


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _from_file(spec: str) -> type[Policy]:
    """``path/to/file.py:ClassName`` -> the class (the file imported as a module of its own)."""
    import hashlib

    path_text, _, cls_name = spec.rpartition(":")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise InputError(path_text, None, "cannot read file: it does not exist (--policy FILE.py:ClassName)")
    path = path.resolve()
    module_name = "pi2sim_user_policy_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    module = sys.modules.get(module_name)
    if module is None:
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module  # dataclasses and pickling (sweep workers) look the module up
        try:
            loader_spec.loader.exec_module(module)
        except ValueError as exc:
            sys.modules.pop(module_name, None)
            raise InputError(path, None, f"a policy module that loads ({exc}: give the class a name no bundled policy has)") from None
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise InputError(path, None, f"a Python file that imports ({type(exc).__name__}: {exc})".replace("\n", " ")) from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        found = [n for n, v in vars(module).items() if inspect.isclass(v) and issubclass(v, Policy) and v.__module__ == module_name]
        raise InputError(path, cls_name, f"a class defined in the file ({', '.join(found) or 'it defines no Policy subclass'})")
    check_contract(cls, str(path))
    return cls


def check_contract(cls: Any, where: str) -> None:
    """The contract of :class:`Policy` a class from outside the package must honour, checked
    before it runs: one line naming where it came from and what was expected."""
    if not (inspect.isclass(cls) and issubclass(cls, Policy)):
        raise InputError(where, None, "a subclass of pi2sim.policies.base.Policy", getattr(cls, "__name__", cls))
    for attr, kind in (("name", str), ("summary", str)):
        if not isinstance(getattr(cls, attr, None), kind) or not getattr(cls, attr):
            raise InputError(where, f"{cls.__name__}.{attr}", "a non-empty string class attribute")
    opts = getattr(cls, "Options", None)
    if not (inspect.isclass(opts) and is_dataclass(opts)):
        raise InputError(where, f"{cls.__name__}.Options", "a dataclass of the policy's options (fields declared with pi2sim.schema.spec_field)")
    try:
        opts()
    except TypeError as exc:
        raise InputError(where, f"{cls.__name__}.Options", f"a default for every option ({exc})") from None
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        raise InputError(where, cls.__name__, f"an implementation of {', '.join(missing)} (policies/base.py states the interface)")


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


__all__ = ["AccessSummary", "Policy", "RunContext", "build_options", "check_contract", "get", "names", "register", "split_spec"]
