"""rlbench's PPO loops (rlbench/agents/ppo_loop.py) against SB3's own: the same update, a
rollout whose numbers are the policy's, SB3's loops wherever ours do not apply."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from agent_fakes import BoxActionCore, make_fake
from stable_baselines3 import PPO

from rlbench.agents import build_agent, load_agent
from rlbench.agents.ppo_loop import LeanPPO, lean_enough, sample_categorical
from rlbench.errors import UserError

pytestmark = pytest.mark.filterwarnings("ignore:You have specified a mini-batch size")
BASE = {"name": "ppo", "n_steps": 16, "batch_size": 24, "n_epochs": 3}
BUFFER = ("observations", "actions", "rewards", "returns", "episode_starts", "values")
BUFFER += ("log_probs", "advantages")


def rollout(settings: dict, seed: int = 0, core=None):
    """An agent (4 fake copies) whose buffer holds one rollout of 16 x 4 steps."""
    env = make_fake(n=4, seed=seed) if core is None else make_fake(n=4, seed=seed, core=core)
    agent = build_agent({**BASE, **settings}, env, seed, "cpu")
    model = agent.model
    with agent._own_rng():
        _, callback = model._setup_learn(64, callback=None)
        assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    return agent


def train_with(agent, train) -> tuple[dict, dict]:
    """Parameters and logged statistics after ``train(model)``, then the state put back."""
    model = agent.model
    saved = (
        copy.deepcopy(model.policy.state_dict()),
        copy.deepcopy(model.policy.optimizer.state_dict()),
        {k: getattr(model.rollout_buffer, k).copy() for k in BUFFER},
        np.random.get_state(),
        model._n_updates,
    )
    train(model)
    params = {k: v.clone() for k, v in model.policy.state_dict().items()}
    logged = {k: v for k, v in model.logger.name_to_value.items() if k.startswith("train/")}
    policy_state, optimizer_state, arrays, rng, n_updates = saved
    model.policy.load_state_dict(policy_state)
    model.policy.optimizer.load_state_dict(optimizer_state)
    for key, array in arrays.items():
        setattr(model.rollout_buffer, key, array)
    model.rollout_buffer.generator_ready = False  # SB3's get() flattened the arrays in place
    np.random.set_state(rng)
    model._n_updates = n_updates
    return params, logged


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"policy_kwargs": {"activation_fn": "relu", "net_arch": [16, 8]}},
        {"clip_range_vf": 0.05, "ent_coef": 0.01, "clip_range": 0.1},
        {"normalize_advantage": False, "max_grad_norm": 0.01, "batch_size": 64},
        {"target_kl": 0.0001, "learning_rate": 0.05},
        {"policy_kwargs": {"net_arch": []}, "n_epochs": 1},
        {"policy_kwargs": {"optimizer_class": "sgd"}},
    ],
    ids=["defaults", "relu", "value-clip", "no-norm-tight-clip", "target-kl", "linear", "sgd"],
)
def test_update_gives_sb3s_parameters_and_statistics(settings):
    agent = rollout(settings)
    assert lean_enough(agent.model)
    sb3_params, sb3_logged = train_with(agent, PPO.train)
    ours_params, ours_logged = train_with(agent, LeanPPO.train)
    before = agent.model.policy.state_dict()
    for name, value in sb3_params.items():
        assert not torch.equal(value, before[name]) or "log_std" in name  # it did move
        torch.testing.assert_close(ours_params[name], value, atol=2e-5, rtol=1e-4, msg=name)
    assert ours_logged.keys() == sb3_logged.keys()
    for key, value in sb3_logged.items():
        assert ours_logged[key] == pytest.approx(value, rel=1e-3, abs=1e-5), key


def test_rollout_records_the_policys_own_values_and_probabilities():
    agent = rollout({"gamma": 0.9})
    model, buf = agent.model, agent.model.rollout_buffer
    obs = torch.as_tensor(buf.observations.reshape(-1, 2))
    actions = torch.as_tensor(buf.actions.reshape(-1)).long()
    with torch.no_grad():
        values, log_prob, _ = model.policy.evaluate_actions(obs, actions)
    np.testing.assert_allclose(buf.values.reshape(-1), values.numpy().ravel(), atol=1e-5)
    np.testing.assert_allclose(buf.log_probs.reshape(-1), log_prob.numpy(), atol=1e-5)
    assert set(np.unique(buf.actions)) <= {0, 1, 2}
    assert buf.full and model.num_timesteps == 64


def test_a_time_limit_is_bootstrapped_with_the_terminal_states_value():
    env = make_fake(n=4, seed=3)  # every copy is truncated after 10 steps
    agent = build_agent({**BASE, "gamma": 0.9}, env, 3, "cpu")
    model = agent.model
    seen = []
    step = env.step

    def recording_step(actions):
        obs, rewards, dones, infos = step(actions)
        seen.append((rewards.copy(), dones.copy(), copy.deepcopy(infos)))
        return obs, rewards, dones, infos

    env.step = recording_step
    with agent._own_rng():
        _, callback = model._setup_learn(64, callback=None)
        model.collect_rollouts(env, callback, model.rollout_buffer, model.n_steps)
    truncated = 0
    for t, (rewards, dones, infos) in enumerate(seen):
        expected = rewards.copy()
        for i in np.flatnonzero(dones):
            terminal = torch.as_tensor(infos[i]["terminal_observation"][None])
            with torch.no_grad():
                expected[i] += 0.9 * model.policy.predict_values(terminal).item()
            truncated += 1
        np.testing.assert_allclose(model.rollout_buffer.rewards[t], expected, atol=1e-5)
    assert truncated == 4  # each copy's tenth step


def test_actions_are_drawn_with_the_policys_probabilities():
    logits = np.array([[0.0, 1.0, 2.0], [5.0, -5.0, 0.0]], dtype=np.float32)
    np.random.seed(0)
    draws = np.stack([sample_categorical(logits)[0] for _ in range(20_000)])
    probs = np.exp(logits.astype(np.float64))
    probs /= probs.sum(axis=1, keepdims=True)
    for row in range(2):
        freq = np.bincount(draws[:, row], minlength=3) / len(draws)
        np.testing.assert_allclose(freq, probs[row], atol=0.012)
    actions, log_probs = sample_categorical(logits)
    np.testing.assert_allclose(log_probs, np.log(probs[[0, 1], actions]), rtol=1e-6)


def test_sb3s_loops_run_where_ours_do_not_apply():
    agent = build_agent(BASE, make_fake(n=4, core=BoxActionCore), 0, "cpu")
    assert not lean_enough(agent.model)
    agent.learn(128)
    assert agent.num_steps == 128
    assert agent.check_finite()


def test_a_run_learns_with_our_loops_and_repeats_exactly():
    def run():
        settings = {**BASE, "n_steps": 32, "batch_size": 32, "n_epochs": 4, "learning_rate": 3e-3}
        agent = build_agent(settings, make_fake(n=4, seed=1), 1, "cpu")
        reports = []
        agent.learn(3200, lambda n, stats: reports.append(stats))
        return agent, reports

    agent, reports = run()
    again, _ = run()
    for a, b in zip(agent.model.policy.parameters(), again.model.policy.parameters(), strict=True):
        assert torch.equal(a, b)
    early = np.mean([r["episode_return"] for r in reports[:3]])
    late = np.mean([r["episode_return"] for r in reports[-3:]])
    assert late > early + 1.5  # it learns to keep the load near 50 % (SB3's loops: -4.6 -> -1.6)


def test_algo_loop_chooses_sb3s_loops_and_a_wrong_value_is_one_line():
    sb3 = build_agent({**BASE, "loop": "sb3"}, make_fake(n=4), 0, "cpu")
    assert type(sb3.model) is PPO
    assert type(build_agent(BASE, make_fake(n=4), 0, "cpu").model) is LeanPPO
    with pytest.raises(UserError, match=r"algo\.loop='torch' is not a choice; choose numpy"):
        build_agent({**BASE, "loop": "torch"}, make_fake(n=4), 0, "cpu")


def test_a_saved_agent_comes_back_with_its_loop(tmp_path):
    agent = build_agent({**BASE, "loop": "sb3"}, make_fake(n=4), 0, "cpu")
    agent.learn(64)
    agent.save(tmp_path / "model")
    back = load_agent(tmp_path / "model", make_fake(n=4))
    assert type(back.model) is PPO
