"""Every notebook in notebooks/ runs headless, without error, and shows at least one plot; the
committed notebooks carry their outputs, refreshed since their code last changed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from conftest import require, have

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def _refresh_module():
    spec = importlib.util.spec_from_file_location("nb_refresh", NOTEBOOK_DIR / "refresh.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_plots(path, tmp_path, monkeypatch):
    require(have("nbclient") and have("ipykernel"), "nbclient + ipykernel (pip install 'pi2sim[notebooks]')")
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("PI2SIM_NB_FAST", "1")  # fewer tokens, same pictures
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    for c in nb.cells:  # run from scratch: what CI shows is this run's, not the committed outputs
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} showed no plot"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_current_outputs(path):
    require(have("nbformat"), "nbformat (pip install 'pi2sim[notebooks]')")
    import nbformat

    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    meta = nb.metadata.get("pi2sim", {})
    assert meta.get("code_sha256") == _refresh_module().code_sha256(nb), (
        f"{path.name}: its code changed since its outputs were made: run python notebooks/refresh.py {path.stem}")
    assert meta.get("fast") is True
    assert all(c.execution_count is not None for c in code), f"{path.name}: a code cell was not executed"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), f"{path.name}: cells were run out of order"
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs), f"{path.name}: no plot committed"
    assert not any(o.get("output_type") == "error" for c in code for o in c.outputs), f"{path.name}: an error is committed"


def test_staleness_check_notices_a_code_change(tmp_path):
    import nbformat

    mod = _refresh_module()
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    before = mod.code_sha256(nb)
    next(c for c in nb.cells if c.cell_type == "code").source += "\n# changed"
    assert mod.code_sha256(nb) != before
    md = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    if md is not None:  # prose does not make outputs stale
        nb2 = nbformat.read(NOTEBOOKS[0], as_version=4)
        next(c for c in nb2.cells if c.cell_type == "markdown").source += " more words"
        assert mod.code_sha256(nb2) == before
