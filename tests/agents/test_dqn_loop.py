"""rlbench's DQN methods (rlbench/agents/dqn_loop.py) against SB3's own: the same update, the
same epsilon-greedy choices, SB3's methods wherever ours do not apply."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from agent_fakes import make_fake
from stable_baselines3 import DQN

from rlbench.agents.dqn_loop import LeanDQN, lean_enough
from rlbench.agents.sb3_agents import DQNAgent  # SB3's: algo=dqn is mostly rlbench's numpy DQN

BASE = {"name": "dqn", "learning_starts": 20, "buffer_size": 500, "batch_size": 16}


def filled(settings: dict, seed: int = 0):
    """An agent (4 fake copies) after 200 steps: a replay buffer to sample, weights moved."""
    agent = DQNAgent(make_fake(n=4, seed=seed), {**BASE, **settings}, seed, "cpu")
    agent.learn(200)
    return agent


def train_with(agent, train, steps: int = 6) -> tuple[dict, float]:
    """Parameters and logged loss after ``train(model, steps, batch)``; the state put back."""
    model = agent.model
    saved = (
        copy.deepcopy(model.policy.state_dict()),
        copy.deepcopy(model.policy.optimizer.state_dict()),
        np.random.get_state(),
        model._n_updates,
    )
    train(model, steps, model.batch_size)
    params = {k: v.clone() for k, v in model.policy.state_dict().items()}
    loss = model.logger.name_to_value["train/loss"]
    policy_state, optimizer_state, rng, n_updates = saved
    model.policy.load_state_dict(policy_state)
    model.policy.optimizer.load_state_dict(optimizer_state)
    np.random.set_state(rng)
    model._n_updates = n_updates
    return params, loss


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"policy_kwargs": {"activation_fn": "tanh", "net_arch": [16, 8]}},
        {"max_grad_norm": 0.01, "gamma": 0.5},
        {"policy_kwargs": {"net_arch": []}, "learning_rate": 0.05},
        {"policy_kwargs": {"optimizer_class": "sgd"}},
    ],
    ids=["defaults", "tanh", "tight-clip", "linear", "sgd"],
)
def test_update_gives_sb3s_parameters_and_loss(settings):
    agent = filled(settings)
    assert lean_enough(agent.model)
    before = {k: v.clone() for k, v in agent.model.policy.state_dict().items()}
    sb3_params, sb3_loss = train_with(agent, DQN.train)
    ours_params, ours_loss = train_with(agent, LeanDQN.train)
    moved = 0
    for name, value in sb3_params.items():
        moved += not torch.equal(value, before[name])
        torch.testing.assert_close(ours_params[name], value, atol=2e-5, rtol=1e-4, msg=name)
    assert moved >= 2  # the Q-network's layers moved (the target network does not here)
    assert ours_loss == pytest.approx(sb3_loss, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("epsilon", [0.0, 0.5, 1.0])
def test_choices_are_sb3s_own_with_the_same_random_streams(epsilon):
    agent = filled({})
    model = agent.model
    model.exploration_rate = epsilon
    obs = np.random.default_rng(1).random((40, 4, 2)).astype(np.float32)
    state = (np.random.get_state(), copy.deepcopy(model.action_space.np_random.bit_generator.state))

    def choices(predict):
        np.random.set_state(state[0])
        model.action_space.np_random.bit_generator.state = state[1]
        return [predict(model, batch, deterministic=False)[0].tolist() for batch in obs]

    assert choices(LeanDQN.predict) == choices(DQN.predict)
    greedy = [LeanDQN.predict(model, b, deterministic=True)[0].tolist() for b in obs]
    assert greedy == [DQN.predict(model, b, deterministic=True)[0].tolist() for b in obs]


def test_a_single_observation_goes_to_sb3():
    agent = filled({})
    action, _ = agent.model.predict(np.array([0.5, 0.0], dtype=np.float32), deterministic=True)
    assert np.ndim(action) == 0 and int(action) in {0, 1, 2}


def test_a_run_learns_and_repeats_exactly():
    def run():
        settings = {**BASE, "learning_starts": 200, "buffer_size": 5000, "batch_size": 32}
        settings |= {"exploration_fraction": 0.5, "target_update_interval": 50, "gamma": 0.9}
        settings["learning_rate"] = 1e-3
        agent = DQNAgent(make_fake(n=4, seed=1), settings, 1, "cpu")
        reports = []
        agent.learn(8000, lambda n, stats: reports.append(stats))
        return agent, reports

    agent, reports = run()
    again, _ = run()
    assert type(agent.model) is LeanDQN
    for a, b in zip(agent.model.policy.parameters(), again.model.policy.parameters(), strict=True):
        assert torch.equal(a, b)
    returns = [r["episode_return"] for r in reports if "episode_return" in r]
    # it learns to keep the load near 50 % (SB3's own loop: -5.4 -> -2.1, the same numbers)
    assert np.mean(returns[-2:]) > returns[0] + 2.0
