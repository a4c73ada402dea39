"""Every notebook in ``notebooks/`` runs top to bottom without an error, on small data.

Each notebook is copied to a temporary folder and executed there with nbclient, in a kernel that runs
*this* interpreter (a kernelspec written to a temporary ``JUPYTER_PATH`` whose ``argv`` is
``sys.executable``, so a ``python3`` kernelspec of another environment can never be picked up). The
kernel gets ``DIFFJPEG_NOTEBOOK_SMALL=1`` (notebooks read it and shrink their data and step counts) and
``DIFFJPEG_NOTEBOOK_OUT`` (a temporary folder for any file a notebook writes). Notebooks added to the
folder later are picked up automatically; a guard test fails if the folder holds none, so the
parametrised test cannot silently collect nothing.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "diffjpeg-test-python"
CELL_TIMEOUT_S = 600  # generous: a loaded 2-core CI machine can be 10x slower than an idle one

_WHOAMI = "import json, sys; print('KERNEL-INTERPRETER ' + json.dumps([sys.executable, sys.prefix]))"


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory) -> Path:
    """A folder with one kernelspec, ``KERNEL_NAME``, that runs ipykernel in this interpreter."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "diffjpeg tests (this interpreter)",
        "language": "python",
    }))
    return root


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks (*.ipynb) in {NOTEBOOK_DIR}: the notebook tests would collect nothing"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(notebook: Path):
    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{notebook.name}: code cells {dirty} have outputs or execution counts; store it cleared"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(notebook: Path, tmp_path: Path, jupyter_path: Path, monkeypatch):
    work = tmp_path / "run"
    work.mkdir()
    shutil.copy2(notebook, work / notebook.name)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(jupyter_path),
                                                                     os.environ.get("JUPYTER_PATH")])))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))  # connection files
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # no history in the user's profile
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("DIFFJPEG_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("DIFFJPEG_NOTEBOOK_OUT", str(out))

    nb = nbformat.read(work / notebook.name, as_version=4)
    assert any(cell.cell_type == "code" for cell in nb.cells), f"{notebook.name} has no code cells"
    nb.cells.append(nbformat.v4.new_code_cell(_WHOAMI))
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME, allow_errors=False,
                            resources={"metadata": {"path": str(work)}})
    client.execute()  # raises CellExecutionError (with the cell's traceback) on the first failing cell

    errors = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
              if output.output_type == "error"]
    assert not errors, f"{notebook.name}: error outputs {errors}"
    whoami = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    executable, prefix = json.loads(whoami.split("KERNEL-INTERPRETER ", 1)[1])
    assert (executable, prefix) == (sys.executable, sys.prefix), \
        f"the notebook ran in {executable} ({prefix}), not in the test's interpreter {sys.executable}"
    stray = sorted(p.name for p in work.iterdir() if p.name != notebook.name)
    assert not stray, f"{notebook.name} wrote {stray} into its working folder; write to DIFFJPEG_NOTEBOOK_OUT"
