"""Bad input to ``rlbench-train``: one clear line, a non-zero exit, no traceback, nothing written.

Run in-process through the real console-script path (``rlbench.run.main.main``: Hydra, our error
printer, exit codes), tracking into a fresh MLflow store, so each case costs milliseconds rather
than a 3 s process. docs/bad-input.md lists these cases with the ones tested elsewhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

# case: (overrides, the error line must contain, exit code); {tmp} is the test's folder
CASES: dict[str, tuple[list[str], str, int]] = {
    "unknown config group option": (["env=k8s"], "unknown env option 'k8s'; choose one of:", 2),
    "misspelt group option": (
        ["env=autoscalin"], "unknown env option 'autoscalin' (did you mean 'autoscaling'?)", 2,
    ),
    "misspelt key": (
        ["algo=ppo", "algo.n_step=5"],
        "unknown config key 'algo.n_step' (did you mean 'algo.n_steps'?)", 2,
    ),
    "malformed override": (["algo.upper=[1,"], "malformed override: ", 2),
    "wrong type for a budget": (
        ["train.total_steps=abc"], "train.total_steps must be a positive integer, got 'abc'", 2,
    ),
    "wrong type for an SB3 setting": (
        ["algo=ppo", "algo.learning_rate=fast"], "algo.learning_rate='fast' must be a number", 2,
    ),
    "wrong type for a threshold setting": (
        ["algo.upper=high"], "algo (threshold): invalid settings (could not convert", 2,
    ),
    "list where a number belongs": (
        ["algo=qlearning", "algo.gamma=[1]"], "algo (qlearning): invalid settings (", 2,
    ),
    "a group replaced by a value": (["train=5"], "train must be a group of settings", 2),
    "resume that is not a boolean": (["resume=maybe"], "resume must be true or false", 2),
    "tuned that is not a boolean": (["tuned=maybe"], "tuned must be true or false", 2),
    "a setting outside its choices": (
        ["train.progress=fast"], "train.progress must be one of auto, bar, log, off", 2,
    ),
    "zero budget": (["eval.episodes=0"], "eval.episodes must be a positive integer, got 0", 2),
    "zero parallel copies": (["train.num_envs=0"], "train.num_envs must be a positive", 2),
    "negative seed": (["seed=-1"], "seed must be an integer >= 0, got -1", 2),
    "NaN learning rate": (
        ["algo=ppo", "algo.learning_rate=nan"], "algo.learning_rate must be a finite number", 2,
    ),
    "impossible network size": (
        ["algo=ppo", "algo.policy_kwargs.net_arch=[64,-1]"],
        "algo.policy_kwargs.net_arch must be a list of layer widths", 2,
    ),
    "unknown device": (["algo=ppo", "device=tpu"], "unknown device 'tpu'", 2),
    "dqn on a continuous action space": (
        ["env=gym", "env.id=Pendulum-v1", "algo=dqn"], "dqn needs a discrete action space", 2,
    ),
    "unknown load pattern": (["env.load=spkie"], "load must be one of", 2),
    "trace file missing": (
        ["env.load=trace", "env.trace_path={tmp}/nope.csv"], "trace_path: no such file", 2,
    ),
    "trace file empty": (
        ["env.load=trace", "env.trace_path={tmp}/empty.csv"], "holds no request counts", 2,
    ),
    "trace file not numeric": (
        ["env.load=trace", "env.trace_path={tmp}/words.csv"], "row 2 is not a number: 'b'", 2,
    ),
    "unknown forecast": (["env.forecast=crystal"], "forecast must be one of none, naive", 2),
    "lstm forecast without a forecaster": (
        ["env.forecast=lstm"], "forecast_model: forecast=lstm needs a trained forecaster", 2,
    ),
    "forecaster folder missing": (
        ["env.forecast=lstm", "env.forecast_model={tmp}/nope"], "nope: no such folder", 2,
    ),
    "unwritable checkpoint folder": (
        ["train.checkpoint_dir={tmp}/a_file/checkpoints"],
        "train.checkpoint_dir={tmp}/a_file/checkpoints: cannot create it (Not a directory)", 2,
    ),
    "unreachable MLflow server": (
        ["tracking.uri=http://127.0.0.1:9"],
        "MLflow tracking server http://127.0.0.1:9 is unreachable", 2,
    ),
    "MLflow store without its database driver": (
        ["tracking.uri=mysql://u@127.0.0.1:9/db"],
        "cannot open the MLflow store mysql://u@127.0.0.1:9/db: the database driver for mysql:// "
        "URLs (MySQLdb) is not installed: pip install mysqlclient", 2,
    ),
    "unreachable Optuna storage": (
        ["-m", "search=threshold", "hydra.sweeper.storage=sqlite:////proc/none/optuna.db"],
        "cannot create the directory of sqlite:////proc/none/optuna.db", 2,
    ),
    "Optuna storage of an unknown kind": (
        ["-m", "search=threshold", "hydra.sweeper.storage=nosuchdb://h/db"],
        "cannot open the Optuna storage nosuchdb://h/db", 2,
    ),
    "misspelt search preset": (
        ["-m", "search=thresold"],
        "unknown search option 'thresold' (did you mean 'threshold'?)", 2,
    ),
    "malformed search expression": (
        ["-m", "search=threshold", "algo.upper=interval(1,"],
        "malformed override: no viable alternative at input 'interval(1,'", 2,
    ),
    "search range upside down": (
        ["-m", "search=threshold", "algo.upper=interval(95.0, 50.0)"],
        "search expression 'algo.upper=interval(95.0, 50.0)': ", 2,
    ),
    "search over an impossible range": (
        ["-m", "search=threshold", "algo.upper=tag(log, interval(-1.0, 1.0))"],
        "search expression 'algo.upper=tag(log, interval(-1.0, 1.0))'", 2,
    ),
    "unknown sampler": (
        ["-m", "search=threshold", "hydra.sweeper.sampler.name=sobol"],
        "unknown sampler 'sobol'", 2,
    ),
    "unknown pruner": (
        ["-m", "search=threshold", "hydra.sweeper.pruner.name=early"], "unknown pruner 'early'", 2,
    ),
    "zero trials": (
        ["-m", "search=threshold", "hydra.sweeper.n_trials=0"],
        "hydra.sweeper.n_trials must be a positive integer, got 0", 2,
    ),
    "a launcher without a key the preset sets": (
        ["-m", "experiment=quick", "hydra/launcher=basic"],
        "raised while composing config: Key 'n_jobs' not in 'BasicLauncherConf'", 2,
    ),
    "misspelt option in a preset's grid": (
        ["experiment=quick", "algo=threshold,thresold"],  # the preset makes it a grid
        "unknown algo option 'thresold' (did you mean 'threshold'?)", 2,
    ),
    "a switch that is not a boolean": (
        ["tracking.background=maybe"], "tracking.background must be true or false", 2,
    ),
    "a period that is a boolean": (
        ["train.eval_every=true"], "train.eval_every must be an integer >= 0", 2,
    ),
    "an evaluation seed offset that is not a number": (
        ["eval.seed_offset=abc"], "eval.seed_offset must be an integer from 0", 2,
    ),
    "evaluation seeds overlapping the training seeds": (
        ["eval.seed_offset=0"], "eval.seed_offset=0 makes the evaluation seeds (from 0) overlap", 2,
    ),
    "a negative evaluation seed offset": (
        ["eval.seed_offset=-5"], "eval.seed_offset must be an integer from 0", 2,
    ),
    "a list for a name": (["tracking.run_name=[a]"], "tracking.run_name must be a name", 2),
    "tags that are not a mapping": (["tracking.tags=5"], "tracking.tags must map tag names", 2),
    "a tag that would overwrite the run's provenance": (
        ["+tracking.tags={git.commit: deadbeef}"], "tracking.tags.git.commit: tags starting", 2,
    ),
    "an SB3 count of zero": (["algo=ppo", "algo.n_epochs=0"], "algo.n_epochs must be >= 1", 2),
    "a DQN minibatch of zero": (
        ["algo=dqn", "algo.batch_size=0"], "algo.batch_size must be >= 1, got 0 (dqn)", 2,
    ),
    "a discount above one": (["algo=ppo", "algo.gamma=1.5"], "algo.gamma must be from 0 to 1", 2),
    "threshold on an env without load and queue": (
        ["env=scheduler"], "threshold needs an env that reports load and queue", 2,
    ),
    "a gymnasium task whose package is missing": (
        ["env=gym", "env.id=CarRacing-v3", "algo=random"],
        "needs a package that is not installed", 2,
    ),
    "a window per copy": (
        ["env=gym", "env.id=CartPole-v1", "+env.render_mode=human", "algo=random"],
        "render_mode=human opens a window per copy", 2,
    ),
    "a store MLflow has no kind of": (
        ["tracking.uri=foo://bar"], "tracking store foo://bar: MLflow has no foo:// store", 2,
    ),
    "a bare path for the store": (
        ["tracking.uri=mlflow.db"], "is a folder store (MLflow's retired file backend)", 2,
    ),
    "a SQLite URL with two slashes": (
        ["tracking.uri=sqlite://x.db"], "a SQLite URL names its file after three slashes", 2,
    ),
    "an in-memory tracking store": (
        ["tracking.uri=sqlite://"], "tracking store sqlite:// is an in-memory database", 2,
    ),
    "an in-memory Optuna storage": (
        ["-m", "search=threshold", "hydra.sweeper.storage=sqlite://"],
        "an in-memory SQLite database is private to each process", 2,
    ),
    "a misspelt key searched by a sweep": (
        ["-m", "search=threshold", "algo.uper=interval(50.0,90.0)"],
        "unknown config key 'algo.uper' (did you mean 'algo.upper'?)", 2,
    ),
    "a searched range with a value that cannot work": (
        ["-m", "search=threshold", "train.num_envs=int(interval(0,4))"],
        "train.num_envs must be a positive integer, got 0 (a value in the searched range", 2,
    ),
    "an SB3 setting searched over a value that cannot work": (
        ["-m", "search=ppo", "algo.n_epochs=choice(5,0)"],
        "algo.n_epochs must be >= 1, got 0 (ppo) (a value in the searched range of "
        "algo.n_epochs: 0)", 2,
    ),
    "a Q-learning range whose far end cannot work": (
        ["-m", "search=qlearning", "algo.learning_rate=interval(0.5,1.5)"],
        "algo.learning_rate must be in (0, 1], got 1.5 (a value in the searched range of", 2,
    ),
    "an env value a sweep would reach late": (
        ["-m", "search=threshold", "env.load=choice(spike,bogus)"],
        "load must be one of steady, sine_curve, sinusoidal, spike, poisson, random, trace; got "
        "'bogus' (a value in the searched range of env.load: 'bogus')", 2,
    ),
    "an env value late in a checked grid": (
        ["-m", "hydra/sweeper=rlbench_grid", "env.load=spike,bogus"],
        "got 'bogus' (in the job with overrides ['env.load=bogus'", 2,
    ),
    "trial seeds past the largest seed": (
        ["-m", "search=threshold", "hydra.sweeper.trial_seeds=3", "seed=9223372036854775806"],
        "trains seeds up to 9223372036854775808, past 2**63-1", 2,
    ),
    "an SB3 value late in a checked grid": (
        ["-m", "hydra/sweeper=rlbench_grid", "algo=dqn", "algo.batch_size=32,0"],
        "algo.batch_size must be >= 1, got 0 (dqn) (in the job with overrides", 2,
    ),
    "two directions for one score": (
        ["-m", "search=threshold", "hydra.sweeper.direction=[maximize,minimize]"],
        "rlbench-train returns one score (test/mean_return): give one direction", 2,
    ),
    "a sweep folder that cannot be made": (
        ["-m", "search=threshold", "hydra.sweep.dir={tmp}/a_file/sweep"],
        "a_file/sweep: cannot create it", 2,
    ),
    "a bad value late in a checked grid": (
        ["-m", "hydra/sweeper=rlbench_grid", "seed=0,-1"],
        "seed must be an integer >= 0, got -1 (in the job with overrides", 2,
    ),
    "print the config of a multirun": (["--cfg=job", "-m"], "Only one of --run, --multirun", 2),
    "an unknown flag": (["--foo"], "rlbench-train: unrecognized arguments: --foo", 2),
    "reproduce an unknown run": (["+reproduce=0123abcd"], "no MLflow run '0123abcd' in sqlite:", 2),
    "reproduce with a changed setting": (
        ["+reproduce=0123abcd", "seed=3"], "drop 'seed=3' (only tracking.*, device and hydra.*", 2,
    ),
}  # fmt: skip


def _files(tmp: Path) -> None:
    (tmp / "empty.csv").write_text("")
    (tmp / "words.csv").write_text("a\nb\n")
    (tmp / "a_file").write_text("not a folder\n")


def assert_one_clear_line(result, message: str, code: int) -> None:
    assert result.code == code, (result.code, result.err[-2000:])
    errors = result.error_lines()
    assert len(errors) == 1 and message in errors[0], result.err[-2000:]
    assert "Traceback" not in result.err + result.out
    assert "HYDRA_FULL_ERROR" not in result.err  # the hint that follows unexpected errors only


def assert_nothing_written(mlflow_store, tmp: Path) -> None:
    assert mlflow_store.runs() == []  # rejected before any MLflow run was opened
    assert not [p for p in (tmp / "outputs" / "checkpoints").rglob("*") if p.is_file()]
    assert not list(tmp.rglob("model.*")) and not list(tmp.rglob("*.tmp"))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, cli, mlflow_store, tmp_path):
    overrides, message, code = CASES[case]
    _files(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in overrides]
    store = [] if any("tracking.uri" in a for a in args) else mlflow_store.overrides()
    flags = [a for a in args if a.startswith("-")]
    if any(a.startswith("search=") for a in args):  # an Optuna sweep: its own storage
        flags.append(f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db")
    args = [a for a in args if not a.startswith("-")]
    budget = [] if any(a.startswith("+reproduce") for a in args) else ["debug=fast"]
    result = cli(*flags, *args, *store, *budget)
    assert_one_clear_line(result, message.replace("{tmp}", str(tmp_path)), code)
    assert_nothing_written(mlflow_store, tmp_path)


def test_an_unwritable_outputs_folder(cli, mlflow_store, tmp_path):
    (tmp_path / "outputs").write_text("a file where the outputs folder should be\n")
    result = cli(*mlflow_store.overrides(), "debug=fast")
    assert_one_clear_line(result, "cannot use outputs/runs/", 2)
    assert "Not a directory (is the folder writable?" in result.err
    assert mlflow_store.runs() == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_outputs_folder(cli, mlflow_store, tmp_path):
    (tmp_path / "outputs").mkdir(mode=0o500)
    try:
        result = cli(*mlflow_store.overrides(), "debug=fast")
    finally:
        (tmp_path / "outputs").chmod(0o700)
    assert_one_clear_line(result, "Permission denied (is the folder writable?", 2)
    assert mlflow_store.runs() == []


# --------------------------------------------------------------------------- checkpoints
RESUME = ["algo=qlearning", "debug=fast", "resume=true"]


def checkpoint_folder(tmp: Path, overrides: list[str]) -> Path:
    """Where ``rlbench-train <overrides>`` keeps its checkpoints (the folder resume reads)."""
    from hydra import compose, initialize_config_dir

    from rlbench.config import CONF_DIR
    from rlbench.run.checkpoints import run_key
    from rlbench.tracking import flatten_config

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return tmp / "outputs" / "checkpoints" / run_key(flatten_config(cfg))


def saved_agent(algo: str, path: Path, damage=None) -> None:
    """An untrained ``algo`` agent for this run's environment, saved at 1024 steps."""
    from rlbench.agents import build_agent
    from rlbench.envs import make_vec

    venv = make_vec("rlbench/Autoscaling-v0", 4, seed=0, horizon=64)
    agent = build_agent({"name": algo}, venv, seed=0)
    agent.num_steps = 1024
    if damage is not None:
        damage(agent)
    agent.save(path)


def plant(folder: Path, algo_in_state: str, write_model) -> None:
    folder.mkdir(parents=True)
    state = {"mlflow_run_id": None, "steps": 1024, "algo": algo_in_state, "best_score": None}
    (folder / "state.json").write_text(json.dumps(state))
    write_model(folder / "last.npz")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("corrupt model zip", "is not a valid rlbench qlearning model: not a readable zip"),
        ("corrupt Q-table", "is not a valid rlbench qlearning model: Q-table holds NaN"),
        ("checkpoint of another algorithm", "holds a threshold checkpoint, not qlearning"),
        ("model file of another algorithm", "holds a 'threshold' model, not a 'qlearning' one"),
    ],
)
def test_resuming_from_a_bad_checkpoint(case, message, cli, mlflow_store, tmp_path):
    folder = checkpoint_folder(tmp_path, RESUME)
    if case == "corrupt model zip":
        plant(folder, "qlearning", lambda p: p.write_bytes(b"PK\x03\x04 half a zip"))
    elif case == "corrupt Q-table":

        def damage(agent):
            agent.q[7, 1] = np.nan

        plant(folder, "qlearning", lambda p: saved_agent("qlearning", p, damage))
    elif case == "checkpoint of another algorithm":
        plant(folder, "threshold", lambda p: saved_agent("threshold", p))
    else:  # the state says qlearning; the file says otherwise
        plant(folder, "qlearning", lambda p: saved_agent("threshold", p))
    before = {p: p.read_bytes() for p in folder.iterdir()}
    result = cli(*mlflow_store.overrides(), *RESUME)
    assert_one_clear_line(result, message, 2)
    assert f"delete {folder.relative_to(tmp_path)} to start afresh" in result.err
    assert mlflow_store.runs() == []
    assert {p: p.read_bytes() for p in folder.iterdir()} == before  # left as it was


def test_full_tracebacks_on_request(cli, monkeypatch):
    from rlbench.errors import UserError

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(UserError, match="resume must be true or false"):
        cli("resume=maybe", "tracking.enabled=false")
