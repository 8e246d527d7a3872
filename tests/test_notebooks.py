"""The course notebooks execute from top to bottom (nbclient, a real Jupyter kernel) with IMGCLF_QUICK=1 (the same
cells on fewer epochs and images), each in its own folder; any error in any cell fails the test. Their figures
come out as inline images."""
from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_the_four_lessons_are_there():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(notebook, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLF_QUICK", "1")
    copy = tmp_path / notebook.name
    shutil.copy(notebook, copy)
    book = nbformat.read(copy, as_version=4)
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in book.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, "the lesson shows its figures inline"
    if notebook.stem.startswith(("02", "04")):  # a Classifier / Evaluation / runs table shown as HTML
        assert any("text/html" in o.get("data", {}) for o in outputs)
