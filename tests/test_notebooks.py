"""Every notebook in notebooks/ runs headless, without error, and shows at least one plot."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import require, have

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


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
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "outputs are not committed"
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} showed no plot"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
