"""``rlbench-verify`` on runs logged with real baseline models, a corrupted and a tampered one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from rlbench.results.verify import main, verify_experiment

ENV = {"id": "rlbench/Autoscaling-v0", "name": "autoscaling", "load": "spike", "horizon": 40}
EVAL_SEEDS = [1_000_000, 1_000_001, 1_000_002]


def log_model_run(client, exp_id, tmp, algo, *, corrupt=False, tamper=False, config=True):
    """A run as rlbench-train leaves it: config.yaml, model/model.zip, eval/eval_episodes.csv."""
    from mlflow.entities import Param

    from rlbench.agents import build_agent
    from rlbench.envs import make_vec
    from rlbench.run.evaluate import evaluate

    run_id = client.create_run(exp_id, run_name=f"{algo}-spike-s0").info.run_id
    params = {"algo.name": algo, "seed": "0", **{f"env.{k}": str(v) for k, v in ENV.items()}}
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    folder = tmp / run_id
    folder.mkdir()
    venv = make_vec(ENV["id"], 2, seed=0, load="spike", horizon=40)
    agent = build_agent({"name": algo}, venv, seed=0)
    agent.learn(100)
    model = folder / "model.zip"
    agent.save(model)
    if corrupt:
        model.write_bytes(b"PK\x03\x04 this is not a model any more")
    kwargs = {k: v for k, v in ENV.items() if k not in ("id", "name")}
    result = evaluate(agent, ENV["id"], kwargs, EVAL_SEEDS)
    returns = result.returns + (5.0 if tamper else 0.0)
    episodes = pd.DataFrame({"episode": range(3), "seed": EVAL_SEEDS, "return": returns})
    episodes.to_csv(folder / "eval_episodes.csv", index=False)
    if config:
        cfg = {"seed": 0, "env": ENV, "algo": {"name": algo}, "eval": {"seed_offset": 1_000_000}}
        (folder / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
        client.log_artifact(run_id, str(folder / "config.yaml"))
    client.log_artifact(run_id, str(model), "model")
    client.log_artifact(run_id, str(folder / "eval_episodes.csv"), "eval")
    client.set_terminated(run_id, "FINISHED")
    return run_id, result


@pytest.fixture(scope="module")
def store(mlflow_template, tmp_path_factory):
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("verify-store")
    shutil.copyfile(mlflow_template, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    good = client.create_experiment("good", artifact_location=(root / "good").as_uri())
    bad = client.create_experiment("bad", artifact_location=(root / "bad").as_uri())
    client.create_experiment("empty", artifact_location=(root / "empty").as_uri())
    tmp = root / "files"
    tmp.mkdir()
    runs = {
        "threshold": log_model_run(client, good, tmp, "threshold"),
        # random's generator state is part of the model: the replay must start from it
        "random": log_model_run(client, good, tmp, "random", config=False),
        "static": log_model_run(client, bad, tmp, "static"),
        "corrupt": log_model_run(client, bad, tmp, "threshold", corrupt=True),
        "tampered": log_model_run(client, bad, tmp, "random", tamper=True),
    }
    return {"uri": uri, "runs": runs}


def test_valid_models_pass_and_reproduce_their_logged_returns(store, capsys):
    assert main(["--experiment", "good", "--tracking-uri", store["uri"]]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["result", "run"]
    rows = out[1:-1]
    assert len(rows) == 2
    assert all(r.startswith("PASS") and "reproduces its 3 logged evaluation episodes" in r
               for r in rows)  # fmt: skip
    assert out[-1] == "2 models: 2 passed, 0 failed"


def test_corrupted_and_tampered_models_fail_with_a_reason(store, capsys):
    assert main(["--experiment", "bad", "--tracking-uri", store["uri"]]) == 1
    lines = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()[1:-1]}
    corrupt = lines[store["runs"]["corrupt"][0][:8]]
    assert corrupt.startswith("FAIL")
    assert "model/model.zip is not a valid rlbench model: not a readable zip archive" in corrupt
    tampered = lines[store["runs"]["tampered"][0][:8]]
    logged = store["runs"]["tampered"][1].returns[0]
    assert tampered.startswith("FAIL")
    assert f"returned {logged:.6g}, logged {logged + 5:.6g}" in tampered
    assert lines[store["runs"]["static"][0][:8]].startswith("PASS")


def test_a_scored_run_without_its_model_or_its_logged_evaluation_fails(store, tmp_path):
    """Nothing to load, or nothing to reproduce: neither may pass as a check."""
    from mlflow.tracking import MlflowClient

    from rlbench.results.verify import verify_experiment

    client = MlflowClient(store["uri"])
    exp_id = client.create_experiment("holes")
    no_eval, _ = log_model_run(client, exp_id, tmp_path, "threshold")
    artifacts = Path(client.get_run(no_eval).info.artifact_uri.removeprefix("file://"))
    (artifacts / "eval" / "eval_episodes.csv").unlink()
    no_model = client.create_run(exp_id, run_name="no-model").info.run_id
    client.log_param(no_model, "algo.name", "threshold")
    client.log_metric(no_model, "test/mean_return", -5.0)
    client.set_terminated(no_model, "FINISHED")
    pruned, _ = log_model_run(client, exp_id, tmp_path, "random")  # a trial stopped early
    artifacts = Path(client.get_run(pruned).info.artifact_uri.removeprefix("file://"))
    (artifacts / "eval" / "eval_episodes.csv").unlink()
    client.set_tag(pruned, "pruned", "true")  # schema.PRUNED_TAG, as train.py sets it
    checks = {c.run_id: c for c in verify_experiment("holes", tracking_uri=store["uri"])}
    assert checks[pruned].ok, checks[pruned].detail  # it has no test to reproduce
    assert not checks[no_eval].ok and "eval_episodes.csv is missing" in checks[no_eval].detail
    assert not checks[no_model].ok and checks[no_model].detail == "no model logged under model/"


def test_filter_selects_runs(store):
    checks = verify_experiment("bad", "params.`algo.name` = 'static'", store["uri"])
    assert [(c.algo, c.ok) for c in checks] == [("static", True)]


@pytest.mark.parametrize(
    ("experiment", "message"),
    [
        ("empty", "error: no run of experiment 'empty' logged a model under model/"),
        ("missing", "error: no MLflow experiment 'missing'"),
    ],
)
def test_nothing_to_verify_is_one_line_and_exit_2(store, capsys, experiment, message):
    assert main(["--experiment", experiment, "--tracking-uri", store["uri"]]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert err.count("\n") == 1


def test_console_script_help():
    done = subprocess.run(
        [sys.executable, "-m", "rlbench.results.verify", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert "--experiment" in done.stdout and "--filter" in done.stdout
