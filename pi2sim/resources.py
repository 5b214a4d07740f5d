"""Where bundled data lives, and where generated data is cached.

The repository keeps ``devices/``, ``models/`` and ``traces/`` at the top level; the wheel ships
them inside the package as ``pi2sim/_bundled/<kind>/``. An editable install imports the package
from the source tree, where ``_bundled`` does not exist, so lookup falls back to the top-level
folder next to the package. Either way the answer does not depend on the working directory.

A name argument (``--device oneplus12``, ``--device oneplus12.yaml``) resolves to a bundled file;
anything containing a path separator, or naming an existing file, is a path.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError

_PACKAGE_DIR = Path(__file__).resolve().parent
KINDS = ("devices", "models", "traces", "experiments")


def data_dir(kind: str) -> Path:
    """The bundled folder of ``kind`` (devices, models, traces, experiments)."""
    if kind not in KINDS:
        raise KeyError(kind)
    packaged = _PACKAGE_DIR / "_bundled" / kind
    if packaged.is_dir():
        return packaged
    return _PACKAGE_DIR.parent / kind


def bundled_names(kind: str, suffix: str = ".yaml") -> list[str]:
    d = data_dir(kind)
    if not d.is_dir():
        return []
    return sorted(p.name[: -len(suffix)] for p in d.iterdir() if p.name.endswith(suffix) and not p.name.startswith("."))


def resolve(kind: str, name_or_path: str | Path, suffix: str = ".yaml", what: str | None = None) -> Path:
    """Resolve a bundled name or a user path to an existing file.

    ``what`` names the option in errors (e.g. ``--device``).
    """
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    looks_like_path = os.sep in text or (os.altsep and os.altsep in text)
    if looks_like_path or candidate.is_file():
        if candidate.is_file():
            return candidate
        raise InputError(candidate, None, "cannot read file: it does not exist")
    stem = text[: -len(suffix)] if text.endswith(suffix) else text
    bundled = data_dir(kind) / f"{stem}{suffix}"
    if bundled.is_file():
        return bundled
    names = ", ".join(bundled_names(kind, suffix)) or "(none)"
    raise InputError(None, what or kind, f"a bundled name ({names}) or a path to a file", text)


def cache_dir() -> Path:
    """Cache for generated data (synthetic traces, sweep results). ``PI2SIM_CACHE`` overrides,
    else ``$XDG_CACHE_HOME/pi2sim`` or ``~/.cache/pi2sim``; checked and created (one-line error
    naming the variable when it cannot be)."""
    from .paths import env_dir, make_dir

    base = env_dir("PI2SIM_CACHE")
    if base is not None:
        return base
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return make_dir(Path(xdg).expanduser() / "pi2sim", "$XDG_CACHE_HOME")
    return make_dir(Path.home() / ".cache" / "pi2sim", "~/.cache (set PI2SIM_CACHE to a writable directory)")
