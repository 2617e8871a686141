"""The per-context UCB1 bandit: contexts, the UCB1 choice worked by hand, batched updates,
the greedy fallback, and its model file."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlbench.agents import build_agent, load_agent
from rlbench.envs import make_vec
from rlbench.errors import UserError

RECOMMENDER = "rlbench/Recommender-v0"


def ucb(n: int = 2, **settings):
    return build_agent({"name": "ucb", **settings}, make_vec(RECOMMENDER, n, seed=0), seed=0)


def obs_with(mood: int, time_of_day: int, openness: int = 2) -> list[float]:
    return [openness / 4, 0.5, 0.5, 0.5, 0.5, 0.0, mood / 4, time_of_day / 3]


def test_context_is_the_mixed_radix_number_of_the_chosen_signals():
    agent = ucb(context=["mood", "time_of_day"])
    obs = np.array([obs_with(3, 2), obs_with(0, 0), obs_with(4, 3, openness=0)])
    # mood has 5 values, time of day 4: id = mood * 4 + time; openness is not in the context
    assert agent.context_ids(obs).tolist() == [3 * 4 + 2, 0, 4 * 4 + 3]
    full = ucb()
    # all eight, radix (5, 5, 5, 5, 5, 3, 5, 4): openness 1 alone is 1 * 5**4 * 3 * 5 * 4
    one = np.array([[0.25, 0, 0, 0, 0, 0, 0, 0]])
    assert full.context_ids(one).tolist() == [37500]


def test_ucb1_tries_every_action_once_in_order_then_follows_the_bound():
    agent = ucb(n=1)
    row = agent.rows(np.array([5]), add=True)
    for a in range(27):  # untried actions first, lowest index first
        assert agent.choose(row).tolist() == [a]
        agent.update(row, np.array([a]), np.array([a / 10]))  # action a pays a / 10
    # N = 27, every n = 1: equal bonuses, so the best mean, action 26 (2.6)
    assert agent.choose(row).tolist() == [26]
    agent.update(row, np.array([26]), np.array([0.0]))
    # N = 28: action 26 has mean 1.3 and n = 2: 1.3 + 2 * sqrt(ln 28 / 2) = 1.3 + 2.5816 = 3.88;
    # action 25 has mean 2.5, n = 1: 2.5 + 2 * sqrt(ln 28) = 2.5 + 3.6509 = 6.15 -> 25
    assert 2 * math.sqrt(math.log(28)) == pytest.approx(3.6509, abs=1e-4)
    assert agent.choose(row).tolist() == [25]


def test_exploration_zero_is_greedy_on_the_means():
    agent = ucb(n=1, exploration=0.0)
    row = agent.rows(np.array([0]), add=True)
    agent.update(np.repeat(row, 27), np.arange(27), -np.abs(np.arange(27) - 13.0))
    assert agent.choose(row).tolist() == [13]


def test_copies_that_pull_the_same_arm_in_one_step_all_count():
    agent = ucb(n=3)
    rows = agent.rows(np.array([7, 7, 9]), add=True)
    agent.update(rows, np.array([4, 4, 4]), np.array([1.0, 3.0, 5.0]))
    assert agent.counts[rows[0], 4] == 2 and agent.counts[rows[2], 4] == 1
    assert agent.means(rows)[:, 4].tolist() == [2.0, 2.0, 5.0]


def test_greedy_uses_tried_means_and_an_unseen_context_falls_back_to_the_pooled_best():
    agent = ucb(n=1)
    a, b = agent.rows(np.array([100, 200]), add=True)
    agent.update(np.array([a, a, b]), np.array([5, 7, 7]), np.array([1.0, 0.5, 3.0]))
    # context a: action 5 (1.0) beats 7 (0.5); untried actions (mean 0) are not candidates
    # context b: only 7 was tried (3.0); pooled: 5 -> 1.0, 7 -> (0.5 + 3.0) / 2 = 1.75
    assert agent.greedy(np.array([a, b, -1])).tolist() == [5, 7, 7]
    assert agent.rows(np.array([300])).tolist() == [-1]  # predicting never adds a context


def test_learning_counts_every_pull_and_reports_the_mean_reward():
    agent = ucb(n=4)
    reports = []
    agent.learn(1000, lambda steps, stats: reports.append((steps, stats)))
    assert agent.num_steps == 1000 and int(agent.counts.sum()) == 1000
    assert reports[-1][0] == 1000
    stats = reports[-1][1]
    assert stats["contexts_seen"] == len(agent.ids) > 1
    assert -1.8 <= stats["mean_reward"] <= 3.3  # the reward table's range per step


def test_model_file_round_trip_acts_identically_and_resumes(tmp_path):
    agent = ucb(n=4)
    agent.learn(2000)
    path = tmp_path / "ucb.npz"
    agent.save(path)
    with np.load(path, allow_pickle=False) as npz:  # a plain .npz of its tables
        np.testing.assert_array_equal(npz["counts"], agent.counts)
    loaded = load_agent(path, make_vec(RECOMMENDER, 4, seed=0))
    obs = make_vec(RECOMMENDER, 16, seed=123).reset()
    np.testing.assert_array_equal(loaded.predict(obs), agent.predict(obs))
    np.testing.assert_array_equal(loaded.predict(obs, False), agent.predict(obs, False))
    loaded.learn(2400)
    assert loaded.num_steps == 2400 and int(loaded.counts.sum()) == 2400


def test_bad_settings_and_wrong_env_are_one_clear_error():
    with pytest.raises(UserError, match=r"algo.context must be distinct names from openness"):
        ucb(context=["mood", "weather"])
    with pytest.raises(UserError, match=r"algo.exploration must be >= 0"):
        ucb(exploration=-1.0)
    with pytest.raises(UserError, match=r"^ucb needs the recommender environment \(env=recomm"):
        build_agent({"name": "ucb"}, make_vec("rlbench/SelfHealing-v0", 1), seed=0)
