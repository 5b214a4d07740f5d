"""Finding the trace a run replays: a file, a bundled trace, or a model's (cached) synthetic one.

The simulation core and the CLI both need this; it lives here, below both (docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path

from .. import resources
from ..errors import InputError


def _file_or_bundled(name: str) -> Path | None:
    """``name`` as an existing file, else as a trace bundled in ``traces/`` (with or without
    ``.pi2t``), else None."""
    p = Path(name)
    if p.is_file():
        return p
    bundled = resources.data_dir("traces") / f"{name.removesuffix('.pi2t')}.pi2t"
    return bundled if bundled.is_file() else None


def trace_path_for(arg: str, tokens: int = 1024, seed: int = 0) -> Path:
    """A trace argument: an existing file, a bundled trace name, or a model name."""
    found = _file_or_bundled(arg)
    if found is not None:
        return found
    if "/" in arg or arg.endswith(".pi2t"):
        raise InputError(arg, None, "cannot read trace: the file does not exist")
    from ..specs.model import load_model

    model = load_model(arg)
    return model_trace_path(model, tokens, seed)


def model_trace_path(model, decode_tokens: int, seed: int = 0, progress: bool = True) -> Path:
    """The trace a model replays: its bundled trace, or its (cached) synthetic one."""
    src = model.sparsity.trace
    if src == "none":
        raise InputError(model.path, "sparsity.trace", "an activation trace (this dense model declares none: it runs only with dense engines)", src)
    if src == "synthetic":
        from .synth import synthesize_cached

        return synthesize_cached(model, decode_tokens, seed=seed, progress=progress)
    found = _file_or_bundled(src)
    if found is not None:
        return found
    raise InputError(model.path, "sparsity.trace", "'synthetic', a bundled trace name or an existing trace file", src)
