"""Strict YAML reading.

PyYAML silently keeps the last of two duplicate keys; a simulator input must not. This module
reads YAML with duplicate keys rejected, turns every parse failure into a one-line
:class:`~pi2sim.errors.InputError`, and can list the comment attached to each scalar (for the
"every number cites its source" rule, see :mod:`pi2sim.specs.provenance`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when built with it
    pass


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    result: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool)) or key is None:
            raise yaml.constructor.ConstructorError(None, None, f"unsupported key {key!r}", key_node.start_mark)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=deep)
    return result


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


_PARSED: dict[str, Any] = {}  # text -> parsed document (sweeps re-read the same device and model files)


def loads(text: str, source: str | Path) -> Any:
    """Parse YAML text strictly; errors name ``source`` and the line. Returns a fresh object each
    call (parsed documents are memoised by their text and deep-copied out)."""
    if text in _PARSED:
        return copy.deepcopy(_PARSED[text])
    doc = _parse(text, source)
    if len(_PARSED) > 64:
        _PARSED.clear()
    _PARSED[text] = doc
    return copy.deepcopy(doc)


MAX_EXPANDED_NODES = 1_000_000  # a spec has a few hundred; aliases must not blow that up


def _check_shape(doc: Any, source: str | Path) -> None:
    """Refuse documents whose aliases make them recursive, or expand them past
    :data:`MAX_EXPANDED_NODES` (an "alias bomb": every later walk over the document would hang)."""
    count = 0
    stack: list[tuple[Any, frozenset]] = [(doc, frozenset())]
    while stack:
        node, above = stack.pop()
        count += 1
        if count > MAX_EXPANDED_NODES:
            raise InputError(source, None, f"cannot parse YAML: its aliases expand to more than {MAX_EXPANDED_NODES:,} nodes")
        if isinstance(node, (dict, list)):
            if id(node) in above:
                raise InputError(source, None, "cannot parse YAML: an alias refers to a node that contains it (recursive document)")
            inner = above | {id(node)}
            stack.extend((child, inner) for child in (node.values() if isinstance(node, dict) else node))


def _parse(text: str, source: str | Path) -> Any:
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
        _check_shape(doc, source)
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}" if mark is not None else None
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        raise InputError(source, where, f"cannot parse YAML: {problem}") from None
    except yaml.YAMLError as exc:  # pragma: no cover - other PyYAML errors
        raise InputError(source, None, f"cannot parse YAML: {exc}") from None


def load(path: str | Path) -> Any:
    """Read and strictly parse a YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, None, "cannot read file: it does not exist") from None
    except IsADirectoryError:
        raise InputError(path, None, "cannot read file: it is a directory") from None
    except UnicodeDecodeError:
        raise InputError(path, None, "cannot read file: it is not UTF-8 text") from None
    except OSError as exc:
        raise InputError(path, None, f"cannot read file: {exc.strerror}") from None
    return loads(text, path)


@dataclass(frozen=True)
class ScalarNote:
    """A scalar leaf of a YAML document with the comment that documents it."""

    key: str  # dotted key path, list items as [i]
    value: str  # the scalar as written
    line: int  # 1-based
    comment: str  # trailing comment on the same line, else the comment block just above ('' if none)


def _comment_of(lines: list[str], line_index: int) -> str:
    """Trailing comment on ``line_index``; else the nearest comment lines directly above it."""
    line = lines[line_index]
    in_single = in_double = False
    for i, ch in enumerate(line):
        if ch == "'" and not in_double:
            in_single = not in_single
        elif ch == '"' and not in_single:
            in_double = not in_double
        elif ch == "#" and not in_single and not in_double and (i == 0 or line[i - 1] in " \t"):
            return line[i + 1 :].strip()
    above = []
    j = line_index - 1
    while j >= 0 and lines[j].strip().startswith("#"):
        above.append(lines[j].strip()[1:].strip())
        j -= 1
    return " ".join(reversed(above))


def scalar_notes(path: str | Path) -> list[ScalarNote]:
    """Every scalar leaf of a YAML file with its key path, line and documenting comment."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    root = yaml.compose(text, Loader=_StrictLoader)
    notes: list[ScalarNote] = []

    def walk(node: yaml.Node, key: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                walk(v, f"{key}.{k.value}" if key else str(k.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, f"{key}[{i}]")
        elif isinstance(node, yaml.ScalarNode):
            line = node.start_mark.line
            notes.append(ScalarNote(key, node.value, line + 1, _comment_of(lines, line)))

    if root is not None:
        walk(root, "")
    return notes
