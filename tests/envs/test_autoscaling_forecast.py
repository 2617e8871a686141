"""Autoscaling-v0 with a load forecast in its observation (``env.forecast``): the layout per
mode, the same episodes with or without one, batched = single, and the rule that reads it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from env_checks import run_batched_against_singles
from gymnasium.utils.env_checker import check_env

import rlbench  # noqa: F401  (registers the environments)
from rlbench.agents.baselines import ThresholdAgent
from rlbench.envs import load_patterns, make_vec
from rlbench.envs.autoscaling import AutoscalingEnv
from rlbench.envs.forecasters import LastValue, SeasonalNaive, make_forecaster
from rlbench.envs.lstm_forecaster import expected_shapes, load_forecaster, save_forecaster

ENV = "rlbench/Autoscaling-v0"
FULL = 50 * 100.0  # max_instances * capacity: the observation's load scale


def _episode_loads(**kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Observations and arrivals over one 288-step episode under random actions."""
    venv = make_vec(ENV, 1, seed=3, **kwargs)
    obs, arrivals = [venv.reset()[0]], []
    for a in np.random.default_rng(1).integers(0, 3, 287):
        o, *_ = venv.step(np.array([a]))
        obs.append(o[0])
        arrivals.append(venv.core.arrivals[0])
    return np.array(obs), np.array(arrivals)


@pytest.mark.parametrize("mode", ["naive", "last_value", "oracle"])
def test_observation_layout(mode: str) -> None:
    obs, arrivals = _episode_loads(load="random", forecast=mode, forecast_steps=4)
    assert obs.shape == (288, 11)
    forecast = obs[:, 7:] * FULL  # entry 7 + j: the load of step t + j
    if mode == "oracle":  # the true next loads
        for j in range(4):
            np.testing.assert_allclose(forecast[: 287 - j, j], arrivals[j:], rtol=1e-5)
    elif mode == "last_value":  # the last step's arrivals (entry 4), repeated
        np.testing.assert_allclose(forecast[1:], np.repeat(arrivals[:, None], 4, 1), rtol=1e-5)
        np.testing.assert_allclose(forecast[1:, 0] / FULL, obs[1:, 4], atol=1e-7)
    else:  # one period (288 steps = the episode) earlier: the pattern's history before step 0
        env = AutoscalingEnv(load="random", forecast="naive", forecast_steps=4)
        env.reset(seed=3)
        core = env.unwrapped.core
        np.testing.assert_allclose(core.forecast_loads()[0], core.loads[0, :4])
    assert (obs >= 0).all() and (obs <= 1).all()


@pytest.mark.parametrize("load", ["steady", "sine_curve", "spike", "poisson", "random", "trace"])
def test_same_episodes_with_or_without_a_forecast(load: str) -> None:
    """Every mode replays the loads of forecast=none, also after an auto-reset, so forecast
    modes are compared on the same episodes."""

    def two_episodes(**kwargs) -> list[np.ndarray]:
        venv = make_vec(ENV, 2, seed=11, load=load, noise=0.1, **kwargs)
        venv.reset()
        seen = []
        for _ in range(2):
            b = venv.core._before
            seen.append(venv.core.loads[:, b : b + 288].copy())
            for _ in range(288):
                venv.step(np.ones(2, dtype=int))
        return seen

    plain = two_episodes()
    assert not np.array_equal(plain[0], plain[1]) or load in ("steady", "sine_curve", "spike")
    for mode in ("naive", "oracle"):
        for ours, theirs in zip(two_episodes(forecast=mode), plain, strict=True):
            np.testing.assert_array_equal(ours, theirs)


def test_seasonal_history_continues_the_pattern() -> None:
    """Before step 0 the deterministic patterns are the pattern itself: the naive forecast
    of a noise-free daily sine is exact."""
    obs, arrivals = _episode_loads(load="sine_curve", forecast="naive", forecast_steps=3)
    for j in range(3):
        np.testing.assert_allclose(obs[: 287 - j, 7 + j] * FULL, arrivals[j:], rtol=1e-5)
    p = load_patterns.LoadParams()
    walk = load_patterns.extend("random", np.full(5, 3000.0), 400, 400, p, np.random.default_rng(0))
    assert walk.shape == (805,) and (walk >= 500).all() and (walk <= 3500).all()
    np.testing.assert_array_equal(walk[400:405], 3000.0)
    assert abs(walk[399] - 3000) < 5 * p.random_step and abs(walk[405] - 3000) < 5 * p.random_step


@pytest.fixture(scope="module")
def lstm_folder(tmp_path_factory) -> str:
    """An untrained LSTM forecaster folder (random weights): the env's plumbing, not accuracy."""
    meta = {"window": 12, "steps": 6, "hidden": 8, "period": 288}
    rng = np.random.default_rng(0)
    weights = {k: rng.normal(0, 0.3, s) for k, s in expected_shapes(meta).items()}
    return str(save_forecaster(tmp_path_factory.mktemp("lstm") / "f", weights, meta))


@pytest.mark.parametrize("mode", ["naive", "last_value", "lstm", "oracle"])
def test_batched_equals_single_copies_with_forecasts(mode: str, lstm_folder: str) -> None:
    """Bit for bit, the LSTM's forecasts included (each copy's made in a call of its own)."""
    kwargs = dict(load="random", noise=0.1, horizon=37, provision_delay=1, forecast=mode)
    kwargs["forecast_model"] = lstm_folder
    if mode == "lstm":  # the forecaster's period (a forecaster of another one is refused)
        kwargs["period"] = 288
    episodes = run_batched_against_singles(ENV, 6, 120, 5, 3, **kwargs, forecast_steps=3)
    assert episodes == 6 * (120 // 37)


def test_lstm_forecasts_read_only_the_loads_before_their_step(lstm_folder: str) -> None:
    """Made at reset for the whole episode, each forecast equals the forecaster's own answer
    on the window before its step, and changing a later load changes no earlier forecast."""
    env = AutoscalingEnv(load="random", forecast="lstm", forecast_model=lstm_folder)
    env.reset(seed=4)
    core = env.unwrapped.core
    forecaster = load_forecaster(lstm_folder)
    loads = core.loads[0]  # the 12 loads of history, then the episode
    for t in (0, 1, 100, 288):
        direct = forecaster.predict(loads[None, t : t + 12], np.array([t]), 288.0)
        np.testing.assert_allclose(core.forecasts[0, t], direct[0], rtol=1e-5)
    changed = loads.copy()
    changed[12 + 150] *= 3.0  # the load of step 150
    again = core._episode_forecasts(changed)
    np.testing.assert_array_equal(again[:151], core.forecasts[0, :151])
    assert not np.allclose(again[151], core.forecasts[0, 151])


@pytest.mark.parametrize("mode", ["naive", "oracle"])
def test_check_env_passes_with_a_forecast(mode: str) -> None:
    check_env(gym.make(ENV, forecast=mode).unwrapped)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"forecast": "crystal_ball"}, "forecast must be one of none, naive"),
        ({"forecast": "oracle", "forecast_steps": 0}, "forecast_steps must be an integer >= 1"),
        ({"forecast": "lstm"}, "forecast_model: forecast=lstm needs a trained forecaster"),
        ({"forecast": "naive", "forecast_steps": 20, "period": 12}, "must be <= the period"),
    ],
)
def test_bad_forecast_settings_name_the_setting(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AutoscalingEnv(**kwargs)


def test_baseline_forecasters_batch_their_copies() -> None:
    history = np.arange(24.0).reshape(2, 12)
    t = np.array([5, 9])
    np.testing.assert_array_equal(LastValue(3).predict(history, t, 12.0), [[11] * 3, [23] * 3])
    np.testing.assert_array_equal(SeasonalNaive(3, 12).predict(history, t, 12.0), history[:, :3])
    assert make_forecaster("none", 3, 12.0, None) is None
    assert make_forecaster("oracle", 3, 12.0, None) is None


def test_tabular_hint_bins_the_forecast_when_a_new_instance_would_serve() -> None:
    core = make_vec(ENV, 1, forecast="oracle", forecast_steps=6, provision_delay=2).core
    assert core.tabular_hint["obs_indices"] == [0, 2, 3, 9]
    assert make_vec(ENV, 1).core.tabular_hint["obs_indices"] == [0, 2, 3]


def test_threshold_rule_scales_ahead_of_a_forecast_rise() -> None:
    """A spike the forecast sees coming: the forecast-aware rule adds before the load rises,
    and does not remove capacity the forecast says will be needed."""
    venv = make_vec(ENV, 1, seed=0, load="spike", forecast="oracle", provision_delay=2)
    obs = venv.reset()
    aware = ThresholdAgent(venv, {"name": "threshold"}, seed=0)
    blind = ThresholdAgent(venv, {"name": "threshold", "use_forecast": False}, seed=0)
    sig = venv.core.signals(obs)
    assert sig["forecast_pct"].shape == (1,)
    # a quiet step with a big rise two steps ahead: load 40 %, forecast well above upper
    rule_in = {"load_pct": np.array([50.0]), "queue": np.array([0.0])}
    assert aware.rule(**rule_in, forecast_pct=np.array([120.0]))[0] == 2
    assert blind.rule(**rule_in)[0] == 1
    assert aware.rule(np.array([30.0]), np.array([0.0]), np.array([60.0]))[0] == 1  # keep
    assert aware.rule(np.array([30.0]), np.array([0.0]), np.array([30.0]))[0] == 0
    returns = {}
    for name, agent in (("aware", aware), ("blind", blind)):
        venv = make_vec(ENV, 1, seed=0, load="spike", forecast="oracle", provision_delay=2)
        obs, total = venv.reset(), 0.0
        for _ in range(288):
            obs, reward, *_ = venv.step(agent.predict(obs))
            total += float(reward[0])
        returns[name] = total
    assert returns["aware"] > returns["blind"] + 5.0, returns
