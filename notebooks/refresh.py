"""Execute the notebooks at the fast settings and commit them with their outputs:
``python notebooks/refresh.py [NAME ...]`` (default: every notebook here).

Each notebook records in its metadata (``pi2sim.code_sha256``) the hash of the code it was run
with; ``tests/test_notebooks.py`` fails when a notebook's code changed and its outputs were not
refreshed. The outputs are those of ``PI2SIM_NB_FAST=1`` (the settings CI runs them at), so they
render in a repository browser or a fresh Jupyter without running anything.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def code_sha256(nb) -> str:
    """The hash of a notebook's code cells, in order (outputs and markdown do not count)."""
    h = hashlib.sha256()
    for c in nb.cells:
        if c.cell_type == "code":
            h.update(c.source.encode())
            h.update(b"\0")
    return h.hexdigest()


def refresh(path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    from pi2sim import __version__

    nb = nbformat.read(path, as_version=4)
    os.environ["PI2SIM_NB_FAST"] = "1"
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    with tempfile.TemporaryDirectory() as work:  # whatever a notebook writes stays out of the repository
        NotebookClient(nb, timeout=1200, kernel_name="python3", record_timing=False, resources={"metadata": {"path": work}}).execute()
    nb.metadata["pi2sim"] = {"code_sha256": code_sha256(nb), "fast": True, "pi2sim_version": __version__}
    nb.metadata.pop("widgets", None)
    text = nbformat.writes(nb) + "\n"
    tmp = path.with_suffix(".ipynb.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    paths = [HERE / (a if a.endswith(".ipynb") else f"{a}.ipynb") for a in argv] or sorted(HERE.glob("*.ipynb"))
    for p in paths:
        print(f"[refresh] {p.name}", file=sys.stderr, flush=True)
        refresh(p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
