"""docs/tutorial-scheduling-change.md runs as written: its blocks marked <!-- run -->, in order, in one
bash session from the repository's root."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TUTORIAL = REPO / "docs" / "tutorial-scheduling-change.md"


def _blocks() -> list[str]:
    text = TUTORIAL.read_text()
    return re.findall(r"<!-- run -->\s*```bash\n(.*?)```", text, flags=re.S)


def test_the_tutorial_has_runnable_blocks():
    assert len(_blocks()) >= 6


def test_the_tutorial_runs(tmp_path):
    if shutil.which("git") is None or subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", "main"],
                                                    capture_output=True).returncode != 0:
        pytest.skip("no git branch 'main' in this checkout (the tutorial's last step compares against it)")
    script = "set -euo pipefail\n" + "\n".join(_blocks())
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", TMPDIR=str(tmp_path))
    r = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "every headline metric within 0.02 of its golden" in r.stdout  # step 4
    assert "**pi2sim regress**: " in r.stdout and "Where the time went in" in r.stdout  # step 5: the review
    assert "headline: decode_tok_s" in r.stdout  # step 2: the diff
