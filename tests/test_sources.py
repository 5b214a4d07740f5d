"""The repository stands on its own (issue 34): no citation of a document outside it, and
docs/sources.md's table of published points is the scenario files' own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the briefs the developers were given live beside the repository, not in it; their names are
# assembled here so that this guard does not cite them itself
_BESIDE = "../" + "sha" + "red"
_BRIEFS = ("calibration", "calibration-2", "calibration-3", "external-measurements", "powerinfer2-design", "peer-policies",
           "simulator-lessons", "llamacpp-cpu", "soc-catalogue", "traces")
OUTSIDE = re.compile("|".join([re.escape(_BESIDE), re.escape("sha" + "red/docs")] + [re.escape(b + ".md") for b in _BRIEFS]))


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True)
    if out.returncode == 0 and out.stdout.strip():
        return [REPO / line for line in out.stdout.splitlines()]
    return [p for p in REPO.rglob("*") if p.is_file() and ".git" not in p.parts and ".venv" not in p.parts]


def test_no_file_cites_a_document_outside_the_repository():
    hits = []
    for p in _tracked():
        if p.suffix in (".png", ".pi2t", ".gz", ".zst", ".npz", ".parquet") or not p.is_file():
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{p.relative_to(REPO)}:{i}")
    assert not hits, hits[:20]


def test_the_sources_table_is_the_scenarios():
    sys.path.insert(0, str(REPO / "docs"))
    import sources

    text = sources.DOC.read_text()
    assert sources.render(text) == text, "docs/sources.md is stale: python docs/sources.py"
