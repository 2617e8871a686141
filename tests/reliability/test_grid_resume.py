"""A grid multirun ``kill -9``-ed in its third job, then run again with ``resume=true``.

What a user does after a benchmark (``experiment=benchmark``: 180 jobs) dies at job 120: run the
same command again. The jobs that finished are not trained twice (their runs are read back), the
killed one trains, and the store ends with one FINISHED run per configuration and nothing
RUNNING. ``RLBENCH_TEST_COMMIT`` gives both processes the same clean commit.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter

import pytest
from reliability_kit import PAUSED_TRAIN, child_env, kill_9, start_paused, wait_for

pytestmark = pytest.mark.slow

SEEDS = [0, 1, 2, 3]
COMMIT = "ab" * 20


def statuses(mlflow_store) -> dict[str, str]:
    return {r.info.run_id: r.info.status for r in mlflow_store.runs()}


def test_a_killed_grid_rerun_trains_only_what_did_not_finish(mlflow_store, tmp_path):
    args = [
        "-m", "algo=threshold", f"seed={','.join(map(str, SEEDS))}", "debug=fast",
        "resume=true", "++eval.trajectory_plot=false", *mlflow_store.overrides(),
    ]  # fmt: skip
    logs = tmp_path / "logs"
    logs.mkdir()
    proc, marker = start_paused(
        tmp_path, args, "trial:3", logs / "1.txt", RLBENCH_TEST_COMMIT=COMMIT
    )  # paused in the third job's final evaluation
    wait_for(marker, proc, logs / "1.txt")
    kill_9(proc, with_helper=False)  # the helper lives on and ends the open run KILLED ...
    deadline = time.monotonic() + 60  # ... once it has noticed (a loaded machine: a while)
    first = statuses(mlflow_store)
    while "RUNNING" in first.values():
        assert time.monotonic() < deadline, first
        time.sleep(0.2)
        first = statuses(mlflow_store)
    assert sorted(first.values()) == ["FINISHED", "FINISHED", "KILLED"], first

    rerun = subprocess.run(
        [sys.executable, str(PAUSED_TRAIN), *args], cwd=tmp_path,
        env=child_env(RLBENCH_TEST_COMMIT=COMMIT), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    scores = [line for line in rerun.stdout.splitlines() if line.startswith("score:")]
    assert len(scores) == len(SEEDS), rerun.stdout
    reused = [s.split("mlflow run: ")[1].split()[0] for s in scores if "finished before" in s]
    assert sorted(reused) == sorted(i for i, s in first.items() if s == "FINISHED")

    runs = mlflow_store.runs()
    counts = Counter(r.info.status for r in runs)
    assert counts == {"FINISHED": len(SEEDS), "KILLED": 1}, counts
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert sorted(int(r.data.params["seed"]) for r in finished) == SEEDS  # each seed once
    assert len({r.data.tags["rlbench.run_key"] for r in finished}) == len(SEEDS)
    assert {r.data.tags["rlbench.code"] for r in finished} == {COMMIT}
