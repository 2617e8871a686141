"""The same config and seed give the same evaluation returns, bit for bit, for every algorithm;
``rlbench-train +reproduce=<run id>`` reruns a logged run and says whether it matched."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from rlbench.agents import AGENTS

ENVS = ["autoscaling", "scheduler", "recommender", "selfhealing"]
# autoscaling with Poisson arrivals and noise: the environment's own randomness must be seeded too
STOCHASTIC = ["env.load=poisson", "env.noise=0.1"]


def algo_options() -> dict[str, str]:
    """Every registered algorithm -> the ``algo=`` option that runs it (``<name>.yaml`` first)."""
    from rlbench.config import CONF_DIR

    found: dict[str, str] = {}
    for path in sorted(Path(CONF_DIR, "algo").glob("*.yaml")):
        name = yaml.safe_load(path.read_text()).get("name")
        if name in AGENTS and (name not in found or path.stem == name):
            found[name] = path.stem
    return found


def compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    from rlbench.config import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_every_registered_algorithm_has_a_config():
    assert sorted(algo_options()) == sorted(AGENTS)


def train_twice(option: str, tmp_path: Path):
    """Two runs of ``algo=option`` on the first environment it can run on (debug budgets)."""
    from rlbench.errors import UserError
    from rlbench.run.train import train

    for env in ENVS:
        extra = STOCHASTIC if env == "autoscaling" else []
        runs = []
        for i in range(2):
            cfg = compose(
                f"algo={option}", f"env={env}", *extra, "debug=fast", "seed=7",
                "tracking.enabled=false", f"train.checkpoint_dir={tmp_path}/ck{i}",
            )  # fmt: skip
            try:
                runs.append(train(cfg))
            except UserError as err:  # an algorithm made for another environment
                if "env" not in str(err) and "needs" not in str(err):
                    raise
                break
        if runs:
            return env, runs
    raise AssertionError(f"algo={option} runs on none of {ENVS}")


@pytest.mark.slow
@pytest.mark.parametrize("algo", sorted(algo_options()))
def test_same_config_and_seed_give_identical_returns(algo, tmp_path, monkeypatch):
    from rlbench.run.train import train

    monkeypatch.chdir(tmp_path)
    env, runs = train_twice(algo_options()[algo], tmp_path)
    first, second = (np.asarray(r.returns, dtype=np.float64) for r in runs)
    assert first.shape == (2,)  # debug=fast evaluates 2 episodes
    assert np.array_equal(first.view(np.uint64), second.view(np.uint64))
    assert runs[0].score == runs[1].score and runs[0].steps == runs[1].steps
    if env == "autoscaling":  # another seed, another run: the check above can fail
        other = train(
            compose(f"algo={algo_options()[algo]}", *STOCHASTIC, "debug=fast", "seed=8",
                    "tracking.enabled=false")
        )  # fmt: skip
        assert not np.array_equal(np.asarray(other.returns), first)


@pytest.mark.slow
def test_reproduce_reruns_a_logged_run_and_says_it_matched(cli, mlflow_store, tmp_path):
    trained = cli(*mlflow_store.overrides(), "algo=qlearning", "debug=fast", "seed=2")
    assert trained.code == 0, trained.err
    run_id = re.search(r"mlflow run: (\w+)", trained.out)[1]

    again = cli(*mlflow_store.overrides(), f"+reproduce={run_id}")
    assert again.code == 0, again.err
    assert f"reproduced run {run_id}: all 2 evaluation returns identical" in again.out
    assert len(mlflow_store.runs()) == 1  # the rerun is not a second record

    # tamper with the record: the same command now reports the difference and exits 1
    (csv,) = Path(mlflow_store.artifact_dir).rglob(f"{run_id}/artifacts/eval/eval_episodes.csv")
    lines = csv.read_text().splitlines()
    fields = lines[1].split(",")
    logged = float(fields[2])
    fields[2] = repr(float(np.nextafter(logged, np.inf)))  # one ulp away
    csv.write_text("\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n")
    differs = cli(*mlflow_store.overrides(), f"+reproduce={run_id}")
    assert differs.code == 1
    assert f"run {run_id} did NOT reproduce: episode 0 (seed " in differs.out
    assert f"logged {float(np.nextafter(logged, np.inf))!r}" in differs.out


def test_a_resumed_run_is_not_offered_as_reproducible(cli, mlflow_store):
    """A run continued from a checkpoint restarted its environments from the seed at that
    step: +reproduce says so at once instead of training and reporting a mismatch."""
    from mlflow.tracking import MlflowClient

    trained = cli(*mlflow_store.overrides(), "algo=random", "debug=fast")
    assert trained.code == 0, trained.err
    run_id = re.search(r"mlflow run: (\w+)", trained.out)[1]
    client = MlflowClient(mlflow_store.uri)
    client.set_tag(run_id, "rlbench.resumed", "true")
    client.set_tag(run_id, "rlbench.resumed_from_step", "1024")
    again = cli(*mlflow_store.overrides(), f"+reproduce={run_id}")
    assert again.code == 2
    assert f"run {run_id} was resumed from a checkpoint at step 1024" in again.err


def test_a_changed_input_file_is_another_job_and_cannot_be_reproduced(cli, mlflow_store, tmp_path):
    """The same config over another request trace (or a grown log, a new forecaster behind an
    alias) is another job: its run key differs, so resume=true cannot reuse the old run, and
    +reproduce refuses instead of calling a rerun on other data a match or a mismatch."""
    import json

    from mlflow.tracking import MlflowClient

    from rlbench.run.inputs import path_digest

    trace = tmp_path / "requests.csv"
    trace.write_text("".join(f"{800 + 10 * (i % 50)}\n" for i in range(400)))
    args = (*mlflow_store.overrides(), "algo=threshold", "debug=fast", "env.load=trace",
            f"env.trace_path={trace}")  # fmt: skip
    first = cli(*args)
    assert first.code == 0, first.err
    run_id = re.search(r"mlflow run: (\w+)", first.out)[1]
    client = MlflowClient(mlflow_store.uri)
    tags = client.get_run(run_id).data.tags
    assert json.loads(tags["rlbench.inputs"]) == {"env.trace_path": path_digest(trace)}

    trace.write_text("".join(f"{1600 + 10 * (i % 50)}\n" for i in range(400)))  # the load doubled
    refused = cli(*mlflow_store.overrides(), f"+reproduce={run_id}")
    assert refused.code == 2, refused.err
    assert f"run {run_id} read env.trace_path={trace} with content sha256:" in refused.err
    assert "restore that input to reproduce the run" in refused.err

    second = cli(*args)
    assert second.code == 0, second.err
    other = re.search(r"mlflow run: (\w+)", second.out)[1]
    assert client.get_run(other).data.tags["rlbench.run_key"] != tags["rlbench.run_key"]


def test_an_input_is_keyed_by_its_content_not_how_its_path_is_spelt():
    """``logs/a``, ``logs/a/`` and the absolute path of one log are one job (resume=true
    reuses its run); another content under the same path is another job."""
    from rlbench.run.checkpoints import run_key

    def flat(path: str, digest: str) -> dict[str, str]:
        return {"algo.name": "cql", "algo.data": path, "seed": "0", "inputs.algo.data": digest}

    same = {run_key(flat(p, "sha256:aa")) for p in ("logs/a", "logs/a/", "/home/u/logs/a")}
    assert len(same) == 1
    assert run_key(flat("logs/a", "sha256:bb")) not in same
    # a path that does not exist has no content: its spelling is all there is to key on
    assert run_key(flat("logs/x", "missing")) != run_key(flat("logs/y", "missing"))


def test_a_study_sees_an_input_by_content_not_by_how_its_path_is_spelt(tmp_path, monkeypatch):
    """A sweep continued with the same trace named another way continues its study; a trace
    with other content is another problem."""
    from omegaconf import OmegaConf

    from rlbench.run.job_checks import learned_settings

    monkeypatch.chdir(tmp_path)
    (tmp_path / "traces").mkdir()
    trace = tmp_path / "traces" / "load.csv"
    trace.write_text("800\n900\n")

    def settings(path: str) -> dict[str, str]:
        job = OmegaConf.create({"seed": 0, "env": {"load": "trace", "trace_path": path}})
        return learned_settings(job, [])

    assert settings("traces/load.csv") == settings(str(trace)) == settings("./traces/load.csv")
    before = settings("traces/load.csv")
    trace.write_text("1600\n1800\n")
    assert settings("traces/load.csv") != before
