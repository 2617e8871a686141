"""rlbench/Autoscaling-v0: dynamics worked out by hand, API checks, batched = single."""

from __future__ import annotations

import inspect
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from env_checks import play, run_batched_against_singles
from gymnasium.utils.env_checker import check_env
from omegaconf import OmegaConf

import rlbench  # noqa: F401  (registers the environments)
from rlbench.envs import make_vec
from rlbench.envs.autoscaling import AutoscalingCore, AutoscalingEnv

REMOVE, HOLD, ADD = 0, 1, 2
CONF = Path(__file__).parents[2] / "conf" / "env" / "autoscaling.yaml"

# price 0.6 $/h over 5 minutes = 0.05 $ per instance and step; steady 250 requests per step.
HAND = dict(load="steady", base_load=250, capacity=100, price_per_hour=0.6, step_minutes=5)


def test_queue_carry_over_and_provisioning_delay() -> None:
    env = AutoscalingEnv(
        **HAND, initial_instances=2, provision_delay=2, sla_penalty=0.5, churn_penalty=0.02
    )
    steps = play(env, [HOLD, ADD, HOLD, HOLD, HOLD, HOLD, HOLD])
    info = [s[2] for s in steps]
    # (running, pending, queue): 250 arrive each step, 100 served per running instance.
    # 1: 2 serve 200 of 250 -> 50 wait.  2: add (pending, due at step 4); 300 -> 100 wait.
    # 3: still pending; 350 -> 150.  4: 3 running serve 300 of 400 -> 100.  5: 350 -> 50.
    # 6: 300 -> 0.  7: 250 of 300 capacity.
    expected = [(2, 0, 50), (2, 1, 100), (2, 1, 150), (3, 0, 100), (3, 0, 50), (3, 0, 0), (3, 0, 0)]
    assert [(i["instances"], i["pending"], i["queue"]) for i in info] == expected
    assert [i["sla_violation"] for i in info] == [1, 1, 1, 1, 1, 0, 0]
    assert [i["scale_action"] for i in info] == [0, 1, 0, 0, 0, 0, 0]
    # Billed from launch: 2, then 3 instances at 0.05 $.
    assert [i["cost"] for i in info] == pytest.approx([0.10] + [0.15] * 6)
    # Step 2: -(0.15 + 0.5 * 100 / 1000 + 0.02) = -0.22.
    assert steps[0][1] == pytest.approx(-0.125)
    assert steps[1][1] == pytest.approx(-0.22)
    assert info[1]["churn_reward"] == pytest.approx(-0.02)
    assert steps[6][1] == pytest.approx(-0.15)
    assert info[6]["utilisation"] == pytest.approx(250 / 300)
    assert info[6]["load_pct"] == pytest.approx(100 * 250 / 300)
    assert info[6]["capacity"] == 300 and info[6]["influx"] == 250


def test_zero_provision_delay_serves_at_once() -> None:
    env = AutoscalingEnv(**HAND, initial_instances=2, provision_delay=0)
    ((_, _, info),) = play(env, [ADD])
    assert (info["instances"], info["pending"], info["queue"]) == (3, 0, 0)
    assert info["utilisation"] == pytest.approx(250 / 300)


def test_remove_takes_a_running_instance_at_once() -> None:
    env = AutoscalingEnv(**HAND, initial_instances=3, churn_penalty=0.01)
    ((_, reward, info),) = play(env, [REMOVE])
    assert (info["instances"], info["queue"], info["cost"]) == (2, 50, pytest.approx(0.10))
    assert reward == pytest.approx(-(0.10 + 0.5 * 50 / 1000 + 0.01))


def test_max_bound_counts_pending_instances() -> None:
    env = AutoscalingEnv(
        **HAND, initial_instances=2, max_instances=3, provision_delay=2, invalid_action_penalty=0.3
    )
    steps = play(env, [ADD, ADD])
    first, second = steps[0][2], steps[1][2]
    assert (first["pending"], first["invalid_action"]) == (1, 0)
    assert (second["instances"], second["pending"]) == (2, 1)
    assert (second["invalid_action"], second["scale_action"]) == (1, 0)
    assert second["churn_reward"] == pytest.approx(-0.3)


def test_min_bound_is_a_noop() -> None:
    env = AutoscalingEnv(**HAND, initial_instances=2, min_instances=2, churn_penalty=0.01)
    ((_, _, info),) = play(env, [REMOVE])
    assert (info["instances"], info["invalid_action"], info["churn_reward"]) == (2, 1, 0.0)


def test_remove_needs_a_running_instance() -> None:
    env = AutoscalingEnv(**HAND, initial_instances=1, min_instances=0, provision_delay=5)
    steps = play(env, [REMOVE, ADD, REMOVE])
    info = [s[2] for s in steps]
    assert (info[0]["instances"], info[0]["queue"], info[0]["utilisation"]) == (0, 250, 0.0)
    assert (info[1]["instances"], info[1]["pending"]) == (0, 1)
    assert (info[2]["pending"], info[2]["invalid_action"]) == (1, 1)  # nothing running to remove


def test_overflow_beyond_max_queue_is_dropped() -> None:
    env = AutoscalingEnv(
        **HAND, initial_instances=1, max_queue=120, sla_penalty=0.5, drop_penalty=2.0
    )
    steps = play(env, [HOLD, HOLD])
    (_, r1, i1), (_, r2, i2) = steps
    # 1: 250 arrive, 100 served, 150 left: 120 wait, 30 dropped.
    assert (i1["queue"], i1["dropped"]) == (120, 30)
    assert i1["sla_reward"] == pytest.approx(-(0.5 * 120 + 2.0 * 30) / 1000)
    assert r1 == pytest.approx(-(0.05 + 0.12))
    # 2: 120 + 250 = 370, 100 served, 270 left: 120 wait, 150 dropped.
    assert (i2["queue"], i2["dropped"]) == (120, 150)
    assert r2 == pytest.approx(-(0.05 + (0.5 * 120 + 2.0 * 150) / 1000))


def test_default_cost_is_instance_dollars() -> None:
    env = gym.make("rlbench/Autoscaling-v0")
    env.reset(seed=0)
    _, _, _, _, info = env.step(HOLD)
    # 10 instances * 0.192 $/h * 5/60 h = 0.16 $.
    assert info["cost"] == pytest.approx(0.16)
    assert info["cost_reward"] == pytest.approx(-0.16)


def test_reward_scale_scales_every_term() -> None:
    kwargs = dict(load="poisson", noise=0.1, horizon=20)
    a, b = AutoscalingEnv(**kwargs), AutoscalingEnv(**kwargs, reward_scale=10.0)
    ra, rb = play(a, [ADD, HOLD, REMOVE]), play(b, [ADD, HOLD, REMOVE])
    for (_, x, ix), (_, y, iy) in zip(ra, rb, strict=True):
        assert y == pytest.approx(10 * x)
        assert iy["sla_reward"] == pytest.approx(10 * ix["sla_reward"])
        assert iy["cost"] == pytest.approx(ix["cost"])  # info cost stays in dollars


def test_observation_by_hand() -> None:
    env = AutoscalingEnv(
        load="steady",
        base_load=500,
        capacity=100,
        initial_instances=4,
        max_instances=10,
        provision_delay=1,
        max_queue=200,
        period=8,
    )
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(obs, [0.4, 0, 0, 0, 0, 0.5, 1.0], atol=1e-7)
    obs, *_ = env.step(ADD)
    # 4 running serve 400 of 500; 1 pending; 100 of 200 wait; t=1: sin(π/4), cos(π/4).
    c = (np.sqrt(0.5) + 1) / 2
    np.testing.assert_allclose(obs, [0.4, 0.1, 1.0, 0.5, 0.5, c, c], atol=1e-6)
    obs, *_ = env.step(HOLD)
    # 5 running serve 500 of 600; t=2: sin(π/2) = 1, cos = 0.
    np.testing.assert_allclose(obs, [0.5, 0, 1.0, 0.5, 0.5, 1.0, 0.5], atol=1e-6)
    assert obs.dtype == np.float32
    signals = env.core.signals(obs)
    assert signals["load_pct"] == pytest.approx(100.0)
    assert signals["queue"] == pytest.approx(100.0)


def test_time_of_day_past_the_horizon() -> None:
    """A core stepped past its horizon without a reset (the gym env truncates; a caller of
    the core may not) still observes the time of day of its step."""
    core = AutoscalingCore(num_envs=2, load="steady", horizon=4, period=8)
    core.reset_copies(np.ones(2, dtype=bool), [np.random.default_rng(i) for i in range(2)])
    for t in range(1, 7):
        core.step(np.full(2, HOLD))
        obs = core.observe()
        phase = 2 * np.pi * t / 8
        expected = [(np.sin(phase) + 1) / 2, (np.cos(phase) + 1) / 2]
        np.testing.assert_allclose(obs[:, 5:7], [expected, expected], atol=1e-7)


def test_signals_decode_a_batch() -> None:
    core = AutoscalingCore(2, max_instances=50, capacity=100)  # max_queue = 5000
    obs = np.zeros((2, 7), dtype=np.float32)
    obs[:, 2] = [0.25, 0.9]
    obs[:, 3] = [0.0, 0.1]
    s = core.signals(obs)
    np.testing.assert_allclose(s["load_pct"], [25, 90], rtol=1e-6)
    np.testing.assert_allclose(s["queue"], [0, 500], rtol=1e-6)


def test_observation_is_clipped_to_unit_box() -> None:
    env = AutoscalingEnv(load="steady", base_load=9000, initial_instances=2, max_instances=5)
    obs, *_ = play(env, [HOLD])[0]
    assert obs[4] == 1.0  # 9000 arrivals > 5 * 100
    assert obs.min() >= 0 and obs.max() <= 1


def test_fixed_horizon_truncates_never_terminates() -> None:
    env = AutoscalingEnv(horizon=3)
    env.reset(seed=0)
    flags = [env.step(HOLD)[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]


def test_trace_replay_from_the_bundled_sample() -> None:
    env = AutoscalingEnv(load="TRACE", trace_scale=2.0)
    ((_, _, info),) = play(env, [HOLD])
    assert info["influx"] == 2 * 599  # the sample's first count, scaled


def test_info_keys_and_aggregates() -> None:
    env = AutoscalingEnv()
    ((_, reward, info),) = play(env, [ADD])
    contract = {
        "influx", "capacity", "instances", "pending", "queue", "load_pct", "utilisation",
        "cost", "sla_violation", "dropped", "scale_action",
        "cost_reward", "sla_reward", "churn_reward",
    }  # fmt: skip
    assert contract <= set(info)
    assert set(AutoscalingCore.info_aggregates) <= set(info)
    assert set(AutoscalingCore.render_keys) <= set(info)
    assert reward == pytest.approx(info["cost_reward"] + info["sla_reward"] + info["churn_reward"])


@pytest.mark.parametrize("load", ["sine_curve", "random"])
def test_check_env_passes(load: str) -> None:
    check_env(gym.make("rlbench/Autoscaling-v0", load=load).unwrapped)


def test_reset_seed_determines_the_episode() -> None:
    def episode(seed: int | None, env: gym.Env) -> list[float]:
        env.reset(seed=seed)
        return [env.step(a)[1] for a in [ADD, HOLD, REMOVE, HOLD] * 5]

    kwargs = dict(load="poisson", noise=0.2, horizon=20)
    a, b = (
        gym.make("rlbench/Autoscaling-v0", **kwargs),
        gym.make("rlbench/Autoscaling-v0", **kwargs),
    )
    first = episode(7, a)
    assert first == episode(7, b)
    assert first != episode(8, b)
    assert episode(None, a) != first  # the next episode draws a new load series


def test_render_modes() -> None:
    env = gym.make("rlbench/Autoscaling-v0", render_mode="ansi", horizon=10)
    env.reset(seed=0)
    assert env.render() == "(no step yet)"
    env.step(HOLD)
    line = env.render()
    assert "\n" not in line and "instances= 10" in line and "cost=$0.160" in line
    env = gym.make("rlbench/Autoscaling-v0", render_mode="rgb_array", horizon=10)
    env.reset(seed=0)
    for _ in range(5):
        env.step(ADD)
    image = env.render()
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.min() < image.max()


def test_batched_equals_single_copies() -> None:
    n, steps, seed = 16, 500, 123
    kwargs = dict(load="random", noise=0.1, horizon=37, provision_delay=1)
    episodes = run_batched_against_singles("rlbench/Autoscaling-v0", n, steps, seed, 3, **kwargs)
    assert episodes == n * (steps // 37)  # every copy auto-reset 13 times


def test_config_lists_every_constructor_argument() -> None:
    conf = OmegaConf.to_container(OmegaConf.load(CONF))
    assert (conf.pop("id"), conf.pop("name")) == ("rlbench/Autoscaling-v0", "autoscaling")
    params = set(inspect.signature(AutoscalingCore).parameters) - {"num_envs"}
    assert set(conf) == params
    env = gym.make("rlbench/Autoscaling-v0", **conf)
    env.reset(seed=0)
    assert env.step(HOLD)[4]["cost"] == pytest.approx(0.16)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"load": "bogus"}, r"load must be one of steady, sine_curve, .*trace"),
        ({"min_instances": 5, "max_instances": 3}, "min_instances"),
        ({"capacity": -1}, "capacity"),
        ({"capacity": 0}, "capacity"),
        ({"horizon": 0}, "horizon"),
        ({"initial_instances": 60}, "initial_instances"),
        ({"provision_delay": -1}, "provision_delay"),
        ({"price_per_hour": -0.1}, "price_per_hour"),
        ({"max_queue": -1}, "max_queue"),
        ({"reward_scale": 0}, "reward_scale"),
        ({"load": "spike", "spike_every": 4, "spike_ramp": 3}, "spike_ramp"),
        ({"load": "trace", "trace_path": "/nonexistent/trace.csv"}, "trace_path: no such file"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AutoscalingEnv(**kwargs)
    with pytest.raises(ValueError, match=match):
        make_vec("rlbench/Autoscaling-v0", 2, **kwargs)


def test_bad_trace_rows_are_reported_with_their_row(tmp_path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("requests\n100\n200\nlots\n")
    with pytest.raises(ValueError, match=r"trace_path: .* row 4 is not a number"):
        AutoscalingEnv(load="trace", trace_path=str(path))
    path.write_text("requests\n")
    with pytest.raises(ValueError, match=r"trace_path: .* holds no request counts"):
        AutoscalingEnv(load="trace", trace_path=str(path))


def test_actions_out_of_range_raise() -> None:
    env = AutoscalingEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="actions must be 0"):
        env.step(3)


def test_dropped_requests_count_as_sla_violation() -> None:
    env = AutoscalingEnv(**HAND, initial_instances=2, max_queue=0)
    ((obs, _, info),) = play(env, [HOLD])
    # 200 of 250 served, nothing may wait: 50 dropped, the queue stays empty.
    assert (info["queue"], info["dropped"], info["sla_violation"]) == (0, 50, 1)
    assert obs[3] == 0.0
