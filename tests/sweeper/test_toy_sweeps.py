"""Real multiruns of the toy app through the sweeper: budget, pruning, joblib, resume, sharing.

The toy objective is score(x, y) = -((x - 1)^2 + (y - 2)^2) + seed; at step k of 4 a job reports
score - (4 - k). See ``toy_app.py``.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

pytestmark = pytest.mark.slow


def states(study) -> list[str]:
    return [t.state.name for t in study.get_trials()]


def test_the_study_stops_at_its_total_and_a_rerun_adds_nothing(run_toy, study):
    args = ("hydra.sweeper.n_trials=3", "hydra.sweeper.pruner.name=none")
    first = run_toy(*args)
    s = study()
    assert states(s) == ["COMPLETE"] * 3
    best = max(s.get_trials(), key=lambda t: t.value)
    assert f"best trial {best.number}: value {best.value:.6g}" in first.stdout
    again = run_toy(*args)  # the same command: the study is already complete
    assert "Launching" not in again.stdout
    assert len(s.get_trials()) == 3


def test_pruned_trials_stop_early_when_jobs_run_in_other_processes(run_toy, study, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    proc = run_toy(
        "hydra.sweeper.n_trials=4",
        "x=choice(-3.0, 1.0)",
        "y=2.0",
        "hydra.sweeper.pruner.name=threshold",
        "+hydra.sweeper.pruner.kwargs.lower=-6.0",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        f"pid_dir={pids}",
    )
    trials = study().get_trials()
    assert len(trials) == 4
    for t in trials:
        if t.params["x"] == 1.0:  # score 0: steps report -3, -2, -1, 0, all above -6
            assert t.state == TrialState.COMPLETE
            assert t.intermediate_values == {1: -3.0, 2: -2.0, 3: -1.0, 4: 0.0}
        else:  # x = -3: score -16, the first report -19 is below -6: stopped at step 1
            assert t.state == TrialState.PRUNED
            assert t.intermediate_values == {1: -19.0}
    assert {t.state for t in trials} == {TrialState.COMPLETE, TrialState.PRUNED}
    worker_pids = {int(p.read_text()) for p in pids.iterdir()}
    assert len(worker_pids) >= 1 and proc.args and all(p > 0 for p in worker_pids)
    assert "joblib" in proc.stdout.lower()


def fourth_trial_is_training(db: Path) -> bool:
    """Three trials are complete and the fourth has reported a step (its job is running)."""
    try:
        with sqlite3.connect(db) as con:
            done = con.execute("select count(*) from trials where state='COMPLETE'").fetchone()[0]
            reported = con.execute(
                "select count(*) from trial_intermediate_values v join trials t "
                "on v.trial_id = t.trial_id where t.state = 'RUNNING'"
            ).fetchone()[0]
    except sqlite3.Error:  # not created yet
        return False
    return done == 3 and reported > 0


def start_and_stop_in_the_fourth_trial(popen_toy, tmp_path, args, sig):
    proc = popen_toy(*args)
    deadline = time.monotonic() + 30
    while not fourth_trial_is_training(tmp_path / "outputs" / "optuna.db"):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.communicate(timeout=30)
    return proc


RESUME_ARGS = (
    "hydra.sweeper.n_trials=10",  # 6 left after the signal: seconds even if this test stalls
    "sleep=0.1",  # 0.4 s per trial
    "hydra.sweeper.heartbeat_interval=1",
    "hydra.sweeper.grace_period=2",
    "hydra.sweeper.pruner.name=none",
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_a_stopped_study_resumes_to_exactly_its_total(run_toy, popen_toy, study, tmp_path, sig):
    stopped = start_and_stop_in_the_fourth_trial(popen_toy, tmp_path, RESUME_ARGS, sig)
    if sig == signal.SIGINT:
        assert stopped.returncode == 130
        assert states(study())[-1] == "WAITING"  # the interrupted trial, queued again at once
    else:
        assert states(study())[3] == "RUNNING"  # left behind: its heartbeat will go stale
    run_toy(*RESUME_ARGS)  # the same command again
    trials = study().get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 10
    assert len({t.params["x"] for t in done}) == 10  # no configuration ran twice
    (stopped_trial,) = [t for t in trials if t.state == TrialState.FAIL]
    (rerun,) = [t for t in done if t.system_attrs.get("retry_history")]
    assert rerun.system_attrs["retry_history"] == [stopped_trial.number]
    assert rerun.params == stopped_trial.params


def test_two_processes_on_one_storage_share_the_total(popen_toy, study):
    args = (
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.n_jobs=2",
        "sleep=0.02",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=20",  # nobody dies here: a busy CI machine must not say so
        "hydra.sweeper.pruner.name=none",
    )
    procs = [popen_toy(*args) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    found = states(study())
    assert found.count("COMPLETE") == 8
    # a trial asked after the budget was taken goes back to the queue unsampled
    assert set(found) <= {"COMPLETE", "WAITING"}
    assert all("Launching" in out for out in outs)  # both processes did part of the work


def test_trial_seeds_average_the_seeds(run_toy, study):
    run_toy("hydra.sweeper.n_trials=2", "hydra.sweeper.trial_seeds=2", "seed=5")
    for t in study().get_trials():
        score = -((t.params["x"] - 1.0) ** 2 + (t.params["y"] - 2.0) ** 2)
        assert t.value == pytest.approx(score + 5.5)  # mean of seeds 5 and 6
        # seed 6 reports its 4 steps after seed 5's: steps 5..8
        assert sorted(t.intermediate_values) == [1, 2, 3, 4, 5, 6, 7, 8]
        assert t.intermediate_values[8] == pytest.approx(score + 6)


def test_multi_objective_jobs_return_one_value_per_direction(run_toy, study):
    proc = run_toy(
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.direction=[maximize,minimize]",
        "hydra.sweeper.sampler.name=nsgaii",
        "multi=true",
    )
    for t in study().get_trials():
        score = -((t.params["x"] - 1.0) ** 2 + (t.params["y"] - 2.0) ** 2)
        assert t.values == pytest.approx([score, t.params["x"]])
    assert "Pareto-optimal trial" in proc.stdout


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["hydra.sweeper.sampler.name=sobol"], "unknown sampler 'sobol'"),
        (["hydra.sweeper.pruner.name=early"], "unknown pruner 'early'"),
        (
            ["hydra.sweeper.params.x='interval(1,'"],
            "cannot parse search expression 'x=interval(1,'",
        ),
        (
            ["x=tag(log, interval(-1.0, 1.0))"],
            "search expression 'x=tag(log, interval(-1.0, 1.0))'",
        ),
        (
            ["hydra.sweeper.storage=nosuchdb://h/db"],
            "cannot open the Optuna storage nosuchdb://h/db",
        ),
        (["fail_above=-100", "user_error=true"], "is above fail_above"),
    ],
    ids=["sampler", "pruner", "expression", "log-of-negative", "storage", "failing-job"],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(run_toy, study, args, line):
    proc = run_toy(*args, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.stderr.startswith("error: ") and line in proc.stderr
    if "user_error=true" in args:  # a broken config does not use up the budget
        (t,) = study().get_trials()
        assert t.state == TrialState.FAIL and t.system_attrs["rlbench.not_counted"]


def test_a_corrected_command_takes_over_a_study_only_broken_commands_used(run_toy, study):
    """A misspelt searched key stored a search space no counted trial ever used: the corrected
    command's space replaces it (a study with counted trials still refuses another space)."""
    broken = run_toy("hydra.sweeper.n_trials=2", "fail_above=-100", "user_error=true",
                     "x=interval(-5.0,5.0)", check=False)  # fmt: skip
    assert broken.returncode == 2
    run_toy("hydra.sweeper.n_trials=2", "x=interval(-3.0,3.0)")
    counted = [t for t in study().get_trials() if not t.system_attrs.get("rlbench.not_counted")]
    assert [t.state for t in counted] == [TrialState.COMPLETE] * 2
    other = run_toy("hydra.sweeper.n_trials=3", "x=interval(-1.0,1.0)", check=False)
    assert other.returncode == 2 and "was run with another search space" in other.stderr


def test_a_broken_command_on_an_existing_study_keeps_it_and_spends_no_budget(run_toy, study):
    """The study holds earlier trials: it stays, and the broken command's trial is marked as
    not counted (it does not use up n_trials); the corrected command continues it."""
    run_toy("hydra.sweeper.n_trials=1")
    proc = run_toy("hydra.sweeper.n_trials=2", "fail_above=-100", "user_error=true", check=False)
    assert proc.returncode == 2 and "is above fail_above" in proc.stderr
    first, failed = study().get_trials()
    assert first.state == TrialState.COMPLETE
    assert failed.state == TrialState.FAIL and failed.system_attrs["rlbench.not_counted"]
    run_toy("hydra.sweeper.n_trials=2")
    states = [t.state for t in study().get_trials()]
    assert states.count(TrialState.COMPLETE) == 2, states


def test_each_trial_knows_its_run_and_the_study_its_objective(
    run_toy, study, tmp_path, mlflow_store
):
    """Child runs are named by trial number, trials carry their run id (also in trials.csv),
    and the dashboard shows the objective's name instead of "Objective 0"."""
    import csv

    run_toy(
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.trial_seeds=2",
        "tracking.enabled=true",
        f"tracking.uri={mlflow_store.uri}",
        f"tracking.artifact_location={mlflow_store.artifact_dir}",
        "tracking.experiment=rlbench",
        timeout=120,
    )
    s = study()
    assert s.metric_names == ["score"]
    children = {
        r.info.run_id: r for r in mlflow_store.runs() if "mlflow.parentRunId" in r.data.tags
    }
    assert len(children) == 6  # 3 trials x 2 seeds
    for t in s.get_trials():
        for key in ("rlbench.mlflow_run_id", "rlbench.mlflow_run_id.seed1"):
            run = children[t.user_attrs[key]]
            assert run.info.run_name.startswith(f"trial-{t.number}-toy-")
            assert run.data.tags["rlbench.sweep.trial_number"] == str(t.number)
    (table,) = (tmp_path / "multirun").rglob("trials.csv")
    rows = list(csv.DictReader(table.open()))
    assert [r["user_attrs_rlbench.mlflow_run_id"] for r in rows] == [
        t.user_attrs["rlbench.mlflow_run_id"] for t in s.get_trials()
    ]


def test_an_in_memory_study_still_nests_its_runs_under_a_parent(run_toy, tmp_path, mlflow_store):
    proc = run_toy(
        "hydra.sweeper.storage=null",
        "hydra.sweeper.n_trials=2",
        "tracking.enabled=true",
        f"tracking.uri={mlflow_store.uri}",
        f"tracking.artifact_location={mlflow_store.artifact_dir}",
        "tracking.experiment=rlbench",
        timeout=120,
    )
    assert "storage null: the study lives in memory" in proc.stdout
    assert "in memory: 2 complete" in proc.stdout
    assert not (tmp_path / "outputs" / "optuna.db").exists()
    runs = mlflow_store.runs()
    (parent,) = [r for r in runs if r.data.tags.get("rlbench.sweep.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name.split("-toy")[0] for r in children) == ["trial-0", "trial-1"]
    assert (tmp_path / "multirun" / "optimization_results.yaml").is_file()
