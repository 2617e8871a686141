"""pi(a|s) for every agent: what serving logs as a propensity and off-policy evaluation needs.

Rows are distributions; a deterministic policy's pi is one-hot on its ``predict``; and for the
agents that explore, the frequencies of ``predict(deterministic=False)`` match pi.
"""

from __future__ import annotations

import numpy as np
import pytest

from rlbench.agents import build_agent
from rlbench.envs import make_vec

AUTOSCALING = "rlbench/Autoscaling-v0"
CASES = {
    "random": (AUTOSCALING, {"name": "random"}),
    "static": (AUTOSCALING, {"name": "static"}),
    "threshold": (AUTOSCALING, {"name": "threshold", "cooldown": 2}),
    "qlearning": (AUTOSCALING, {"name": "qlearning", "bins": 6, "epsilon": 0.5}),
    "ppo": (AUTOSCALING, {"name": "ppo", "n_steps": 16, "batch_size": 40, "n_epochs": 1}),
    "dqn": (AUTOSCALING, {"name": "dqn", "learning_starts": 20, "buffer_size": 500}),
    "ucb": ("rlbench/Recommender-v0", {"name": "ucb"}),
    "recommender_rule": ("rlbench/Recommender-v0", {"name": "recommender_rule"}),
    "user_feedback": ("rlbench/ScriptScheduler-v0", {"name": "user_feedback"}),
    "hybrid": ("rlbench/ScriptScheduler-v0", {"name": "hybrid"}),
    "runbook": ("rlbench/SelfHealing-v0", {"name": "runbook"}),
}
EXPLORING = {"random", "qlearning", "ppo", "dqn"}


def agent_and_observations(algo: str, n: int = 5):
    """A fresh agent and a batch of varied observations of its environment."""
    env_id, cfg = CASES[algo]
    venv = make_vec(env_id, n, seed=3)
    agent = build_agent(cfg, venv, seed=3, device="cpu")
    obs = venv.reset()
    rng = np.random.default_rng(0)
    for _ in range(7):  # a few steps in, so the copies differ
        obs, *_ = venv.step(rng.integers(venv.action_space.n, size=n))
    if algo == "dqn":  # a fresh DQN has not started its exploration schedule
        agent.exploration_rate = 0.3
    if algo == "ppo":  # a fresh network is near uniform: skew it so a wrong pi would show
        import torch

        with torch.no_grad():
            agent.model.policy.action_net.bias.copy_(torch.tensor([1.5, 0.0, -1.0]))
    return agent, obs, int(venv.action_space.n)


@pytest.mark.parametrize("algo", list(CASES))
def test_rows_are_distributions_and_deterministic_pi_is_one_hot_on_predict(algo):
    agent, obs, n_actions = agent_and_observations(algo)
    for deterministic in (False, True):
        pi = agent.action_probabilities(obs, deterministic=deterministic)
        assert pi.shape == (len(obs), n_actions)
        assert np.all(pi >= 0)
        np.testing.assert_allclose(pi.sum(axis=1), 1.0, rtol=1e-6)
    pi = agent.action_probabilities(obs, deterministic=True)
    if algo != "random":  # random stays uniform: it has no deterministic policy
        expected = agent.predict(obs, deterministic=True)
        np.testing.assert_array_equal(pi.argmax(axis=1), expected)
        np.testing.assert_array_equal(pi.max(axis=1), 1.0)


@pytest.mark.parametrize("algo", sorted(EXPLORING))
def test_sampling_predict_matches_pi(algo):
    agent, obs, _ = agent_and_observations(algo, n=4)
    pi = agent.action_probabilities(obs, deterministic=False)
    assert (pi.max(axis=1) < 1.0).all(), "an exploring policy puts mass on several actions"
    draws = 1500
    counts = np.zeros_like(pi)
    for _ in range(draws):
        counts[np.arange(len(obs)), agent.predict(obs, deterministic=False)] += 1
    freq = counts / draws
    tolerance = 4.5 * np.sqrt(pi * (1 - pi) / draws) + 1e-3
    assert np.all(np.abs(freq - pi) <= tolerance), (freq, pi)


def test_asking_for_pi_does_not_step_a_stateful_rule():
    """threshold's cooldown advances with predict only: pi is what predict would do now."""
    agent, obs, _ = agent_and_observations("threshold")
    before = agent.action_probabilities(obs)
    again = agent.action_probabilities(obs)
    np.testing.assert_array_equal(before, again)
    np.testing.assert_array_equal(before.argmax(axis=1), agent.predict(obs))


@pytest.mark.parametrize("algo", list(CASES))
def test_decide_is_predict_with_its_probabilities(algo):
    """What the decision server answers (one forward pass) is exactly predict and pi."""
    agent, obs, _ = agent_and_observations(algo)
    actions, pi = agent.decide(obs, deterministic=True)
    assert np.all(pi[np.arange(len(obs)), actions] > 0)
    if algo not in ("random", "threshold"):  # these draw or step a cooldown in predict
        np.testing.assert_array_equal(actions, agent.predict(obs, deterministic=True))
        np.testing.assert_allclose(pi, agent.action_probabilities(obs, deterministic=True))
    actions, pi = agent.decide(obs, deterministic=False)
    assert actions.shape == (len(obs),) and pi.shape[0] == len(obs)
    assert np.all(pi[np.arange(len(obs)), actions] > 0)  # a sampled action has probability > 0
