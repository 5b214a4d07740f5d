"""The "every number cites its source" rule, made checkable.

A numeric scalar in a device, model or profile YAML must carry a comment (on its line, or the
comment block just above it) containing one of the tags below. ``fitted to <scenario>`` marks a
constant tuned to an end-to-end target; ``pi2sim validate --fitted`` lists those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import yamlio

TAGS = ("source:", "derived:", "assumption:", "fitted to")
_NUMERIC = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*[^\s\d]*(/s)?$")


@dataclass(frozen=True)
class Undocumented:
    path: Path
    key: str
    line: int
    value: str


@dataclass(frozen=True)
class Fitted:
    path: Path
    key: str
    line: int
    value: str
    comment: str


def is_numeric(value: str) -> bool:
    return bool(_NUMERIC.match(value.strip())) and any(ch.isdigit() for ch in value)


def undocumented(path: str | Path) -> list[Undocumented]:
    """Numeric scalars of ``path`` whose comment carries none of :data:`TAGS`."""
    path = Path(path)
    out = []
    for note in yamlio.scalar_notes(path):
        if not is_numeric(note.value):
            continue
        comment = note.comment.lower()
        if not any(tag in comment for tag in TAGS):
            out.append(Undocumented(path, note.key, note.line, note.value))
    return out


def fitted(path: str | Path) -> list[Fitted]:
    """Scalars of ``path`` marked ``fitted to ...``."""
    path = Path(path)
    return [
        Fitted(path, n.key, n.line, n.value, n.comment)
        for n in yamlio.scalar_notes(path)
        if "fitted to" in n.comment.lower()
    ]
