"""rlbench/GymScalingCompat-v0 reproduces adobe/gym-scaling's ScalingEnv, quirks included.

Expected numbers are worked out by hand from the published formulas (comments show the sums).
"""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium.utils.env_checker import check_env

import rlbench  # noqa: F401  (registers the environments)
from rlbench.envs import make_vec
from rlbench.envs.gym_scaling_compat import (
    LOAD_PATTERNS,
    GymScalingCompatCore,
    GymScalingCompatEnv,
)

ENV_ID = "rlbench/GymScalingCompat-v0"
CONF = Path(__file__).resolve().parents[2] / "conf" / "env" / "gym_scaling.yaml"
# A small service whose numbers are easy by hand: max_influx = 0 + (4/2·1000 − 0) = 2000,
# steady influx int(0 + 2000/2) = 1000, two initial instances (capacity 2000, load 50 %).
SMALL = dict(
    load="steady",
    max_instances=4,
    min_instances=1,
    capacity_per_instance=1000,
    cost_per_instance_per_hour=12.0,
    offset=0,
    change_rate=1,
)


def run(env: GymScalingCompatEnv, actions, seed: int = 0):
    """Reset, play ``actions``; return observations (reset first), rewards, infos."""
    obs, _ = env.reset(seed=seed)
    observations, rewards, infos = [obs], [], []
    for a in actions:
        obs, r, _, _, info = env.step(a)
        observations.append(obs)
        rewards.append(r)
        infos.append(info)
    return observations, rewards, infos


def influx_series(load: str, steps: int, seed: int = 0, **kwargs) -> np.ndarray:
    """Influx at t = 0 (reset) .. steps under the do-nothing policy."""
    env = GymScalingCompatEnv(load=load, change_rate=kwargs.pop("change_rate", 1), **kwargs)
    observations, _, infos = run(env, [1] * steps, seed=seed)
    return np.array([observations[0][3]] + [info["influx"] for info in infos])


# -- dynamics, by hand --------------------------------------------------------------------
def test_reset_state_and_one_step_action_lag():
    env = GymScalingCompatEnv(load="steady", change_rate=1)
    observations, rewards, infos = run(env, [2, 1, 1])
    # reset: 50 instances, load 0, capacity 50·87 = 4350, influx 2425, queue 0
    np.testing.assert_array_equal(observations[0], np.float32([0.5, 0.0, 4350, 2425, 0]))
    # step 1: the add is only stored; load = ceil(2425/4350·100) = ceil(55.75) = 56
    assert infos[0]["instances"] == 50 and infos[0]["scale_action"] == 0
    assert rewards[0] == pytest.approx(-(1 - 0.56) * 0.50)
    # step 2: the add lands; n = 51, capacity still the 4350 from before the action
    assert infos[1]["instances"] == 51 and infos[1]["scale_action"] == 1
    assert observations[2][0] == pytest.approx(0.51) and observations[2][2] == 4350
    assert rewards[1] == pytest.approx(-(1 - 0.56) * 0.51)
    # step 3: capacity 51·87 = 4437, load = ceil(2425/4437·100) = ceil(54.65) = 55
    assert infos[2]["capacity"] == 4437 and infos[2]["load_pct"] == 55
    assert rewards[2] == pytest.approx(-(1 - 0.55) * 0.51)


def test_removal_takes_the_oldest_instance():
    # Two initial instances A, B (start 0, priced 1000 $/h = the capacity, the quirk).
    # Step 1 asks add -> C starts at t=2 at 12 $/h; step 2 asks remove -> at t=3 A goes.
    env = GymScalingCompatEnv(**SMALL)
    _, _, infos = run(env, [2, 0] + [1] * 24)
    cost = np.array([info["cost"] for info in infos])  # cost[t-1] is step t's bill
    assert [info["instances"] for info in infos[:3]] == [2, 3, 2]
    # t=12: B age 12 -> 1000/12·12 = 1000 (C age 10: nothing). Had C gone, A+B = 2000.
    # t=14: C age 12 -> 12/12·12 = 12.  t=24: B -> 1000/12·24 = 2000.  t=26: C -> 24.
    expected = np.zeros(26)
    expected[[11, 13, 23, 25]] = [1000, 12, 2000, 24]
    np.testing.assert_allclose(cost, expected)


def test_cost_is_cumulative_at_whole_hours_and_initial_instances_cost_87():
    env = GymScalingCompatEnv(load="steady", change_rate=1)
    _, _, infos = run(env, [2] + [1] * 35)  # one instance added at t = 2, priced 0.192 $/h
    cost = np.array([info["cost"] for info in infos])
    expected = np.zeros(36)
    expected[11] = 50 * 87 / 12 * 12  # 4350: fifty initial instances at 87 $/h, age 12
    expected[13] = 0.192 / 12 * 12  # the new instance at age 12
    expected[23] = 50 * 87 / 12 * 24  # 8700: again from the start, age 24
    expected[25] = 0.192 / 12 * 24
    expected[35] = 50 * 87 / 12 * 36  # 13050
    np.testing.assert_allclose(cost, expected)
    assert cost.sum() == pytest.approx(4350 + 8700 + 13050 + 0.192 * 3)


def test_out_of_range_action_is_penalised_one_step_late():
    env = GymScalingCompatEnv(**{**SMALL, "min_instances": 2})
    _, rewards, infos = run(env, [0, 1, 2, 2, 2, 1, 1])
    assert [info["penalty"] for info in infos] == [0, -0.1, 0, 0, 0, -0.1, 0]
    assert [info["instances"] for info in infos] == [2, 2, 2, 3, 4, 4, 4]
    assert [info["scale_action"] for info in infos] == [0, 0, 0, 1, 1, 0, 0]
    # step 2: remove to 1 < min 2 refused: −(1 − 0.5)·2/4 − 0.1 = −0.35
    assert rewards[1] == pytest.approx(-0.35)
    # step 5: capacity 3000, load ceil(33.3) = 34, n = 4: −0.66·4/4 = −0.66
    assert rewards[4] == pytest.approx(-0.66)
    # step 6: add to 5 > max 4 refused; capacity 4000, load 25: −0.75 − 0.1 = −0.85
    assert rewards[5] == pytest.approx(-0.85)


def test_queue_carries_over_and_costs_reward():
    # max_influx = 4/2·100 = 200; sine influx ceil((sin(0.01t) + 1)·100) = 101, 102, 103, ...
    env = GymScalingCompatEnv(
        load="sine_curve", max_instances=4, min_instances=1, capacity_per_instance=100,
        offset=0, change_rate=1,
    )  # fmt: skip
    observations, rewards, infos = run(env, [0, 1, 1, 1, 1])
    assert [info["influx"] for info in infos] == [101, 102, 103, 104, 105]
    assert [info["load_pct"] for info in infos] == [51, 51, 100, 100, 100]  # ceil(50.5) = 51
    # from t=3 one instance (100/step): queue 103−100 = 3, 3+104−100 = 7, 7+105−100 = 12
    assert [o[4] for o in observations[1:]] == [0, 0, 3, 7, 12]
    np.testing.assert_allclose(
        rewards, [-(1 - 0.51) * 0.5, -(1 - 0.51) * 0.25, -3 / 4, -7 / 8, -12 / 13]
    )


def test_terminates_when_queue_exceeds_ten_max_influx():
    env = GymScalingCompatEnv(
        load="sine_curve", max_instances=4, min_instances=1, capacity_per_instance=100,
        offset=0, change_rate=1,
    )  # fmt: skip
    env.reset(seed=0)
    env.step(0)  # down to one instance (100/step) against a sine rising from 100 to 200
    ended_at = None
    for step in range(2, 200):
        obs, _, terminated, _, _ = env.step(1)
        assert env.observation_space.contains(obs)
        assert terminated == (obs[4] > 10 * 200)
        if terminated:
            ended_at = step
            break
    # queue ≈ Σ 100·sin(0.01t) ≈ 10000·(1 − cos(0.01t)) passes 2000 near t = 100·acos(0.8) ≈ 64
    assert ended_at is not None and 58 <= ended_at <= 65


def test_influx_only_changes_every_change_rate_steps():
    # published default change_rate=10000: influx stays at pattern(0) = ceil(4350/2) = 2175
    default = influx_series("sine_curve", 300, change_rate=10000)
    assert set(default) == {2175}
    every5 = influx_series("sine_curve", 10, change_rate=5)
    # t=5: ceil(2175·(1 + sin 0.05)) = ceil(2283.7) = 2284; t=10: ceil(2392.1) = 2393
    assert list(every5) == [2175] * 5 + [2284] * 5 + [2393]


# -- load patterns ------------------------------------------------------------------------
def test_sine_curve_bounds_and_period():
    influx = influx_series("sine_curve", 1200)
    assert influx[0] == 2175  # ceil((0 + 1)·4350/2)
    assert influx.min() == 1 and influx.max() == 4350
    assert 150 <= int(np.argmax(influx[:628])) <= 158  # peak at 0.01t = π/2, t ≈ 157
    # Trough at 0.01t = 3π/2 ≈ 4.712; 2175·(1 − cos δ) < 1 for |δ| < 0.03 rad, so influx = 1
    # on t = 471 ± 3; one period (2π/0.01 ≈ 628.3 steps) later around 1099.6.
    troughs = np.flatnonzero(influx == 1)
    first, second = troughs[troughs < 628], troughs[troughs >= 628]
    assert 471 in first and first.min() >= 468 and first.max() <= 474
    assert 1100 in second and second.min() >= 1096 and second.max() <= 1103


def test_sinusoidal_bounds():
    influx = influx_series("sinusoidal", 700)
    assert influx[0] == 2425  # ceil(1·3850/2) + 500
    assert influx.min() == 501 and influx.max() == 4350
    troughs = np.flatnonzero(influx == 501)  # 1925·(1 − cos δ) < 1 for |δ| < 0.032 rad
    assert 471 in troughs and troughs.min() >= 468 and troughs.max() <= 475


def test_steady_is_constant():
    assert set(influx_series("steady", 50)) == {2425}  # int(500 + 3850/2)


def test_spike_every_500_steps_with_linear_ramp():
    influx = influx_series("spike", 1100)
    # base 500 + 0.3·3850 = 1655, peak 500 + 0.8·3850 = 3580, step (3580 − 1655)/10 = 192.5
    ramp = [1655, 1847, 2040, 2232, 2425, 2617, 2810, 3002, 3195, 3387]  # int(1655 + 192.5k)
    down = [3580, 3387, 3195, 3002, 2810, 2617, 2425, 2232, 2040, 1847]  # int(3580 − 192.5k)
    for start in (0, 500, 1000):
        assert list(influx[start : start + 20]) == ramp + down
    assert set(influx[20:500]) == {1655} and set(influx[520:1000]) == {1655}


def test_poisson_mean_and_clipping():
    influx = influx_series("poisson", 2000, seed=3)[1:]
    assert np.all(influx == np.round(influx))
    assert influx.min() >= 500 and influx.max() <= 4350
    assert influx.mean() == pytest.approx(2425, abs=10)  # standard error √2425/√2000 ≈ 1.1
    assert 44 < influx.std() < 55  # √2425 ≈ 49
    # max_influx = 4 + (2/2·10 − 4) = 10, λ = 4 + 3 = 7, clipped to [4, 10]:
    # P(X ≤ 4) = e^-7·(1 + 7 + 24.5 + 57.17 + 100.04) ≈ 0.173, P(X ≥ 10) ≈ 0.170
    small = influx_series(
        "poisson", 2000, seed=3, max_instances=2, min_instances=1, capacity_per_instance=10,
        offset=4,
    )[1:]  # fmt: skip
    assert small.min() == 4 and small.max() == 10
    assert np.mean(small == 4) == pytest.approx(0.173, abs=0.04)
    assert np.mean(small == 10) == pytest.approx(0.170, abs=0.04)


def test_random_uniform_integers_in_offset_to_max_influx():
    influx = influx_series("random", 2000, seed=5)[1:]
    assert np.all(influx == np.round(influx))
    assert 500 <= influx.min() < 600 and 4250 < influx.max() <= 4350
    assert influx.mean() == pytest.approx(2425, abs=80)  # 3 standard errors: 3·1111/√2000


# -- the seed's policies, the config, the API ---------------------------------------------
def config_kwargs() -> dict:
    conf = yaml.safe_load(CONF.read_text())
    assert conf["id"] == ENV_ID and conf["name"] == "gym_scaling"
    assert conf["load"] == "sine_curve" and conf["horizon"] == 200
    return {k: v for k, v in conf.items() if k not in ("id", "name")}


def threshold(obs: np.ndarray) -> int:
    s = GymScalingCompatCore.signals(obs)
    if s["load_pct"] > 80 or s["queue"] > 100:
        return 2
    if s["load_pct"] < 40 and s["queue"] == 0:
        return 0
    return 1


@pytest.mark.parametrize("load", LOAD_PATTERNS)
def test_threshold_and_do_nothing_run_200_steps(load):
    kwargs = {**config_kwargs(), "load": load.upper()}
    for policy in (threshold, lambda obs: 1):
        env = gym.make(ENV_ID, **kwargs)
        obs, _ = env.reset(seed=1)
        costs, instances, scaled = [], [], 0
        for step in range(1, 201):
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            assert np.isfinite(reward) and reward <= 0 and not terminated
            assert truncated == (step == 200)
            costs.append(info["cost"])
            instances.append(info["instances"])
            scaled += info["scale_action"]
        if policy is threshold and load == "sine_curve":
            assert scaled > 0  # load reaches 100 % near t = 157
        if policy is not threshold:
            # 50 instances at 87 $/h billed at t = 12k, k = 1..16: 4350·(1 + … + 16) = 591600
            assert set(instances) == {50} and sum(costs) == pytest.approx(4350 * 136)


def test_signals_read_load_and_queue_from_observations():
    obs = np.float32([[0.5, 0.8, 4350, 2000, 0], [0.3, 0.29, 2610, 3000, 150]])
    s = GymScalingCompatCore.signals(obs)
    np.testing.assert_array_equal(s["load_pct"], [80, 29])  # not 80.000001: no spurious add
    np.testing.assert_array_equal(s["queue"], [0, 150])
    assert threshold(obs[0]) == 1


@pytest.mark.parametrize("load", LOAD_PATTERNS)
def test_check_env(load):
    env = gym.make(ENV_ID, load=load, change_rate=1, horizon=50, render_mode="ansi")
    check_env(env.unwrapped)


def test_info_contract():
    core = GymScalingCompatCore
    assert core.render_keys == ("influx", "capacity", "instances", "queue")
    assert core.info_aggregates == {
        "cost": "sum", "scale_action": "sum", "penalty": "sum",
        "load_pct": "mean", "instances": "mean", "queue": "mean",
    }  # fmt: skip
    _, _, infos = run(GymScalingCompatEnv(load="spike"), [1])
    assert set(infos[0]) == {
        "influx", "capacity", "instances", "queue", "load_pct", "cost", "penalty", "scale_action"
    }  # fmt: skip


@pytest.mark.parametrize("load", ["random", "poisson"])
def test_determined_by_seed(load):
    actions = np.random.default_rng(0).integers(0, 3, 100)
    a = run(GymScalingCompatEnv(load=load, change_rate=1), actions, seed=4)
    b = run(GymScalingCompatEnv(load=load, change_rate=1), actions, seed=4)
    c = run(GymScalingCompatEnv(load=load, change_rate=1), actions, seed=5)
    np.testing.assert_array_equal(np.array(a[0]), np.array(b[0]))
    assert a[1] == b[1]
    assert not np.array_equal(np.array(a[0]), np.array(c[0]))


@pytest.mark.parametrize("load", ["random", "poisson"])
def test_batched_equals_single_copies(load):
    n, seed, kwargs = 16, 11, dict(load=load, horizon=37, change_rate=1)
    venv = make_vec(ENV_ID, n, seed=seed, **kwargs)
    singles = [gym.make(ENV_ID, **kwargs) for _ in range(n)]
    obs = venv.reset()
    for i, env in enumerate(singles):
        np.testing.assert_array_equal(obs[i], env.reset(seed=seed + i)[0])
    rng = np.random.default_rng(2)
    resets = 0
    for _ in range(500):
        actions = rng.integers(0, 3, n)
        obs, rewards, dones, infos = venv.step(actions)
        for i, env in enumerate(singles):
            o, r, terminated, truncated, info = env.step(int(actions[i]))
            assert rewards[i] == r and dones[i] == (terminated or truncated)
            assert {k: v[i].item() for k, v in venv.last_info.items()} == info
            if dones[i]:
                np.testing.assert_array_equal(infos[i]["terminal_observation"], o)
                o, _ = env.reset()
                resets += 1
            np.testing.assert_array_equal(obs[i], o)
    assert resets >= n * 13  # 500 // 37 = 13 truncations per copy


def test_render_modes():
    env = GymScalingCompatEnv(load="sine_curve", change_rate=1, render_mode="ansi")
    env.reset(seed=0)
    env.step(1)
    text = env.render()
    assert text.startswith("t=   1") and "influx=2197" in text  # ceil(2175·(1 + sin 0.01))
    env = GymScalingCompatEnv(load="sine_curve", change_rate=1, render_mode="rgb_array")
    run(env, [1, 2, 1])
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"load": "bursty"}, "load"),
        ({"horizon": 0}, "horizon"),
        ({"max_instances": 1}, "max_instances"),
        ({"min_instances": 5, "max_instances": 4}, "min_instances"),
        ({"min_instances": 0}, "min_instances"),
        ({"capacity_per_instance": -87}, "capacity_per_instance"),
        ({"cost_per_instance_per_hour": -1.0}, "cost_per_instance_per_hour"),
        ({"cost_per_instance_per_hour": math.nan}, "cost_per_instance_per_hour"),
        ({"offset": 5000}, "offset"),  # above max_influx = 4350
        ({"change_rate": 0}, "change_rate"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GymScalingCompatEnv(**kwargs)
    with pytest.raises(ValueError, match=name):
        make_vec(ENV_ID, 2, **kwargs)


def test_bad_action_is_rejected():
    env = GymScalingCompatEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(3)


# -- step for step against a plain transcription of the published algorithm ----------------
def published_reference(load_fn, actions, max_n=6, min_n=2, cap=800, price=0.192, offset=500):
    """The published ScalingEnv, one instance list and one Python float at a time."""
    max_influx = offset + (max_n / 2 * cap - offset)
    instances = [(0, float(cap))] * int(max_n / 2)  # (start, $/h); capacity as price
    queue, pending = 0.0, 0
    out = []
    for t, a in enumerate(actions, start=1):
        influx = load_fn(t, max_influx, offset)
        total = influx + queue
        capacity = len(instances) * cap
        processed = min(total, capacity)
        load = math.ceil(float(processed) / float(capacity) * 100)
        queue = total - processed
        cost = sum(p / 12.0 * (t - s) for s, p in instances if (t - s) % 12 == 0)
        delta, pending = pending, a - 1
        penalty = 0.0
        if max_n >= len(instances) + delta >= min_n:
            if delta > 0:
                instances.append((t, price))
            elif delta < 0:
                instances.pop(0)
        else:
            penalty = -0.1
        reward = -1 * (1 - load / 100) * (len(instances) / max_n) + penalty - queue / (1 + queue)
        obs = [len(instances) / max_n, load / 100, capacity, influx, queue]
        out.append((obs, reward, cost))
    return out


def test_matches_published_algorithm_step_for_step():
    def sine(t, mi, off):
        return math.ceil((np.sin(float(t) * 0.01) + 1) * mi / 2)

    actions = list(np.random.default_rng(9).choice(3, size=600, p=[0.45, 0.1, 0.45]))
    env = GymScalingCompatEnv(
        load="sine_curve", max_instances=6, min_instances=2, capacity_per_instance=800,
        offset=500, change_rate=1,
    )  # fmt: skip
    observations, rewards, infos = run(env, actions)
    expected = published_reference(sine, actions)
    penalties = sum(info["penalty"] < 0 for info in infos)
    assert penalties > 20  # the random walk hits both bounds often
    for (obs, reward, cost), got, r, info in zip(
        expected, observations[1:], rewards, infos, strict=True
    ):
        np.testing.assert_array_equal(got, np.float32(obs))
        assert r == reward
        assert info["cost"] == pytest.approx(cost, rel=1e-12)
