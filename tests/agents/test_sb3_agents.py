"""PPO and DQN through our protocol: config mapping, learning loop, stopping, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from agent_fakes import BoxActionCore, make_fake

from rlbench.agents import build_agent
from rlbench.agents.sb3_agents import DQNAgent, PPOAgent
from rlbench.errors import UserError

TINY = {
    "ppo": {"name": "ppo", "n_steps": 16, "batch_size": 32, "n_epochs": 2},
    "dqn": {"name": "dqn", "learning_starts": 20, "buffer_size": 500, "batch_size": 16},
}
OBS = np.random.default_rng(0).random((9, 2)).astype(np.float32)


SB3 = {"ppo": PPOAgent, "dqn": DQNAgent}  # build_agent's dqn is mostly numpy: test_numpy_dqn.py


def tiny(algo: str, seed: int = 0, n: int = 4, **overrides):
    return SB3[algo](make_fake(n=n, seed=seed), {**TINY[algo], **overrides}, seed, "cpu")


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_learns_to_the_absolute_target_and_predicts_valid_actions(algo):
    agent = tiny(algo)
    reports = []
    agent.learn(200, lambda n, stats: reports.append((n, stats)))
    assert agent.num_steps >= 200
    assert reports[-1][0] == agent.num_steps
    assert "steps_per_second" in reports[-1][1]
    assert "episode_return" in {k for _, s in reports for k in s}
    if algo == "dqn":
        assert 0.05 <= reports[-1][1]["epsilon"] <= 1.0
    actions = agent.predict(OBS)
    assert actions.shape == (9,) and actions.dtype == np.int64
    assert set(actions.tolist()) <= {0, 1, 2}
    before = agent.num_steps
    agent.learn(before + 64)  # a second call continues from the counter
    assert before + 64 <= agent.num_steps < before + 64 + 64


def test_ppo_reports_after_every_rollout_with_its_losses():
    agent = tiny("ppo")  # a rollout is 16 steps x 4 copies = 64 env steps
    reports = []
    agent.learn(256, lambda n, stats: reports.append((n, stats)))
    assert [n for n, _ in reports] == [64, 128, 192, 256]
    # from the second report on, the previous rollout's update has run
    assert {"loss", "value_loss", "entropy_loss"} <= set(reports[1][1])


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_callback_returning_false_stops_training(algo):
    agent = tiny(algo, **({"n_steps": 4, "batch_size": 16} if algo == "ppo" else {}))
    calls = []

    def stop_at_first(n, stats):
        calls.append(n)
        return False

    agent.learn(20_000, stop_at_first)
    assert len(calls) == 1
    assert agent.num_steps <= calls[0] + 4  # SB3 finishes the step it is in


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_same_seed_same_agent(algo):
    a, b, c = tiny(algo, seed=3), tiny(algo, seed=3), tiny(algo, seed=4)
    for agent in (a, b, c):
        agent.learn(256)
    params = [torch.cat([p.flatten() for p in x.model.policy.parameters()]) for x in (a, b, c)]
    assert torch.equal(params[0], params[1])
    assert not torch.equal(params[0], params[2])
    assert np.array_equal(a.predict(OBS), b.predict(OBS))


def test_policy_kwargs_names_map_to_torch_classes():
    agent = tiny(
        "ppo",
        policy_kwargs={"net_arch": [8, 8], "activation_fn": "relu", "optimizer_class": "adamw"},
        learning_rate=1e-3,
    )
    policy = agent.model.policy
    linears = [m for m in policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [8, 8]
    assert any(isinstance(m, torch.nn.ReLU) for m in policy.mlp_extractor.policy_net)
    assert isinstance(policy.optimizer, torch.optim.AdamW)
    assert policy.optimizer.param_groups[0]["lr"] == 1e-3


def test_every_constructor_argument_is_reachable():
    agent = tiny(
        "dqn", target_update_interval=77, exploration_final_eps=0.2, train_freq=[2, "step"]
    )
    assert agent.model.target_update_interval == 77
    assert agent.model.exploration_final_eps == 0.2
    assert agent.model.train_freq.frequency == 2


def test_dqn_on_a_continuous_action_space_is_a_user_error():
    env = make_fake(core=BoxActionCore)
    message = r"dqn needs a discrete action space; BoxActionCore has Box"
    with pytest.raises(UserError, match=message):
        build_agent({"name": "dqn"}, env, 0, "cpu")


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (
            {"name": "ppo", "n_step": 64},
            "n_step is not a setting of ppo; did you mean algo.n_steps",
        ),
        ({"name": "ppo", "learning_rate": float("nan")}, "algo.learning_rate=nan is not a finite"),
        ({"name": "ppo", "policy_kwargs": {"activation_fn": "swish"}}, "activation_fn='swish'"),
        ({"name": "dqn", "exploration_fraction": "lots"}, "exploration_fraction='lots' must be a"),
        ({"name": "ppo", "normalize_advantage": 1}, "normalize_advantage=1 must be true or false"),
        ({"name": "ppo", "n_steps": 64.5}, "n_steps=64.5 must be an integer"),
        ({"name": "dqn", "train_freq": [4, "days"]}, r"algo.train_freq must be .*\[4, 'days'\]"),
    ],
)
def test_bad_settings_are_one_line_user_errors(cfg, message):
    with pytest.raises(UserError, match=message) as err:
        build_agent(cfg, make_fake(), 0, "cpu")
    assert "\n" not in str(err.value)


def test_integer_settings_written_as_floats_are_integers():
    agent = tiny("dqn", buffer_size=1e3)  # YAML reads 1e3 as a float
    assert agent.model.buffer_size == 1000 and isinstance(agent.model.buffer_size, int)


def test_a_float_setting_whose_sb3_default_is_written_as_an_integer_takes_fractions():
    assert tiny("dqn", max_grad_norm=0.5).model.max_grad_norm == 0.5  # SB3: max_grad_norm=10
    with pytest.raises(UserError, match="must be an integer"):
        tiny("dqn", batch_size=16.5)


def test_building_does_not_reseed_the_env():
    env = make_fake(n=2, seed=100)
    expected = make_fake(n=2, seed=100).reset()
    build_agent(TINY["ppo"], env, seed=1, device="cpu")
    assert np.array_equal(env.reset(), expected)


def test_agents_leave_the_callers_random_generators_alone():
    np.random.seed(123)
    torch.manual_seed(123)
    expected = (np.random.random(), torch.rand(1).item())
    np.random.seed(123)
    torch.manual_seed(123)
    agent = tiny("dqn")
    agent.learn(64)
    agent.predict(OBS, deterministic=False)
    assert (np.random.random(), torch.rand(1).item()) == expected


@pytest.mark.parametrize("arch", [[64, 64], [], [8]], ids=["default", "no hidden", "one"])
def test_ppo_decides_a_few_observations_in_numpy_as_torch_does(arch):
    """A live decision (a few observations) goes through a numpy copy of the actor: the same
    probabilities as SB3's torch forward, the same greedy actions, a fresh copy after learning."""
    from rlbench.agents.sb3_agents import SB3Agent

    agent = tiny("ppo", policy_kwargs={"net_arch": arch})
    for _ in range(2):
        agent.learn(agent.num_steps + 64)  # the weights move; the copy must follow
        for obs in (OBS[:1], OBS):
            torch_pi = SB3Agent.action_probabilities(agent, obs, deterministic=False)
            numpy_pi = agent.action_probabilities(obs, deterministic=False)
            assert np.allclose(numpy_pi, torch_pi, atol=1e-6)
            greedy = agent.action_probabilities(obs, deterministic=True)
            assert (greedy.argmax(axis=1) == torch_pi.argmax(axis=1)).all()
    assert agent._numpy_net() is not None


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_a_greedy_decision_in_numpy_is_sb3s_own(algo):
    """Evaluations decide a few observations at a time in numpy: the same greedy actions as
    SB3's predict, before and after learning (the copy follows the weights), and epsilon-greedy
    probabilities for DQN as SB3 would explore."""
    from rlbench.agents.sb3_agents import SB3Agent

    agent = tiny(algo)
    rng = np.random.default_rng(0)
    obs = rng.uniform(0, 1, size=(16, *OBS.shape[1:])).astype(np.float32)
    for _ in range(2):
        with torch.no_grad():
            sb3 = agent.model.predict(obs, deterministic=True)[0]
        assert (agent.predict(obs) == sb3).all()
        torch_pi = SB3Agent.action_probabilities(agent, obs, deterministic=False)
        assert np.allclose(agent.action_probabilities(obs), torch_pi, atol=1e-6)
        agent.learn(agent.num_steps + 256)
    assert agent._numpy_net() is not None
