"""``rlbench.results.analysis`` against stores with known contents: columns, row counts, values."""

from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest

from rlbench.errors import UserError
from rlbench.results import analysis, stats
from rlbench.tracking.schema import SCORE_METRIC

PPO_PARAMS = {"algo.name": "ppo", "algo.learning_rate": "0.0003", "algo.net_arch": "[64, 64]",
              "env.name": "autoscaling", "env.load": "spike", "seed": "0",
              "train.total_steps": "3000"}  # fmt: skip


TRAJECTORY_CSV = (
    "step,action,reward,influx,capacity,instances\n"
    "1,2,-1.5,900.0,1000.0,10\n"
    "2,1,-0.5,1200.0,1100.0,11\n"
)


@pytest.fixture(scope="module")
def store(mlflow_template, tmp_path_factory):
    """Experiment rlbench: a finished ppo run (with an eval/trajectory.csv artifact), a failed dqn
    run, a threshold run without a score and a report run; experiment other: one run."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("analysis-store")
    shutil.copyfile(mlflow_template, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("rlbench", artifact_location=(root / "a").as_uri())
    other = client.create_experiment("other", artifact_location=(root / "o").as_uri())

    trajectory = root / "trajectory.csv"
    trajectory.write_text(TRAJECTORY_CSV)

    def run(exp_id, params, metrics, tags, status):
        run_id = client.create_run(exp_id, tags=tags).info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, 1000 * i, step) for i, (k, v, step) in enumerate(metrics)],
            params=[Param(k, v) for k, v in params.items()],
        )
        client.set_terminated(run_id, status)
        return run_id

    # ppo as runs log it now: a validation curve, then the held-out test score and aggregates
    curve = [("val/mean_return", -30.0, 1000), ("val/mean_return", -20.0, 2000),
             ("test/mean_return", -10.0, 3000), ("test/cost", 4.5, 3000)]  # fmt: skip
    ids = {
        "ppo": run(exp, PPO_PARAMS, curve, {"benchmark": "quick"}, "FINISHED"),
        "dqn": run(
            exp,
            PPO_PARAMS | {"algo.name": "dqn", "seed": "1", "algo.net_arch": "[32]"},
            # as runs were logged before validation and test were split: one name for both,
            # the last point the test score
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
    client.log_artifact(ids["ppo"], str(trajectory), "eval")
    return {"uri": uri, "ids": ids, "root": root}


def test_load_runs_one_row_per_run_with_params_metrics_tags(store):
    runs = analysis.load_runs(tracking_uri=store["uri"])
    assert len(runs) == 3  # the report run and the other experiment's run are not there
    assert list(runs.columns[:11]) == [
        "run_id", "run_name", "experiment_id", "status", "start_time", "end_time",
        "env", "load", "algo", "seed", "score",
    ]  # fmt: skip
    assert {"params.algo.name", "params.algo.net_arch", "metrics.test/mean_return",
            "metrics.eval/mean_return", "metrics.test/cost",
            "tags.benchmark"} <= set(runs.columns)  # fmt: skip
    by = runs.set_index("algo")
    assert list(runs["algo"]) == ["threshold", "dqn", "ppo"]  # newest first
    assert by.loc["ppo", "score"] == -10.0  # the last value of the curve, not the best
    assert by.loc["dqn", "score"] == -25.0 and by.loc["dqn", "status"] == "FAILED"  # old name
    assert pd.isna(by.loc["threshold", "score"])
    assert by.loc["ppo", "metrics.test/cost"] == 4.5
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
    # a misspelt metric used to give NaN scores that compare() then called an empty frame
    typo = r"metric='test/cots' was logged by none of the 4 runs of experiment 'rlbench' "
    with pytest.raises(UserError, match=typo + r"\(did you mean 'test/cost'\?\)"):
        analysis.load_runs(tracking_uri=store["uri"], metric="test/cots")
    cost = analysis.load_runs(tracking_uri=store["uri"], metric="test/cost")  # logged by one
    assert cost["score"].notna().sum() == 1


def test_load_curves_long_format(store):
    runs = analysis.load_runs(tracking_uri=store["uri"])
    curves = analysis.load_curves(runs)
    assert list(curves.columns) == [
        "run_id", "env", "load", "algo", "seed", "step", "value", "timestamp"
    ]  # fmt: skip
    assert len(curves) == 3  # validation only: ppo 2 points, dqn 1, threshold none
    ppo = curves[curves["algo"] == "ppo"]
    assert list(ppo["step"]) == [1000, 2000]
    assert list(ppo["value"]) == [-30.0, -20.0]
    assert set(ppo["load"]) == {"spike"} and set(ppo["seed"]) == {0}
    by_id = analysis.load_curves([store["ids"]["dqn"]], tracking_uri=store["uri"])
    assert list(by_id.columns) == ["run_id", "step", "value", "timestamp"]
    assert list(by_id["value"]) == [-40.0]  # an old run's last point (its test score) left out
    cost = analysis.load_curves(runs, metric="test/cost")
    assert list(cost["value"]) == [4.5]


def test_wrong_names_are_errors_naming_the_choices_not_empty_frames(store):
    """A misspelt metric, a run id the store lacks and a status MLflow does not have each used
    to give an empty frame (which a notebook then plots as nothing, silently)."""
    uri, ids = store["uri"], store["ids"]
    runs = analysis.load_runs(tracking_uri=uri)
    typo = r"metric='val/mean_retrn' was logged by none of the 3 runs \(did you mean "
    with pytest.raises(UserError, match=typo + r"'val/mean_return'\?\); their metrics: "):
        analysis.load_curves(runs, metric="val/mean_retrn")
    with pytest.raises(UserError, match=r"logged by none of the 1 runs \(did you mean 'test/c"):
        analysis.load_curves([ids["ppo"]], metric="test/cots", tracking_uri=uri)
    assert analysis.load_curves(runs, metric="val/mean_retrn", missing_ok=True).empty
    for unknown in ("<unknown id>", "0" * 32):
        message = rf"1 of the 2 run ids .* are not runs of the MLflow store .*: '{unknown}'; "
        with pytest.raises(UserError, match=message.replace("<", ".").replace(">", ".")):
            analysis.load_curves([ids["ppo"], unknown], tracking_uri=uri)
    for status in ("finished", "Finished", " FINISHED"):
        assert list(analysis.load_runs(tracking_uri=uri, status=status)["run_id"]) == [
            ids["threshold"], ids["ppo"]
        ]  # fmt: skip
    assert list(analysis.load_runs(tracking_uri=uri, status="failed")["run_id"]) == [ids["dqn"]]
    for bad, hint in (("DONE", ""), ("finishd", r" \(did you mean 'FINISHED'\?\)"), (1, "")):
        message = rf"status={bad!r} is not an MLflow run status{hint}; choose one of FINISHED, "
        with pytest.raises(UserError, match=re.escape(message).replace(re.escape(hint), hint)):
            analysis.load_runs(tracking_uri=uri, status=bad)


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


def test_outliers_delegates_to_the_reports_statistics():
    frame = pd.DataFrame(
        {"env": "autoscaling", "load": "steady", "algo": "qlearning", "seed": range(5),
         "score": [-170.0, -166.0, -160.0, -173.0, -1320.0]}
    )  # fmt: skip
    found = analysis.outliers(frame)
    pd.testing.assert_frame_equal(found, stats.outlier_runs(frame))
    assert found["seed"].tolist() == [4]


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
    study.set_metric_names([SCORE_METRIC])  # as a sweep's training jobs name it
    assert list(analysis.load_study("ppo-spike", storage)[1]["value"]) == [-3.0, -1.0, -2.0]


def runs_frame(rows):
    """A load_runs-shaped frame: (algo, load, seed, score, sweep study or None) per run."""
    return pd.DataFrame(
        {
            "run_id": [f"r{i}" for i in range(len(rows))],
            "run_name": [f"run-{i}" for i in range(len(rows))],
            "status": "FINISHED",
            "start_time": pd.to_datetime(range(len(rows)), unit="s", utc=True),
            "env": "autoscaling",
            "load": [r[1] for r in rows],
            "algo": [r[0] for r in rows],
            "seed": pd.array([r[2] for r in rows], dtype="Int64"),
            "score": [r[3] for r in rows],
            "tags.rlbench.sweep.study": [r[4] for r in rows],
        }
    )


def test_score_table_can_leave_out_sweep_trials():
    runs = runs_frame(
        [("threshold", "spike", 0, -5.0, None), ("threshold", "spike", 0, -3.0, "study-a"),
         ("threshold", "spike", 0, -4.0, "study-a"), ("random", "spike", 0, -9.0, None)]
    )  # fmt: skip
    assert sorted(analysis.score_table(runs)["run_id"]) == ["r0", "r1", "r2", "r3"]
    kept = analysis.score_table(runs, sweep_trials=False)
    assert sorted(kept["run_id"]) == ["r0", "r3"]


def test_representative_runs_pick_the_seed_closest_to_the_median():
    scores = runs_frame(
        [("ppo", "spike", 0, 1.0, None), ("ppo", "spike", 1, 9.0, None),
         ("ppo", "spike", 2, 5.0, None), ("dqn", "spike", 3, 2.0, None),
         ("dqn", "spike", 1, 4.0, None), ("ppo", "steady", 4, 7.0, None)]
    )  # fmt: skip
    chosen = analysis.representative_runs(scores)
    # ppo/spike: median 5 -> seed 2; dqn/spike: median 3, seeds 3 and 1 both 1 away -> seed 1
    assert list(zip(chosen["algo"], chosen["load"], chosen["seed"], strict=True)) == [
        ("dqn", "spike", 1), ("ppo", "spike", 2), ("ppo", "steady", 4),
    ]  # fmt: skip
    with pytest.raises(UserError, match=r"lacks column\(s\) \['score'\]"):
        analysis.representative_runs(scores.drop(columns="score"))


def test_load_trajectories_reads_the_logged_episode(store):
    runs = analysis.load_runs(tracking_uri=store["uri"])
    episodes = analysis.load_trajectories(runs)  # reduced to the comparable runs: ppo only
    assert list(episodes.columns) == [
        "run_id", "env", "load", "algo", "seed",
        "step", "action", "reward", "influx", "capacity", "instances",
    ]  # fmt: skip
    assert set(episodes["run_id"]) == {store["ids"]["ppo"]} and episodes.attrs["missing"] == []
    assert list(episodes["step"]) == [1, 2] and list(episodes["influx"]) == [900.0, 1200.0]
    assert list(episodes["algo"]) == ["ppo", "ppo"] and list(episodes["seed"]) == [0, 0]
    both = pd.DataFrame(
        {"run_id": [store["ids"]["ppo"], store["ids"]["other"]], "env": "autoscaling",
         "load": ["spike", "steady"], "algo": "ppo", "seed": [0, 1], "score": [-10.0, -10.0]}
    )  # fmt: skip
    found = analysis.load_trajectories(both, store["uri"], representative=False)
    assert len(found) == 2 and found.attrs["missing"] == [store["ids"]["other"]]


def test_load_study_defaults_to_the_study_started_last(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.storages.RDBStorage(storage)  # the tables, no study
    with pytest.raises(UserError, match="no Optuna study in"):
        analysis.load_study(storage=storage)
    for name in ("first", "second"):
        study = optuna.create_study(study_name=name, storage=storage)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    optuna.create_study(study_name="empty", storage=storage)  # created last, never started
    study, trials = analysis.load_study(storage=storage)
    assert study.study_name == "second" and len(trials) == 1


@pytest.fixture
def ppo_trial():
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    arch, activation = "algo.policy_kwargs.net_arch", "algo.policy_kwargs.activation_fn"
    return optuna.trial.create_trial(
        params={"algo.n_steps": 64, "algo.gamma": 0.99, arch: "[256,256]", activation: "relu"},
        distributions={"algo.n_steps": IntDistribution(64, 512),
                       "algo.gamma": FloatDistribution(0.9, 0.9999),
                       arch: CategoricalDistribution(["[64]", "[256,256]"]),
                       activation: CategoricalDistribution(["tanh", "relu"])},
        value=-1.0,
        user_attrs={"fixed_overrides": ["search=ppo", "env.load=spike", "debug=fast"]},
    )  # fmt: skip


def test_trial_overrides_compose_the_trial_and_its_defaults(ppo_trial):
    overrides = analysis.trial_overrides(ppo_trial)
    assert overrides == [
        "search=ppo", "env.load=spike", "debug=fast", "algo.n_steps=64", "algo.gamma=0.99",
        "algo.policy_kwargs.net_arch=[256,256]", "algo.policy_kwargs.activation_fn='relu'",
    ]  # fmt: skip
    cfg = analysis.compose_train_config(overrides)
    assert cfg.algo.name == "ppo" and cfg.env.load == "spike" and cfg.train.total_steps == 2048
    assert (cfg.algo.n_steps, cfg.algo.gamma) == (64, 0.99)
    assert list(cfg.algo.policy_kwargs.net_arch) == [256, 256]
    assert cfg.algo.policy_kwargs.activation_fn == "relu" and "hydra" not in cfg
    defaults = analysis.compose_train_config(analysis.trial_overrides(ppo_trial, params=False))
    # conf/algo/ppo.yaml: n_steps 256, gamma 0.95, net_arch [64, 64], tanh
    assert (defaults.algo.n_steps, defaults.algo.gamma) == (256, 0.95)
    assert list(defaults.algo.policy_kwargs.net_arch) == [64, 64]
    assert defaults.algo.policy_kwargs.activation_fn == "tanh"


def test_retrain_overrides_train_the_same_config_outside_the_sweep(ppo_trial):
    from omegaconf import OmegaConf

    retrain = analysis.retrain_overrides(ppo_trial)
    # search=ppo chose algo=ppo; without it rlbench-train would train the default algo
    assert retrain[0] == "algo=ppo" and not any(o.startswith("search=") for o in retrain)
    swept = analysis.compose_train_config(analysis.trial_overrides(ppo_trial))
    assert OmegaConf.to_container(analysis.compose_train_config(retrain)) == (
        OmegaConf.to_container(swept)
    )
    defaults = analysis.retrain_overrides(ppo_trial, params=False)
    assert defaults == ["algo=ppo", "env.load=spike", "debug=fast"]


def test_trial_and_compose_errors_are_one_line(ppo_trial):
    import optuna
    from optuna.distributions import FloatDistribution

    foreign = optuna.trial.create_trial(
        params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}, value=1.0
    )
    with pytest.raises(UserError, match="no 'fixed_overrides' attribute"):
        analysis.trial_overrides(foreign)
    with pytest.raises(UserError, match=r"cannot compose the config for algo=sarsa: .*algo/sarsa"):
        analysis.compose_train_config(["algo=sarsa"])


def test_runs_scored_on_their_best_validated_weights_are_an_entry_of_their_own():
    """eval.policy=best scores another policy than the last weights: its runs are not more
    seeds of the same algorithm, in any comparison."""
    from rlbench.tracking.schema import SCORED_POLICY_TAG

    def row(run_id: str, seed: int, scored: str | None) -> dict:
        tags = {} if scored is None else {f"tags.{SCORED_POLICY_TAG}": scored}
        return {
            "run_id": run_id, "run_name": run_id, "experiment_id": "1", "status": "FINISHED",
            "start_time": 0, "end_time": 1, "params.env.name": "gym", "params.env.load": None,
            "params.algo.name": "dqn", "params.seed": str(seed),
            "metrics.test/mean_return": 400.0 + seed,
        } | tags  # fmt: skip

    runs = analysis._runs_frame(
        [row("a", 0, "best"), row("b", 1, "final"), row("c", 2, None), row("d", 3, "best")],
        "test/mean_return",
    )
    assert dict(zip(runs["run_id"], runs["algo"], strict=True)) == {
        "a": "dqn@best", "b": "dqn", "c": "dqn", "d": "dqn@best",
    }  # fmt: skip


def _run_row(run_id: str, seed: int, start: int, **params: str) -> dict:
    return {
        "run_id": run_id, "run_name": run_id, "experiment_id": "1", "status": "FINISHED",
        "start_time": start, "end_time": start + 1, "params.env.name": "gym",
        "params.env.load": None, "params.algo.name": "random", "params.seed": str(seed),
        "metrics.test/mean_return": float(start), f"tags.{RUN_KEY}": run_id,
    } | {f"params.{k.replace('__', '.')}": v for k, v in params.items()}  # fmt: skip


RUN_KEY = "rlbench.run_key"


def test_gymnasium_tasks_are_told_apart_and_a_seed_counts_once():
    """env=gym runs on CartPole and on Acrobot are two tasks, not seeds of one; one seed run
    with three budgets is one seed (the newest run), not three."""
    rows = [
        _run_row("c0", 0, 1, env__id="CartPole-v1"),
        _run_row("a0", 0, 2, env__id="Acrobot-v1"),
        _run_row("s1", 5, 3, env__id="CartPole-v1", train__total_steps="2048"),
        _run_row("s2", 5, 4, env__id="CartPole-v1", train__total_steps="4096"),
        _run_row("s3", 5, 5, env__id="CartPole-v1", train__total_steps="8192"),
    ]
    runs = analysis._runs_frame(rows, "test/mean_return")
    assert dict(zip(runs["run_id"], runs["env"], strict=True))["a0"] == "Acrobot-v1"
    table = analysis.score_table(runs)
    cells = table.groupby(["env", "algo"])["seed"].apply(list).to_dict()
    assert cells == {("Acrobot-v1", "random"): [0], ("CartPole-v1", "random"): [0, 5]}
    assert table.set_index("seed").loc[5, "run_id"] == "s3"  # the newest of seed 5
    assert table.attrs["left_out"] == {"runs of an algorithm, task and seed with other settings": 2}


def test_notebook_mixups_are_one_user_error_each(tmp_path):
    """What a notebook passes by mistake gets a UserError naming it, never a pandas
    KeyError/AttributeError from deep inside."""
    import sqlite3

    scores = pd.DataFrame(
        {"env": ["autoscaling"] * 2, "load": ["spike", None], "algo": ["random"] * 2,
         "seed": [0, 1], "score": [-1.0, -2.0]}
    )  # fmt: skip
    cases = [
        (lambda: analysis.score_table("runs"), "expected a load_runs() frame, got str"),
        (lambda: analysis.score_table(scores), "with a 'status' column"),
        (lambda: analysis.compare(None), "expected a load_runs() or score_table() frame"),
        (lambda: analysis.compare(scores), "1 run(s) have no env / load / algo value"),
        (lambda: analysis.compare(scores.dropna(), reps=0), "reps must be an integer"),
        (lambda: analysis.compare(scores.dropna(), confidence=2), "confidence must be"),
        (lambda: analysis.load_curves(None), "expected a runs frame or a list of run ids"),
    ]
    for call, message in cases:
        with pytest.raises(UserError, match=re.escape(message)):
            call()
    db = tmp_path / "foreign.db"
    with sqlite3.connect(db) as con:
        con.execute("create table mine(x)")
    with pytest.raises(UserError, match="is not an Optuna storage"):
        analysis.load_study(storage=f"sqlite:///{db}")
    with sqlite3.connect(db) as con:  # a reader wrote nothing into it
        assert [r[0] for r in con.execute("select name from sqlite_master")] == ["mine"]


def test_an_infinite_score_is_no_score():
    """MLflow stores inf as the largest float: read back, it must not rank as a real score."""
    from rlbench.results.analysis import _runs_frame

    rows = [
        {"run_id": r, "run_name": r, "experiment_id": "1", "status": "FINISHED",
         "start_time": 0, "end_time": 1, "params.algo.name": "x", "params.env.name": "e",
         "params.seed": str(i), "metrics.test/mean_return": v}
        for i, (r, v) in enumerate([("a", 1.7976931348623157e308), ("b", -3.0)])
    ]  # fmt: skip
    frame = _runs_frame(rows, "test/mean_return")
    assert frame["score"].isna().tolist() == [True, False]


def test_load_study_creates_no_file_in_any_sqlite_spelling(tmp_path):
    """sqlite+pysqlite:/// is SQLite too: a reader must not create the file Optuna would."""
    db = tmp_path / "none.db"
    with pytest.raises(UserError, match="no Optuna storage at"):
        analysis.load_study(storage=f"sqlite+pysqlite:///{db}")
    assert not db.exists()


def test_load_study_errors_show_no_password():
    """A storage that refuses is named with its password masked, and why it refused."""
    pytest.importorskip("psycopg")
    with pytest.raises(UserError) as err:
        analysis.load_study(storage="postgresql://team:Pw0rdXyz@127.0.0.1:1/optuna")
    assert "Pw0rdXyz" not in str(err.value)
    assert "team:***@127.0.0.1:1/optuna" in str(err.value)
    assert "unreachable" in str(err.value)
