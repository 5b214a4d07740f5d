"""Activation traces: the file format, recording on a real model, statistics, synthesis.

The public surface is small::

    from pi2sim import trace
    t = trace.load("traces/smollm2-135m.pi2t")      # open (header verified, chunks lazily)
    for block in t.iter_blocks(): ...                 # memory-efficient iteration by token
    trace.save(path, meta, token_id, seq, phase, codes)
"""

from .format import (
    PHASE_DECODE,
    PHASE_PROMPT,
    ActivationLevel,
    Trace,
    TraceBlock,
    TraceMeta,
    TraceWriter,
    load,
    require_shape,
    save,
)

__all__ = [
    "PHASE_DECODE",
    "PHASE_PROMPT",
    "ActivationLevel",
    "Trace",
    "TraceBlock",
    "TraceMeta",
    "TraceWriter",
    "load",
    "require_shape",
    "save",
]
