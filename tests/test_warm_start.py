"""``init_from=``: a run starts from a saved model of its algorithm (rlbench-live's simulated
retraining continues from the champion this way)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlbench.agents import build_agent
from rlbench.errors import UserError
from rlbench.offline.collect import compose
from rlbench.run.train import _warm_start, build_env, train


@pytest.fixture
def saved_ppo(tmp_path):
    cfg = compose(["algo=ppo", "debug=fast"])
    venv = build_env("rlbench/Autoscaling-v0", {"horizon": 64}, 4, 0)
    agent = build_agent(cfg.algo, venv, seed=3, device="cpu")
    agent.learn(256)
    path = tmp_path / "champion.zip"
    agent.save(path)
    return path, agent, venv


def test_a_warm_start_has_the_saved_weights_and_counts_from_zero(saved_ppo):
    path, saved, venv = saved_ppo
    agent = _warm_start(str(path), "ppo", venv, "cpu")
    assert agent.num_steps == 0
    for a, b in zip(agent.model.policy.parameters(), saved.model.policy.parameters(), strict=True):
        assert torch.equal(a, b)
    obs = np.random.default_rng(0).random((5, 7)).astype(np.float32)
    assert np.array_equal(agent.predict(obs), saved.predict(obs))


def test_a_run_with_init_from_trains_its_budget_on_top(saved_ppo, tmp_path):
    path, _, _ = saved_ppo
    cfg = compose(["algo=ppo", "debug=fast", "tracking.enabled=false", f"init_from={path}",
                   f"train.checkpoint_dir={tmp_path / 'ck'}", "train.total_steps=512",
                   "train.eval_every=0", "eval.episodes=1"])  # fmt: skip
    outcome = train(cfg)
    assert outcome.steps >= 512 and np.isfinite(outcome.score)


@pytest.mark.parametrize(
    ("algo", "which", "message"),
    [("dqn", "saved", r"holds a ppo model, not dqn: set algo=ppo"),
     ("ppo", "missing", r"no such model file")],
)  # fmt: skip
def test_a_wrong_warm_start_is_one_line(saved_ppo, tmp_path, algo, which, message):
    path, _, venv = saved_ppo
    target = str(path if which == "saved" else tmp_path / "nope.zip")
    with pytest.raises(UserError, match=message):
        _warm_start(target, algo, venv, "cpu")
