"""``rlbench-train -m search=...``: the real training job under the sweeper, with MLflow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

TRAIN = [sys.executable, "-c", "from rlbench.run.main import main; main()"]
CONF = Path(__file__).resolve().parents[2] / "conf" / "train.yaml"
BUDGET = ("train.total_steps=2000", "train.eval_every=1000", "eval.episodes=4")


def search(name: str) -> str:
    """``search=<name>`` once train.yaml lists the ``search`` group, ``+search=<name>`` before."""
    listed = re.search(r"^\s*-\s*search\s*:", CONF.read_text(), re.MULTILINE)
    return f"search={name}" if listed else f"+search={name}"


def train(tmp_path: Path, *args: str, multirun: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [*TRAIN, *(["-m"] if multirun else []), *args]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def load(tmp_path: Path, name: str) -> optuna.Study:
    storage = f"sqlite:///{tmp_path / 'outputs' / 'optuna.db'}"
    return optuna.load_study(study_name=name, storage=storage)


def test_threshold_search_beats_or_matches_the_seed_rule(tmp_path, mlflow_store):
    rule = train(tmp_path, "algo=threshold", "tracking.enabled=false", *BUDGET, multirun=False)
    rule_score = float(re.search(r"score: (\S+)", rule.stdout).group(1))
    sweep = (search("threshold"), "hydra.sweeper.n_trials=3", *BUDGET, *mlflow_store.overrides())
    train(tmp_path, *sweep)
    again = train(tmp_path, *sweep)  # the same command: nothing left to run
    assert "Launching" not in again.stdout
    study = load(tmp_path, "threshold-autoscaling-sine_curve")
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 3
    # the preset runs the seed's rule first, on the same training and evaluation seeds
    assert study.trials[0].params == {
        "algo.upper": 80.0,
        "algo.lower": 40.0,
        "algo.queue_limit": 100.0,
        "algo.cooldown": 0,
    }
    assert study.best_value >= rule_score - 1e-5 * abs(rule_score)  # printed to 6 digits
    runs = mlflow_store.runs()
    # one parent per study: the rerun reopened it rather than adding another
    (parent,) = [r for r in runs if r.data.tags.get("rlbench.sweep.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3 and len(runs) == 4
    assert parent.data.metrics["sweep/best_value"] == pytest.approx(study.best_value)
    assert parent.data.tags["rlbench.best.algo.upper"] == str(study.best_params["algo.upper"])
    logged = {a.path for a in mlflow_store.client().list_artifacts(parent.info.run_id, "optuna")}
    assert {"optuna/trials.csv", "optuna/optimization_history.png"} <= logged


def test_a_study_is_continued_only_with_the_settings_its_trials_learned_with(tmp_path):
    """Rerunning a sweep with another episode length used to add its trials to the same study,
    ranked with the others; now the command is refused and names what differs."""
    sweep = (search("threshold"), "tracking.enabled=false", "hydra.sweeper.pruner.name=none",
             *BUDGET)  # fmt: skip
    train(tmp_path, *sweep, "hydra.sweeper.n_trials=2")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    other = subprocess.run(
        [*TRAIN, "-m", *sweep, "hydra.sweeper.n_trials=3", "env.horizon=48"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert other.returncode == 2, other.stderr[-2000:]
    assert "was run with other settings (env.horizon: 288 -> 48)" in other.stderr
    assert "give another hydra.sweeper.study_name" in other.stderr
    study = load(tmp_path, "threshold-autoscaling-sine_curve")
    assert len(study.trials) == 2  # nothing was added
    train(tmp_path, *sweep, "hydra.sweeper.n_trials=3")  # the study's own settings continue it
    assert len(load(tmp_path, "threshold-autoscaling-sine_curve").trials) == 3
    # what a trial reads by content and how many seeds make its objective are settings too
    seeds = subprocess.run(
        [*TRAIN, "-m", *sweep, "hydra.sweeper.n_trials=4", "hydra.sweeper.trial_seeds=2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert seeds.returncode == 2 and "hydra.sweeper.trial_seeds: 1 -> 2" in seeds.stderr
    # but what only changes how a run is written is not
    train(tmp_path, *sweep, "hydra.sweeper.n_trials=4", "eval.trajectory_plot=false")


def test_pruned_trials_log_fewer_steps_when_run_by_joblib(tmp_path, mlflow_store):
    train(
        tmp_path,
        search("qlearning"),
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        # every evaluation is below this threshold: each trial stops at its first evaluation
        "hydra.sweeper.pruner.name=threshold",
        "+hydra.sweeper.pruner.kwargs.lower=1e9",
        "hydra.sweeper.pruner.kwargs.n_warmup_steps=0",
        *BUDGET,
        *mlflow_store.overrides(),
    )
    study = load(tmp_path, "qlearning-autoscaling-sine_curve")
    for t in study.get_trials():
        assert t.state == TrialState.PRUNED
        assert list(t.intermediate_values) == [1000]
    children = [r for r in mlflow_store.runs() if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    for run in children:
        assert run.data.tags["pruned"] == "true"
        assert run.data.metrics["train/total_steps"] == 1000  # of a 2000-step budget
