"""notebooks/1.0-review-results.ipynb executes top to bottom against a fresh sample run.

The kernel is ``python3`` from this venv: a kernelspec pointing at ``sys.executable`` is installed
into a temporary JUPYTER_PATH (searched before the user's and the system's kernels), and the
notebook's first cell prints the interpreter it runs on, which must be this one. The kernel talks
over Unix sockets in the test's folder (IPC), not TCP: the notes' text never touches a port.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client import KernelManager
from nbclient import NotebookClient

from pipeline import cli

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "1.0-review-results.ipynb"


@pytest.fixture
def venv_kernel(tmp_path, monkeypatch) -> str:
    from ipykernel.kernelspec import install
    from jupyter_client.kernelspec import KernelSpecManager

    prefix = tmp_path / "jupyter"
    install(kernel_name="python3", prefix=str(prefix))
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] == sys.executable, spec.argv
    return "python3"


@pytest.fixture
def sample_run(tmp_path, root) -> Path:
    out = tmp_path / "run"
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert cli.main(["run", "--no-prefect", "--no-report", "--out", str(out)]) == 0
    finally:
        os.chdir(cwd)
    return out


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None  # no patient text in the repository


def test_notebook_executes_top_to_bottom(venv_kernel, sample_run, tmp_path, monkeypatch):
    export = tmp_path / "subset.csv"
    monkeypatch.setenv("CALCMINE_RUN", str(sample_run))
    monkeypatch.setenv("CALCMINE_EXPORT", str(export))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    sockets = tmp_path / "ipc"
    sockets.mkdir()
    km = KernelManager(kernel_name=venv_kernel, transport="ipc", connection_file=str(sockets / "kernel.json"))
    km.ip = str(sockets / "k")
    client = NotebookClient(nb, km=km, kernel_name=venv_kernel, timeout=600,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    nbformat.write(nb, tmp_path / "executed.ipynb")  # kept for a look when something is off

    def outputs(kind: str) -> str:
        parts = []
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream":
                    parts.append(out.get("text", "") if kind == "text/plain" else "")
                else:
                    parts.append(str(out.get("data", {}).get(kind, "")))
        return "\n".join(parts)

    text, rendered = outputs("text/plain"), outputs("text/html")
    assert f"python: {sys.executable}\n" in text  # the venv's interpreter ran the notebook
    assert f"run folder: {sample_run.resolve()}" in text
    assert "32 cases" in text
    assert 'class="hl hl-mention as-present' in rendered and "hl-lab" in rendered  # highlighted evidence
    assert "note P0" in rendered  # every item names its note, date and section
    assert rendered.count("<svg") >= 6  # label counts, confidence, labs by label
    assert "http://" not in rendered and "https://" not in rendered

    raw = export.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    with open(export, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {r["label"] for r in rows} <= {"metastatic", "indeterminate"}
    assert {"reviewer_label", "reviewer_comment"} <= set(rows[0])
    assert oct(export.stat().st_mode & 0o777) == "0o600"
    assert f"wrote {len(rows)} cases to {export}" in text
