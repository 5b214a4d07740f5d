"""The README's figures are generated (docs/figures.py) and the committed ones are current."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from conftest import REPO

from pi2sim.report.figures import png_bytes
from pi2sim.workflows import figures as F

FIG_DIR = REPO / "docs" / "figures"


def _script():
    spec = importlib.util.spec_from_file_location("docs_figures", REPO / "docs" / "figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_readme_shows_every_figure():
    readme = (REPO / "README.md").read_text()
    for name in F.FIGURES:
        assert f"docs/figures/{name}.png" in readme, name
    assert len(F.FIGURES) >= 4


@pytest.mark.parametrize("name", F.FIGURES)
def test_each_figure_draws_from_its_committed_data(name):
    rec = json.loads((FIG_DIR / "figures.json").read_text())
    data = rec["figures"][name]["data"]
    assert rec["figures"][name]["sha256"] == F.data_sha256(data)
    png = png_bytes(F.draw(name, data), {F.DATA_KEY: "x"})
    with Image.open(io.BytesIO(png)) as im:
        assert im.text[F.DATA_KEY] == "x" and 700 <= im.size[0] <= 1100  # readable at the README's width


def test_a_changed_figure_is_found_stale(tmp_path):
    mod = _script()
    rec = json.loads((FIG_DIR / "figures.json").read_text())
    out = tmp_path / "figures"
    shutil.copytree(FIG_DIR, out)
    assert mod.stale(rec, out) == []
    moved = json.loads(json.dumps(rec))
    moved["figures"]["critical-path"]["data"]["rows"][0]["compute_ms"] *= 1.01
    moved["figures"]["critical-path"]["sha256"] = F.data_sha256(moved["figures"]["critical-path"]["data"])
    problems = mod.stale(moved, out)
    assert any("critical-path: its data changed" in p for p in problems) and any("critical-path.png" in p for p in problems)
    (out / "hit-rate-curve.png").write_bytes(png_bytes(F.draw("hit-rate-curve", rec["figures"]["hit-rate-curve"]["data"]), {F.DATA_KEY: "0" * 64}))
    assert any("hit-rate-curve.png: drawn from other data" in p for p in mod.stale(rec, out))


def test_committed_figures_are_current():
    """Regenerates every figure's data from the simulator (about a minute) and compares."""
    p = subprocess.run([sys.executable, str(REPO / "docs" / "figures.py"), "--check", "--quiet"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
