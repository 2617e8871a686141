"""``rlbench.analysis`` against stores with known contents: columns, row counts, values."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from rlbench import analysis
from rlbench.errors import UserError
from rlbench.report import stats

PPO_PARAMS = {"algo.name": "ppo", "algo.learning_rate": "0.0003", "algo.net_arch": "[64, 64]",
              "env.name": "autoscaling", "env.load": "spike", "seed": "0",
              "train.total_steps": "3000"}  # fmt: skip


@pytest.fixture(scope="module")
def store(mlflow_template, tmp_path_factory):
    """Experiment rlbench: a finished ppo run, a failed dqn run, a threshold run without a score
    and a report run; experiment other: one run."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("analysis-store")
    shutil.copyfile(mlflow_template, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("rlbench", artifact_location=(root / "a").as_uri())
    other = client.create_experiment("other", artifact_location=(root / "o").as_uri())

    def run(exp_id, params, metrics, tags, status):
        run_id = client.create_run(exp_id, tags=tags).info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, 1000 * i, step) for i, (k, v, step) in enumerate(metrics)],
            params=[Param(k, v) for k, v in params.items()],
        )
        client.set_terminated(run_id, status)
        return run_id

    curve = [("eval/mean_return", -30.0, 1000), ("eval/mean_return", -20.0, 2000),
             ("eval/mean_return", -10.0, 3000), ("eval/cost", 4.5, 3000)]  # fmt: skip
    ids = {
        "ppo": run(exp, PPO_PARAMS, curve, {"benchmark": "quick"}, "FINISHED"),
        "dqn": run(
            exp,
            PPO_PARAMS | {"algo.name": "dqn", "seed": "1", "algo.net_arch": "[32]"},
            [("eval/mean_return", -40.0, 1000), ("eval/mean_return", -25.0, 3000)],
            {"benchmark": "quick"},
            "FAILED",
        ),
        "threshold": run(
            exp,
            {
                "algo.name": "threshold",
                "env.name": "autoscaling",
                "env.load": "steady",
                "seed": "2",
                "algo.learning_rate": "none",
            },
            [("train/steps", 5.0, 0)],
            {"benchmark": "other"},
            "FINISHED",
        ),
        "report": run(exp, {}, [], {"rlbench.kind": "report"}, "FINISHED"),
        "other": run(other, PPO_PARAMS, curve, {}, "FINISHED"),
    }
    return {"uri": uri, "ids": ids, "root": root}


def test_load_runs_one_row_per_run_with_params_metrics_tags(store):
    runs = analysis.load_runs(tracking_uri=store["uri"])
    assert len(runs) == 3  # the report run and the other experiment's run are not there
    assert list(runs.columns[:11]) == [
        "run_id", "run_name", "experiment_id", "status", "start_time", "end_time",
        "env", "load", "algo", "seed", "score",
    ]  # fmt: skip
    assert {"params.algo.name", "params.algo.net_arch", "metrics.eval/mean_return",
            "metrics.eval/cost", "tags.benchmark"} <= set(runs.columns)  # fmt: skip
    by = runs.set_index("algo")
    assert list(runs["algo"]) == ["threshold", "dqn", "ppo"]  # newest first
    assert by.loc["ppo", "score"] == -10.0  # the last value of the curve, not the best
    assert by.loc["dqn", "score"] == -25.0 and by.loc["dqn", "status"] == "FAILED"
    assert pd.isna(by.loc["threshold", "score"])
    assert by.loc["ppo", "metrics.eval/cost"] == 4.5
    assert list(runs["seed"]) == [2, 1, 0] and str(runs["seed"].dtype) == "Int64"
    assert runs["params.train.total_steps"].dtype == "Int64"  # numbers in every run: numeric
    assert by.loc["ppo", "params.algo.net_arch"] == "[64, 64]"  # lists stay strings
    rates = runs["params.algo.learning_rate"]  # "none" in one run: all stay strings
    assert (
        not pd.api.types.is_numeric_dtype(rates)
        and by.loc["ppo", "params.algo.learning_rate"] == "0.0003"
    )
    assert by.loc["ppo", "tags.benchmark"] == "quick"
    assert str(runs["start_time"].dtype).startswith("datetime64") and runs["start_time"].dt.tz
    assert runs.attrs["tracking_uri"] == store["uri"]


def test_load_runs_filter_status_and_reports(store):
    quick = analysis.load_runs(filter="tags.benchmark = 'quick'", tracking_uri=store["uri"])
    assert sorted(quick["algo"]) == ["dqn", "ppo"]
    finished = analysis.load_runs(
        filter="tags.benchmark = 'quick'", tracking_uri=store["uri"], status="FINISHED"
    )
    assert list(finished["run_id"]) == [store["ids"]["ppo"]]
    every = analysis.load_runs(tracking_uri=store["uri"], include_reports=True)
    assert store["ids"]["report"] in set(every["run_id"]) and len(every) == 4
    other = analysis.load_runs("other", tracking_uri=store["uri"])
    assert list(other["run_id"]) == [store["ids"]["other"]]


def test_load_runs_errors_are_one_line(store, tmp_path):
    with pytest.raises(UserError, match=r"no MLflow experiment 'nope' .*experiments there: "
                                        r"Default, other, rlbench\)"):  # fmt: skip
        analysis.load_runs("nope", tracking_uri=store["uri"])
    with pytest.raises(UserError, match=r"searching runs .* failed on the MLflow store"):
        analysis.load_runs(filter="tags.benchmark ~ 'x'", tracking_uri=store["uri"])
    with pytest.raises(UserError, match="no MLflow store at"):
        analysis.load_runs(tracking_uri=f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()


def test_load_curves_long_format(store):
    runs = analysis.load_runs(tracking_uri=store["uri"])
    curves = analysis.load_curves(runs)
    assert list(curves.columns) == [
        "run_id", "env", "load", "algo", "seed", "step", "value", "timestamp"
    ]  # fmt: skip
    assert len(curves) == 5  # ppo 3 points, dqn 2, threshold none
    ppo = curves[curves["algo"] == "ppo"]
    assert list(ppo["step"]) == [1000, 2000, 3000]
    assert list(ppo["value"]) == [-30.0, -20.0, -10.0]
    assert set(ppo["load"]) == {"spike"} and set(ppo["seed"]) == {0}
    by_id = analysis.load_curves([store["ids"]["dqn"]], tracking_uri=store["uri"])
    assert list(by_id.columns) == ["run_id", "step", "value", "timestamp"]
    assert list(by_id["value"]) == [-40.0, -25.0]
    cost = analysis.load_curves(runs, metric="eval/cost")
    assert list(cost["value"]) == [4.5]


def test_score_table_keeps_comparable_runs_and_compare_delegates(store):
    runs = analysis.load_runs(tracking_uri=store["uri"])
    table = analysis.score_table(runs)
    assert list(table.columns) == [
        "run_id", "run_name", "env", "load", "algo", "seed", "score", "cost"
    ]  # fmt: skip
    assert list(table["algo"]) == ["ppo"] and list(table["score"]) == [-10.0]
    frame = pd.DataFrame(
        {"env": "autoscaling", "load": "spike", "algo": ["a"] * 3 + ["random"] * 3,
         "seed": [0, 1, 2] * 2, "score": [3.0, 4.0, 5.0, 0.0, 1.0, 2.0]}
    )  # fmt: skip
    ours = analysis.compare(frame, by=["env"], reps=200)
    pd.testing.assert_frame_equal(ours, stats.compare(frame, by=["env"], reps=200))
    # normalised: random's mean 1 -> 0, a's mean 4 -> 1; a's IQM of (3, 4, 5) -> 1
    assert list(ours["algo"]) == ["a", "random"] and ours["iqm"].iloc[0] == pytest.approx(1.0)


def test_load_study_returns_study_and_trials(tmp_path):
    import optuna
    from optuna.distributions import FloatDistribution

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="ppo-spike", storage=storage, direction="maximize")
    for x, value in [(0.1, -3.0), (0.5, -1.0), (0.9, -2.0)]:
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": x}, distributions={"lr": FloatDistribution(0, 1)}, value=value
            )
        )
    loaded, trials = analysis.load_study("ppo-spike", storage)
    assert loaded.best_params == {"lr": 0.5} and loaded.best_value == -1.0
    assert len(trials) == 3
    assert {"number", "value", "params_lr", "state"} <= set(trials.columns)
    assert list(trials["value"]) == [-3.0, -1.0, -2.0]
    with pytest.raises(UserError, match=r"no Optuna study 'dqn' .*studies there: ppo-spike\)"):
        analysis.load_study("dqn", storage)
    with pytest.raises(UserError, match="no Optuna storage at"):
        analysis.load_study("ppo-spike", f"sqlite:///{tmp_path / 'none.db'}")
