"""Every notebook in ``notebooks/`` runs top to bottom against a store made by real tiny runs.

The store is built once per session (a module fixture was built twice when xdist sent other
modules' tests between the notebooks): a grid of ``rlbench-train -m ... debug=fast`` runs
(three algorithms x two load patterns x three seeds) and a four-trial threshold sweep, both
tracked in one MLflow store (so notebook 01 must also leave the sweep's trials out). Each
notebook runs in a fresh ipykernel through nbclient, with the ``RLBENCH_*`` variables pointing
at the store; a cell that raises fails the test with the cell's traceback. All tests share an
xdist group, so under ``-n 2 --dist loadgroup`` one worker builds the store and runs every
notebook.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
BIN = Path(sys.executable).parent
ALGOS = ("random", "threshold", "qlearning")
LOADS = ("sine_curve", "spike")
SEEDS = (0, 1, 2)
TRIALS = 4
STUDY = "threshold-autoscaling-spike"  # the threshold preset's name for env.load=spike
GRID_RUNS = len(ALGOS) * len(LOADS) * len(SEEDS)

pytestmark = pytest.mark.xdist_group("notebooks")


def rlbench_train(*args: str, cwd: Path) -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    for key in ("MLFLOW_TRACKING_URI", "HYDRA_FULL_ERROR"):
        env.pop(key, None)
    proc = subprocess.run(
        [str(BIN / "rlbench-train"), "-m", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="session")
def store(mlflow_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The ``RLBENCH_*`` variables of a store holding the grid's runs and the sweep."""
    root = tmp_path_factory.mktemp("notebook-store")
    db = root / "mlflow.db"
    shutil.copyfile(mlflow_template, db)
    tracking = (f"tracking.uri=sqlite:///{db}", f"tracking.artifact_location={root / 'artifacts'}")
    storage = f"sqlite:///{root / 'optuna.db'}"
    rlbench_train(
        f"algo={','.join(ALGOS)}", f"env.load={','.join(LOADS)}",
        f"seed={','.join(map(str, SEEDS))}", "debug=fast", *tracking, cwd=root,
    )  # fmt: skip
    rlbench_train(
        "search=threshold", "env.load=spike", f"hydra.sweeper.n_trials={TRIALS}",
        f"hydra.sweeper.storage={storage}", "debug=fast", *tracking, cwd=root,
    )  # fmt: skip
    return {
        "RLBENCH_TRACKING_URI": f"sqlite:///{db}",
        "RLBENCH_EXPERIMENT": "rlbench",
        "RLBENCH_OPTUNA_STORAGE": storage,
        "RLBENCH_STUDY": STUDY,
    }


def run_notebook(path: Path, variables: dict[str, str]) -> nbformat.NotebookNode:
    """``path`` executed in a new kernel started in its folder; the executed copy is returned.

    A cell that raises fails the calling test, naming the notebook, with the cell's traceback.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLBENCH_", "MLFLOW_TRACK"))}
    env |= {"OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", **variables}
    client = NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        client.execute(env=env)
    except CellExecutionError as err:
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # the kernel colours its tracebacks
        pytest.fail(f"{path.name}: a cell raised\n{plain}", pytrace=False)
    return nb


def printed(nb: nbformat.NotebookNode) -> str:
    """Everything the notebook printed or showed as text."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") + out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def images(nb: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", [])
    )


# What each notebook must show against this store, worked out from the store's contents:
# 01: per-load intervals, P(X>Y), overall intervals, one learning-curve figure (one env), one
#     decisions panel per load; 02: history, importances, slice, parallel coordinates;
#     03: two load-pattern grids and one rendered episode per environment (five).
EXPECTED_IMAGES = {"01_compare_algorithms": 4 + len(LOADS), "02_sweep_analysis": 4}
EXPECTED_IMAGES["03_environment_tour"] = 2 + 5
EXPECTED_TEXT = {
    # the sweep's trials and parent run are in the store but not in the comparison
    "01_compare_algorithms": [f"{GRID_RUNS + TRIALS + 1} runs, {GRID_RUNS} comparable"],
    "02_sweep_analysis": [f"study '{STUDY}': maximize, {TRIALS} trials", "rlbench-train -m"],
    "03_environment_tour": ["threshold rule on spike: return"],
}


def test_notebooks_are_stored_without_outputs():
    assert {p.stem for p in NOTEBOOKS} >= set(EXPECTED_IMAGES)
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, store: dict[str, str]):
    nb = run_notebook(path, store)
    text = printed(nb)
    for expected in EXPECTED_TEXT.get(path.stem, []):
        assert expected in text, f"{path.name} did not show {expected!r}:\n{text[-3000:]}"
    if path.stem == "01_compare_algorithms":
        for name in (*ALGOS, *LOADS):
            assert name in text, name
        # the first thing it shows is the verdict and the algorithm x load pattern table
        shown = (out for cell in nb.cells for out in cell.get("outputs", []) if "data" in out)
        first = next(shown)  # the first table, figure or text displayed (not printed)
        summary = first.get("data", {}).get("text/markdown", "")
        assert "| algorithm | sine_curve | spike |" in summary, summary[:500]
        assert "★" in summary and "seeds" in summary
    assert images(nb) == EXPECTED_IMAGES.get(path.stem, images(nb)), path.name
