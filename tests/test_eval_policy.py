"""``eval.policy``: which weights a run's final evaluation scores, and what it logs of them.

``final`` scores the last weights; ``best`` the weights that scored highest on the validation
seeds, the last ones validated too and winning a tie. The validation scores are scripted here
(the real validation runs, its returns are replaced) so that each branch is taken for certain;
the final evaluation and everything logged are the real ones.
"""

from __future__ import annotations

import numpy as np
import pytest

from rlbench.errors import UserError
from rlbench.run import periodic
from rlbench.tracking import schema


def compose_train(*overrides: str):
    from hydra import compose, initialize_config_dir

    from rlbench.config import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides))


def artifact_names(client, run_id: str, folder: str) -> set[str]:
    return {f.path.rsplit("/", 1)[-1] for f in client.list_artifacts(run_id, folder)}


@pytest.fixture
def scripted(monkeypatch):
    """Make the n-th validation score ``scores[n]``; returns the steps validated, in order."""
    steps: list[int] = []
    scores: list[float] = []
    real = periodic.evaluate

    def evaluate(policy, *args, **kwargs):
        result = real(policy, *args, **kwargs)
        result.returns = np.full_like(result.returns, scores[len(steps)])
        steps.append(policy.agent.num_steps)
        return result

    monkeypatch.setattr(periodic, "evaluate", evaluate)

    def script(*values: float) -> list[int]:
        scores[:] = values
        return steps

    return script


def run(mlflow_store, tmp_path, monkeypatch, *overrides: str):
    """One Q-learning job in-process (validations at 1024, 2048 and 3072 steps, 4096 in all)."""
    from rlbench.run import forked_validation
    from rlbench.run.train import train

    # validated in this process, where the script counts (tests/test_forked_validation.py
    # shows a forked validation records the same)
    monkeypatch.setattr(forked_validation, "available", lambda device="cpu": False)
    monkeypatch.chdir(tmp_path)
    cfg = compose_train(
        "algo=qlearning", "debug=fast", "train.total_steps=4096", "train.checkpoint_every=0",
        f"train.checkpoint_dir={tmp_path}/ck", *mlflow_store.overrides(), *overrides,
    )  # fmt: skip
    outcome = train(cfg)
    (record,) = mlflow_store.runs()
    record.cfg = cfg
    return outcome, record


def replayed_returns(mlflow_store, record, artifact: str, tmp_path) -> list[float]:
    """The final evaluation's episodes played again by the run's logged model ``artifact``."""
    from rlbench.agents import load_agent
    from rlbench.config import env_spec
    from rlbench.envs import make_vec
    from rlbench.run.evaluate import evaluate, evaluation_seeds

    client = mlflow_store.client()
    path = client.download_artifacts(record.info.run_id, artifact, str(tmp_path / "dl"))
    env_id, env_kwargs = env_spec(record.cfg.env)
    seeds = evaluation_seeds(0, int(record.cfg.eval.episodes), 1_000_000)
    venv = make_vec(env_id, 1, seed=0, **env_kwargs)
    agent = load_agent(path, venv, "cpu")
    return evaluate(agent, env_id, env_kwargs, seeds).returns.tolist()


def test_best_scores_the_checkpoint_that_validated_best(
    scripted, mlflow_store, tmp_path, monkeypatch
):
    steps = scripted(1.0, 9.0, 3.0, 2.0)  # the second validation best; the final weights 2.0
    outcome, record = run(mlflow_store, tmp_path, monkeypatch, "eval.policy=best")
    assert len(steps) == 4 and steps[-1] == outcome.steps  # the final weights validated too
    tags = record.data.tags
    assert tags[schema.SCORED_POLICY_TAG] == "best"
    assert tags[schema.SCORED_STEP_TAG] == str(steps[1])
    files = artifact_names(mlflow_store.client(), record.info.run_id, schema.MODEL_DIR)
    assert files == {"model.npz", "last_model.npz"}  # the scored weights, and the last ones
    model = f"{schema.MODEL_DIR}/model.npz"
    last = f"{schema.MODEL_DIR}/last_model.npz"
    # the score is the selected checkpoint's: model.npz replays it, the last weights do not
    assert replayed_returns(mlflow_store, record, model, tmp_path) == outcome.returns
    assert replayed_returns(mlflow_store, record, last, tmp_path) != outcome.returns


def test_best_keeps_the_final_weights_when_they_tie(scripted, mlflow_store, tmp_path, monkeypatch):
    steps = scripted(1.0, 9.0, 3.0, 9.0)
    outcome, record = run(mlflow_store, tmp_path, monkeypatch, "eval.policy=best")
    assert record.data.tags[schema.SCORED_STEP_TAG] == str(outcome.steps) == str(steps[-1])
    files = artifact_names(mlflow_store.client(), record.info.run_id, schema.MODEL_DIR)
    assert files == {"model.npz"}  # the final weights are the scored ones: no second copy


def test_final_is_the_default_and_keeps_the_best_checkpoint_beside(
    scripted, mlflow_store, tmp_path, monkeypatch
):
    steps = scripted(1.0, 9.0, 3.0)
    outcome, record = run(mlflow_store, tmp_path, monkeypatch)
    assert len(steps) == 3  # no extra validation of the final weights
    tags = record.data.tags
    assert tags[schema.SCORED_POLICY_TAG] == "final"
    assert tags[schema.SCORED_STEP_TAG] == str(outcome.steps)
    files = artifact_names(mlflow_store.client(), record.info.run_id, schema.MODEL_DIR)
    assert files == {"model.npz", "best_model.npz"}
    model = f"{schema.MODEL_DIR}/model.npz"
    assert replayed_returns(mlflow_store, record, model, tmp_path) == outcome.returns


def test_an_unknown_policy_is_one_clear_error(mlflow_store, tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"eval\.policy must be one of final, best, got 'last'"):
        run(mlflow_store, tmp_path, monkeypatch, "eval.policy=last")
