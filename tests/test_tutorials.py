"""The tutorial notebooks run: every tutorials/*.ipynb is executed from a clean kernel, offline, and must finish
without a cell error within its time limit (the notebooks' own last cells assert their results, so a notebook that
runs but computes something wrong fails here too).

    python -m pytest -q tests/test_tutorials.py            # all notebooks (up to a minute each on 2 CPU cores)
    python -m pytest -q tests/test_tutorials.py -k 03      # one

Notebooks are found by globbing tutorials/, so a new notebook is tested as soon as it is committed. They are
built (and their committed outputs produced) by tutorials/make_notebooks.py, which also executes each notebook a
second time with its exercise solutions filled in; this file never imports it, so a test run executes each
notebook exactly once, here.

Tutorial 5 compares against the adapters library, which pins transformers 4.x: in the transformers 5.x environment
(the [test-latest] extra), where adapters cannot be installed, a notebook that imports adapters is skipped with
that reason (conftest.require_adapters). With transformers 4.x a missing adapters is a broken install: skipped
locally, a failure in CI (CI=true), like every reference.
"""

import re
import time
from pathlib import Path

import pytest

from conftest import minilm_dir, require, require_adapters

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
# Wall-clock limit of each whole notebook (kernel start included): 3x its time on an idle 2-core CPU, rounded up to
# 10 s, and at least 60 s (below that, starting the kernel and importing torch and transformers, ~3 s idle, is most
# of the time, and it is what slows down most on a busy machine). Room for a machine busy with other jobs: the
# notebooks run on one thread (make_notebooks.SETUP), so they slow down in proportion to the load rather than
# collapse. Measured with AMD EPYC, torch 2.13.0, one thread, load average < 1. A notebook missing here gets
# DEFAULT_LIMIT_S; measure it (make_notebooks.py prints the time) and give it its line.
LIMITS_S = {  # file-name prefix: (measured idle, limit), seconds
    "01": (6.0, 60),
    "02": (8.3, 60),
    "03": (17.5, 60),
    "04": (22.5, 70),
    "05": (7.1, 60),
    "06": (49.4, 150),
}
DEFAULT_LIMIT_S = 180
# `import adapters` / `from adapters import ...` at the start of a line of a code cell.
IMPORTS_ADAPTERS = re.compile(r"^\s*(import adapters\b|from adapters\b)", re.M)


def limit_s(path: Path) -> int:
    return LIMITS_S.get(path.name[:2], (None, DEFAULT_LIMIT_S))[1]


def test_notebooks_are_found():
    """A broken glob (or a renamed folder) must not turn the parametrised test below into zero silent passes."""
    assert NOTEBOOKS, f"no notebooks in {TUTORIALS}"
    assert len({p.name[:2] for p in NOTEBOOKS}) == len(NOTEBOOKS), "two notebooks share a number"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, monkeypatch):
    nbformat = require("nbformat")
    nbclient = require("nbclient")
    require("matplotlib")
    require("transformers")
    minilm_dir()  # the real checkpoint the notebooks read; skipped (or failed in CI) with a clear reason if absent

    nb = nbformat.read(path, as_version=4)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells and "assert" in code_cells[-1].source, (
        f"{path.name}: the last code cell must assert the notebook's own result")
    if any(IMPORTS_ADAPTERS.search(c.source) for c in code_cells):
        require_adapters()  # transformers >= 5: skipped with the reason; 4.x: a missing adapters fails in CI
    for c in code_cells:  # execute from scratch: the committed outputs must not hide anything
        c.outputs, c.execution_count = [], None

    # Offline: transformers (the reference some cells compare against) must never reach for a hub.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    limit = limit_s(path)
    deadline = time.monotonic() + limit
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", resources={"metadata": {"path": str(TUTORIALS)}}, record_timing=False,
        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),  # what is left of the notebook's budget
    )
    start = time.monotonic()
    try:
        client.execute()
    except nbclient.exceptions.CellTimeoutError as e:
        pytest.fail(f"{path.name} ran past its {limit} s limit: {str(e).splitlines()[0]}")
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name} failed in a cell:\n{e}")
    elapsed = time.monotonic() - start
    assert elapsed <= limit, f"{path.name} took {elapsed:.0f} s > its {limit} s limit"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"
