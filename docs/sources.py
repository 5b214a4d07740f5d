"""Regenerate the published-points table of docs/sources.md from the scenario files:
``python docs/sources.py`` (tests/test_sources.py fails when the table is stale).

Every scenario of experiments/paper and experiments/external carries the published value it
compares with and the primary source it was read in; this table lists them in one place.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "sources.md"
BEGIN, END = "<!-- points:begin (python docs/sources.py) -->", "<!-- points:end -->"


def table() -> str:
    sys.path.insert(0, str(ROOT))
    from pi2sim.workflows import validate as V

    rows = ["| id | what | metric | value | source |", "|---|---|---|---:|---|"]
    for s in sorted(V.load_scenarios("all"), key=lambda s: (s.paper_version == "ext", s.id)):
        cell = lambda t: str(t).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        rows.append(f"| {cell(s.id)} | {cell(s.title)} | {s.metric} | {s.paper:g} | {cell(s.source)} |")
    return "\n".join(rows)


def render(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


if __name__ == "__main__":
    DOC.write_text(render(DOC.read_text()))
    print(f"wrote {DOC}")
