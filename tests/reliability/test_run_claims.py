"""Two processes on one store never train the same configuration at once (``rlbench.run_key``).

The failure this guards against: two ``rlbench-train -m ... resume=true`` processes started
together trained each job twice (or one resumed the other's live checkpoint and wrote two
trainings into one MLflow run), and both exited 0. With claims, the second process waits for
the first, then reuses its finished run. Both kinds of claim are exercised with real parallel
processes: the lock file beside a SQLite store, and the lease a shared server store uses
(``tracking.claim=lease``, here on SQLite so that no server is needed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from reliability_kit import PAUSED_TRAIN, child_env, kill_9, start_paused, wait_for

pytestmark = pytest.mark.slow
COMMIT = "c1a1m5" + "0" * 34  # a clean checkout for every process: resume=true may reuse runs
JOB = [
    "algo=qlearning", "train.total_steps=6000", "train.num_envs=2", "train.eval_every=0",
    "train.checkpoint_every=1000", "eval.episodes=2", "++eval.trajectory_plot=false",
    "train.progress=off", "resume=true",
]  # fmt: skip


def _start(cwd: Path, args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, str(PAUSED_TRAIN), *args],
            cwd=cwd, env=child_env(RLBENCH_TEST_COMMIT=COMMIT), stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def _finished_runs(store) -> list:
    return [r for r in store.runs() if r.info.experiment_id != _claims_experiment(store)]


def _claims_experiment(store) -> str | None:
    from mlflow.tracking import MlflowClient

    found = MlflowClient(store.uri).get_experiment_by_name("rlbench-claims")
    return found.experiment_id if found else None


def _check_one_training_per_key(store, seeds: int) -> None:
    runs = _finished_runs(store)
    by_key = Counter(r.data.tags["rlbench.run_key"] for r in runs)
    assert len(by_key) == seeds and set(by_key.values()) == {1}, by_key  # trained once each
    for run in runs:
        assert run.info.status == "FINISHED", (run.info.status, run.data.tags.get("error"))
        assert "rlbench.resumed" not in run.data.tags  # nobody resumed a live checkpoint
        assert run.data.metrics["train/total_steps"] == 6000


@pytest.mark.parametrize("kind", ["file", "lease"])
def test_two_processes_on_one_grid_train_each_job_once(mlflow_store, tmp_path, kind):
    args = ["-m", "seed=0,1", *JOB, f"tracking.claim={kind}", *mlflow_store.overrides()]
    procs = [
        _start(tmp_path, [*args, f"hydra.sweep.dir=multirun/p{i}"], tmp_path / f"p{i}.txt")
        for i in range(2)
    ]
    for proc in procs:
        proc.wait(timeout=300)
    outs = [(tmp_path / f"p{i}.txt").read_text() for i in range(2)]
    assert [p.returncode for p in procs] == [0, 0], outs
    scores = [line for out in outs for line in out.splitlines() if line.startswith("score:")]
    assert len(scores) == 4
    assert sum("(finished before)" in line for line in scores) == 2, scores  # one trained each job
    _check_one_training_per_key(mlflow_store, seeds=2)
    # the process that waited reports the same score as the one that trained
    by_run = {}
    for line in scores:
        run_id = line.split("mlflow run: ")[1].split()[0]
        by_run.setdefault(run_id, set()).add(line.split()[1])
    assert len(by_run) == 2 and all(len(v) == 1 for v in by_run.values()), scores
    if kind == "lease":  # claims are released (and their runs trashed) when the jobs end
        from mlflow.tracking import MlflowClient

        exp = _claims_experiment(mlflow_store)
        assert exp is not None
        assert MlflowClient(mlflow_store.uri).search_runs([exp]) == []


@pytest.mark.parametrize("kind", ["file", "lease"])
def test_a_dead_holder_does_not_keep_its_claim(mlflow_store, tmp_path, kind):
    """A job killed with its helper while training: the next process takes the claim over
    (the kernel dropped the lock; the lease expired after its TTL) and finishes the job."""
    args = [*JOB, f"tracking.claim={kind}", "tracking.claim_ttl_s=4", *mlflow_store.overrides()]
    proc, marker = start_paused(tmp_path, args, "trial", tmp_path / "first.txt")
    wait_for(marker, proc, tmp_path / "first.txt")
    kill_9(proc, with_helper=True)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(PAUSED_TRAIN), *args], cwd=tmp_path,
        env=child_env(RLBENCH_TEST_COMMIT=COMMIT), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "score:" in done.stdout and "(finished before)" not in done.stdout
    assert time.monotonic() - started < 120
    finished = [r for r in _finished_runs(mlflow_store) if r.info.status == "FINISHED"]
    assert len(finished) == 1


def test_a_waiting_process_says_whom_it_waits_for(mlflow_store, tmp_path):
    args = [*JOB, *mlflow_store.overrides()]
    proc, marker = start_paused(tmp_path, args, "trial", tmp_path / "first.txt")
    wait_for(marker, proc, tmp_path / "first.txt")
    second = _start(tmp_path, args, tmp_path / "second.txt")
    try:
        deadline = time.monotonic() + 60
        while "waiting for process" not in (tmp_path / "second.txt").read_text():
            assert second.poll() is None, (tmp_path / "second.txt").read_text()
            assert time.monotonic() < deadline, (tmp_path / "second.txt").read_text()
            time.sleep(0.2)
        text = (tmp_path / "second.txt").read_text()
        assert f"waiting for process {proc.pid} on " in text
        assert "same configuration" in text
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # the holder died: the waiting process takes over and finishes the job
    assert second.wait(timeout=300) == 0, (tmp_path / "second.txt").read_text()[-3000:]
