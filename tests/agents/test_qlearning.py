"""Tabular Q-learning: discretisation, the batched update, exploration decay, and learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from agent_fakes import episode_return, make_fake
from omegaconf import OmegaConf

from rlbench.agents import build_agent
from rlbench.envs import make_vec
from rlbench.errors import UserError

CONF = Path(__file__).resolve().parents[2] / "conf" / "algo"


def qagent(n=2, horizon=10, **cfg):
    return build_agent({"name": "qlearning", **cfg}, make_fake(n=n, horizon=horizon), seed=0)


def test_discretise_cuts_each_dimension_into_equal_bins_row_major():
    agent = qagent(bins=[4, 2])  # fake obs space is [0, 1]^2: widths 0.25 and 0.5
    obs = np.array([[0.3, 0.7], [1.0, 0.0], [-0.5, 0.49], [0.99, 0.5]])
    # (bin0, bin1) = (1, 1), (3 clipped, 0), (0 clipped, 0), (3, 1) -> bin0 * 2 + bin1
    assert agent.discretise(obs).tolist() == [3, 6, 0, 7]
    assert agent.q.shape == (8, 3)


def test_obs_indices_and_bounds_select_and_scale_dimensions():
    agent = qagent(bins=5, obs_indices=[1], low=0.0, high=0.5)  # only the queue, on [0, 0.5]
    obs = np.array([[0.9, 0.05], [0.0, 0.25], [0.5, 0.7]])
    assert agent.discretise(obs).tolist() == [0, 2, 4]
    assert agent.q.shape == (5, 3)


def test_one_update_by_hand():
    agent = qagent(bins=[4, 2], learning_rate=0.5, gamma=0.9)
    agent.q[5] = [0.0, 2.0, 1.0]
    agent.q[3, 2] = 0.4
    agent.update(np.array([3]), np.array([2]), np.array([-1.0]), np.array([5]), np.array([False]))
    # target = -1 + 0.9 * max(0, 2, 1) = 0.8; Q <- 0.4 + 0.5 * (0.8 - 0.4) = 0.6
    assert agent.q[3, 2] == pytest.approx(0.6)
    agent.update(np.array([3]), np.array([2]), np.array([-1.0]), np.array([5]), np.array([True]))
    # terminated: no bootstrap; target = -1; Q <- 0.6 + 0.5 * (-1 - 0.6) = -0.2
    assert agent.q[3, 2] == pytest.approx(-0.2)


def test_copies_in_the_same_state_share_one_averaged_update():
    agent = qagent(bins=[4, 2], learning_rate=0.5, gamma=0.9)
    agent.q[5] = [0.0, 2.0, 1.0]
    agent.q[3, 2] = 0.4
    agent.update(
        states=np.array([3, 0, 3]),
        actions=np.array([2, 0, 2]),
        rewards=np.array([-1.0, 1.0, 1.0]),
        next_states=np.array([5, 5, 5]),
        terminated=np.array([False, True, False]),
    )
    # pair (3, 2): targets 0.8 and 2.8, deltas 0.4 and 2.4, mean 1.4 -> 0.4 + 0.7 = 1.1
    assert agent.q[3, 2] == pytest.approx(1.1)
    # pair (0, 0): terminated, target 1 -> 0 + 0.5 * 1 = 0.5
    assert agent.q[0, 0] == pytest.approx(0.5)
    assert agent.q[5].tolist() == [0.0, 2.0, 1.0]


def test_a_few_copies_group_in_python_as_numpy_groups_many(monkeypatch):
    """The plain-Python grouping of small batches (``SMALL_BATCH``) gives the sorting path's
    table, repeated pairs and all (to rounding: numpy's ``reduceat`` sums three or more deltas
    pairwise, Python left to right)."""
    import rlbench.agents.qlearning as qlearning

    rng = np.random.default_rng(0)
    batches = [
        (rng.integers(0, 6, 8), rng.integers(0, 3, 8), rng.normal(size=8),
         rng.integers(0, 800, 8), rng.random(8) < 0.2)
        for _ in range(200)
    ]  # fmt: skip
    tables = []
    for small in (qlearning.SMALL_BATCH, 0):
        monkeypatch.setattr(qlearning, "SMALL_BATCH", small)
        agent = qagent(bins=[40, 20], learning_rate=0.3, gamma=0.9)  # 2,400 entries: not bincount
        for batch in batches:
            agent.update(*batch)
        tables.append(agent.q.copy())
    np.testing.assert_allclose(tables[0], tables[1], rtol=1e-12, atol=1e-15)
    assert (tables[0] != tables[0][799, 0]).sum() > 10  # many entries were updated


def test_time_limit_truncation_bootstraps_from_the_final_observation():
    # One-step episodes: every transition is truncated, never terminated. With every entry
    # starting at 10, the one updated entry must be r + gamma * 10 (r = the episode return).
    agent = qagent(n=1, horizon=1, bins=3, learning_rate=1.0, gamma=0.5, q_init=10.0)
    seen = []
    agent.learn(1, lambda n, stats: seen.append(stats))
    changed = np.argwhere(agent.q != 10.0)
    assert len(changed) == 1
    r = seen[-1]["episode_return"]
    assert agent.q[tuple(changed[0])] == pytest.approx(r + 0.5 * 10.0)


def test_epsilon_decays_per_finished_episode_with_a_floor():
    agent = qagent(n=2, horizon=10, epsilon_decay=0.5, epsilon_min=0.001)
    agent.learn(40)  # 2 copies x 20 steps: each copy finishes 2 ten-step episodes -> 4
    assert agent.episodes == 4
    assert agent.epsilon == pytest.approx(0.5**4)
    agent.learn(200)  # 0.5 ** 20 would be below the floor
    assert agent.epsilon == 0.001


def test_epsilon_can_decay_per_step():
    agent = qagent(n=2, horizon=10, epsilon_decay=0.99, epsilon_decay_per="step")
    agent.learn(40)  # 20 batched steps of 2 copies
    assert agent.epsilon == pytest.approx(0.99**40)


def test_learn_reports_stats_and_predicts_valid_actions():
    agent = qagent(n=4)
    reports = []
    agent.learn(3000, lambda n, stats: reports.append((n, stats)))
    assert agent.num_steps == 3000
    assert [n for n, _ in reports] == [1000, 2000, 3000]
    assert {"epsilon", "episode_return", "steps_per_second"} <= set(reports[-1][1])
    actions = agent.predict(np.random.default_rng(0).random((7, 2)))
    assert actions.shape == (7,) and actions.dtype == np.int64
    assert set(actions.tolist()) <= {0, 1, 2}


def test_callback_returning_false_stops_learning():
    agent = qagent(n=4)
    agent.learn(10_000, lambda n, stats: False)
    assert agent.num_steps == 1000


def test_same_seed_gives_the_same_table():
    a, b = qagent(n=3), qagent(n=3)
    a.learn(900)
    b.learn(900)
    assert np.array_equal(a.q, b.q)
    assert a.epsilon == b.epsilon


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"bins": [4, 4, 4]}, "needs one value or 2"),
        ({"obs_indices": [2]}, "obs_indices must be distinct observation indices in 0..1"),
        ({"bins": 10_000}, "at most 10,000,000"),
        ({"learning_rate": 0.0}, "learning_rate must be in"),
        ({"epsilon_decay_per": "day"}, "episode or step"),
        ({"low": 1.0, "high": 0.0}, "cannot bin observation dimension 0"),
    ],
)
def test_bad_settings_are_user_errors(cfg, message):
    with pytest.raises(UserError, match=message):
        qagent(**cfg)


def test_default_config_clearly_beats_random_on_sine_curve():
    """The lead's acceptance check, at our default config: 100k steps on 8 copies (~1 s)."""
    cfg = OmegaConf.load(CONF / "qlearning.yaml")
    env_kwargs = {"load": "sine_curve"}
    train_env = make_vec("rlbench/Autoscaling-v0", 8, seed=0, **env_kwargs)
    agent = build_agent(cfg, train_env, seed=0)
    agent.learn(100_000)
    random = build_agent({"name": "random"}, train_env, seed=0)
    q_return, random_return = (episode_return(policy, env_kwargs) for policy in (agent, random))
    # measured: Q-learning about -250 ... -290, random about -1900 (threshold rule: -241)
    assert q_return > 0.5 * random_return, f"Q-learning {q_return:.1f}, random {random_return:.1f}"
