"""The non-learning agents: random, static and the seed's threshold rule."""

from __future__ import annotations

import numpy as np
import pytest
from agent_fakes import NoSignalsCore, make_fake

from rlbench.agents import build_agent
from rlbench.errors import UserError


def obs_of(load_pct, queue) -> np.ndarray:
    """Fake-env observations (load_pct / 100, queue / 1000) for hand-picked signals."""
    return np.stack([np.asarray(load_pct, float) / 100, np.asarray(queue, float) / 1000], axis=1)


def test_learn_only_advances_the_counter_and_calls_back_once():
    agent = build_agent({"name": "static"}, make_fake(), seed=0)
    calls = []
    agent.learn(500, lambda n, s: calls.append(n))
    agent.learn(300, lambda n, s: calls.append(n))  # an absolute target already reached
    assert agent.num_steps == 500
    assert calls == [500, 500]


def test_static_always_holds():
    agent = build_agent({"name": "static"}, make_fake(), seed=0)
    assert agent.predict(obs_of([0, 50, 100], [0, 0, 1000])).tolist() == [1, 1, 1]


def test_random_is_uniform_over_actions_and_seeded():
    env = make_fake()
    obs = np.zeros((3000, 2))
    a = build_agent({"name": "random"}, env, seed=7).predict(obs)
    b = build_agent({"name": "random"}, env, seed=7).predict(obs)
    c = build_agent({"name": "random"}, env, seed=8).predict(obs)
    assert a.shape == (3000,) and a.dtype == np.int64
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # each of 3 actions ~ 1000 times; 5 standard deviations (sqrt(3000*1/3*2/3) ~ 26) margin
    assert np.all(np.abs(np.bincount(a, minlength=3) - 1000) < 130)


def test_threshold_rule_on_hand_built_signals():
    agent = build_agent({"name": "threshold"}, make_fake(n=8), seed=0)
    load = [81, 80, 50, 50, 39, 39, 40, 10]
    queue = [0, 0, 101, 100, 0, 1, 0, 150]
    # add: load > 80 | queue > 100; remove: load < 40 & queue == 0; else hold
    expected = [2, 1, 2, 1, 0, 1, 1, 2]
    assert agent.predict(obs_of(load, queue)).tolist() == expected


def test_threshold_settings_are_configurable():
    cfg = {"name": "threshold", "upper": 60, "lower": 20, "queue_limit": 10}
    agent = build_agent(cfg, make_fake(n=4), seed=0)
    assert agent.predict(obs_of([61, 59, 19, 30], [0, 11, 0, 0])).tolist() == [2, 2, 0, 1]


def test_threshold_cooldown_holds_after_each_scaling_action():
    agent = build_agent({"name": "threshold", "cooldown": 2}, make_fake(n=2), seed=0)
    # copy 0 is overloaded the whole time, copy 1 idle for 3 steps then normal
    loads = [(95, 10), (95, 10), (95, 10), (95, 50), (95, 10)]
    got = [agent.predict(obs_of(list(pair), [0, 0])).tolist() for pair in loads]
    # a scaling action, then 2 holds, then free again; copy 1 holds on the 4th step anyway
    assert got == [[2, 0], [1, 1], [1, 1], [2, 1], [1, 0]]


def test_threshold_needs_an_env_with_signals():
    with pytest.raises(UserError, match=r"reports load and queue; .* does not: pick an autoscal"):
        build_agent({"name": "threshold"}, make_fake(core=NoSignalsCore), seed=0)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"name": "threshold", "uper": 90}, "did you mean algo.upper"),
        ({"name": "threshold", "lower": 90, "upper": 80}, "must not exceed"),
        ({"name": "threshold", "cooldown": -1}, "cooldown must be >= 0"),
        ({"name": "threshold", "upper": float("nan")}, "not a finite number"),
        ({"name": "static", "action": 3}, "not an action"),
        ({"name": "nope"}, "unknown algorithm 'nope'; known: dqn, hybrid, ppo, qlearning"),
    ],
)
def test_bad_settings_are_one_clear_user_error(cfg, message):
    with pytest.raises(UserError, match=message):
        build_agent(cfg, make_fake(), seed=0)
