"""A real Optuna sweep of 8 trials, ``kill -9``-ed at three moments and rerun each time.

The sweep is ``rlbench-train -m search=threshold`` with tiny budgets on its own MLflow store and
Optuna storage. Each killed run is the same command under ``paused_train.py``, which stops dead
at the chosen moment so that the kill lands there and not a few milliseconds later:

1. during trial 3 (in its final evaluation), with the MLflow helper killed too (power loss:
   nobody is left to end the open runs);
2. between two trials (the last one told to Optuna, the next not yet asked); the helper lives
   and ends the parent run KILLED, as it does for any ``kill -9`` of the job;
3. while the study summary is written to the MLflow parent run, helper killed too.

Then the plain command once more. In the end: exactly 8 finished trials, no parameters twice,
each finished trial with its FINISHED child run under the one parent, nothing left RUNNING.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter

import pytest
from reliability_kit import BIN, child_env, kill_9, optuna_states, start_paused, wait_for

pytestmark = pytest.mark.slow

N_TRIALS = 8  # at least 6: run 1 ends 2, run 2 must reach its 4th trial, run 3 ends the rest
STUDY = "threshold-autoscaling-sine_curve"
GRACE_S = 2  # a trial without a heartbeat for this long is stale


def test_a_sweep_killed_three_times_ends_with_exactly_its_trials(mlflow_store, tmp_path):
    db = tmp_path / "optuna.db"
    args = [
        "-m", "search=threshold", f"hydra.sweeper.n_trials={N_TRIALS}", "debug=fast",
        "++eval.trajectory_plot=false", "hydra.sweeper.heartbeat_interval=1",
        f"hydra.sweeper.grace_period={GRACE_S}",
        f"hydra.sweeper.storage=sqlite:///{db}", *mlflow_store.overrides(),
    ]  # fmt: skip
    logs = tmp_path / "logs"
    logs.mkdir()

    # 1. during the third trial of the first run; helper killed too
    proc, marker = start_paused(tmp_path, args, "trial:3", logs / "1.txt")
    wait_for(marker, proc, logs / "1.txt")
    kill_9(proc, with_helper=True)
    assert [s for _, s in optuna_states(db)] == ["COMPLETE", "COMPLETE", "RUNNING"]
    running = [r for r in mlflow_store.runs() if r.info.status == "RUNNING"]
    assert len(running) == 2  # the parent and trial 2's child: nobody could end them
    # the rerun must find trial 2 stale; started at once it could finish its first three trials
    # (a fraction of a second each) before the grace period ran out
    time.sleep(GRACE_S + 0.5)

    # 2. between the third and fourth trials of the second run (the helper survives)
    proc, marker = start_paused(tmp_path, args, "between:3", logs / "2.txt")
    wait_for(marker, proc, logs / "2.txt")
    states = optuna_states(db)
    assert "RUNNING" not in {s for _, s in states}, states
    kill_9(proc, with_helper=False)

    # 3. while the third run writes the study's summary to the parent run; helper killed too
    proc, marker = start_paused(tmp_path, args, "parent:1", logs / "3.txt")
    wait_for(marker, proc, logs / "3.txt")
    assert Counter(s for _, s in optuna_states(db))["COMPLETE"] == N_TRIALS
    kill_9(proc, with_helper=True)
    (parent,) = [r for r in mlflow_store.runs() if r.data.tags.get("rlbench.sweep.role")]
    assert parent.info.status == "RUNNING"

    # 4. the same command, unpaused
    final = subprocess.run(
        [str(BIN / "rlbench-train"), *args], cwd=tmp_path, env=child_env(),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert final.returncode == 0, final.stderr[-3000:]
    assert "Launching" not in final.stdout  # nothing was left to run

    import optuna
    from optuna.trial import TrialState

    trials = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{db}").get_trials()
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == N_TRIALS
    params = [json.dumps(t.params, sort_keys=True) for t in done]
    assert len(set(params)) == N_TRIALS, "a configuration ran twice"
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [2]  # the one killed mid-trial ...
    (rerun,) = [t for t in done if t.system_attrs.get("retry_history")]
    assert rerun.system_attrs["retry_history"] == [2] and rerun.params == failed[0].params
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}

    runs = mlflow_store.runs()
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []
    (parent,) = [r for r in runs if r.data.tags.get("rlbench.sweep.role") == "parent"]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep/n_complete"] == N_TRIALS
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1  # every other run is one of its trials
    by_trial: dict[int, list[str]] = {}
    for run in children:
        number = int(run.data.tags["rlbench.sweep.trial_number"])
        by_trial.setdefault(number, []).append(run.info.status)
    for trial in done:
        assert by_trial.get(trial.number) == ["FINISHED"], (trial.number, by_trial)
    assert by_trial[2] == ["FAILED"]  # ended by the rerun, once its trial had gone stale
    assert len(children) == N_TRIALS + 1
