"""Every path a user gives on the command line (each command's path flags and arguments) or in an
environment variable (``PI2SIM_CACHE``, ``XDG_CACHE_HOME``) is checked here, once, before any work
starts: one line naming the flag and what was expected, instead of a traceback from deep inside a
writer half an hour later. (Devices, models and traces named inside YAML files are resolved by
:func:`pi2sim.resources.resolve`, which names the file and key the same way.)

The ``*_arg`` functions are argparse ``type=`` converters; they raise :class:`InputError` (which
argparse lets through to the CLI's one-line handler) rather than argparse's own error type, so the
message names the flag the same way every other bad input does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .errors import InputError


def _first_existing(p: Path) -> Path:
    for a in (p, *p.parents):
        if a.exists() or a.is_symlink():
            return a
    return Path(".")


def _writable_dir_for(p: Path, key: str, text: str) -> None:
    """Directory ``p`` exists or can be created: it, or its first existing ancestor, is a
    directory we may write into."""
    a = _first_existing(p)
    if not a.is_dir():
        raise InputError(None, key, f"a path whose parents are directories ({a} is a file)", text)
    if not os.access(a, os.W_OK | os.X_OK):
        raise InputError(None, key, f"a path under a directory you can write ({a} is not writable)", text)


def output_dir(text: str | os.PathLike, key: str) -> Path:
    """A directory to write into: an existing writable directory, or one that can be created."""
    p = Path(text).expanduser()
    if str(text) == "":
        raise InputError(None, key, "a directory path", text)
    if p.exists() and not p.is_dir():
        raise InputError(None, key, "a directory (this path is a file)", str(text))
    if p.is_dir() and not os.access(p, os.W_OK | os.X_OK):
        raise InputError(None, key, "a directory you can write", str(text))
    _writable_dir_for(p, key, str(text))
    return p


def output_file(text: str | os.PathLike, key: str) -> Path:
    """A file to write: not a directory, and its directory exists or can be created."""
    p = Path(text).expanduser()
    if str(text) == "" or str(text).endswith(os.sep):
        raise InputError(None, key, "a file path", text)
    if p.is_dir():
        raise InputError(None, key, "a file path (this is a directory)", str(text))
    if p.exists() and not os.access(p, os.W_OK):
        raise InputError(None, key, "a file you can write", str(text))
    _writable_dir_for(p.parent, key, str(text))
    return p


def input_file(text: str | os.PathLike, key: str) -> Path:
    """An existing, readable regular file."""
    p = Path(text).expanduser()
    if str(text) == "" or not p.exists() or (str(text).endswith(os.sep) and not p.is_dir()):
        raise InputError(None, key, "an existing file", str(text))
    if p.is_dir():
        raise InputError(None, key, "a file (this is a directory)", str(text))
    if not p.is_file():
        raise InputError(None, key, "a regular file", str(text))
    if not os.access(p, os.R_OK):
        raise InputError(None, key, "a file you can read", str(text))
    return p


def input_dir(text: str | os.PathLike, key: str) -> Path:
    """An existing, readable directory."""
    p = Path(text).expanduser()
    if str(text) == "" or not p.exists():
        raise InputError(None, key, "an existing directory", str(text))
    if not p.is_dir():
        raise InputError(None, key, "a directory (this path is a file)", str(text))
    if not os.access(p, os.R_OK | os.X_OK):
        raise InputError(None, key, "a directory you can read", str(text))
    return p


def make_dir(path: str | os.PathLike, key: str) -> Path:
    """:func:`output_dir`, then created."""
    p = output_dir(path, key)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a race or a filesystem refusing: still one line
        raise InputError(None, key, f"a directory that can be created ({e.strerror})", str(path)) from None
    return p


def env_dir(name: str) -> Path | None:
    """The directory environment variable ``name`` names (None when unset or empty), checked and
    created; the variable is named in the error."""
    text = os.environ.get(name)
    return make_dir(text, f"${name}") if text else None


def _guarded(check: Callable[[str, str], Path]) -> Callable[[str, str], Path]:
    """A path the OS cannot even look at (an embedded NUL byte, a name too long, a loop of
    symlinks) is bad input too: one line naming the key."""
    import functools

    @functools.wraps(check)
    def guarded(text, key: str) -> Path:
        if "\x00" in str(text):
            raise InputError(None, key, "a path without NUL bytes", str(text))
        try:
            return check(text, key)
        except InputError:
            raise
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise InputError(None, key, f"a usable path ({why})", str(text)) from None

    return guarded


output_dir = _guarded(output_dir)
output_file = _guarded(output_file)
input_file = _guarded(input_file)
input_dir = _guarded(input_dir)
make_dir = _guarded(make_dir)


def _arg(check: Callable[[str, str], Path], flag: str) -> Callable[[str], Path]:
    def convert(text: str) -> Path:
        return check(text, flag)

    convert.__name__ = check.__name__  # argparse names the type in its own messages
    return convert


def output_dir_arg(flag: str) -> Callable[[str], Path]:
    return _arg(output_dir, flag)


def output_file_arg(flag: str) -> Callable[[str], Path]:
    return _arg(output_file, flag)


def input_file_arg(flag: str) -> Callable[[str], Path]:
    return _arg(input_file, flag)


def input_dir_arg(flag: str) -> Callable[[str], Path]:
    return _arg(input_dir, flag)
