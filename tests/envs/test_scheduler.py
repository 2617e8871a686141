"""rlbench/ScriptScheduler-v0: dynamics worked out by hand, API checks, batched = single."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from env_checks import episode_signature, play, run_batched_against_singles
from gymnasium.utils.env_checker import check_env
from omegaconf import OmegaConf

import rlbench  # noqa: F401  (registers the environments)
from rlbench.envs.batched import BatchedVecEnv
from rlbench.envs.scheduler import ScriptSchedulerCore, ScriptSchedulerEnv

ENV_ID = "rlbench/ScriptScheduler-v0"
DECREASE, KEEP, INCREASE = 0, 1, 2
CONF = Path(__file__).parents[2] / "conf" / "env" / "scheduler.yaml"
# A user whose ideal is fixed at 40 minutes; half-weight gap averaging; 30-minute steps.
FIXED_USER = dict(ideal_low=40.0, ideal_high=40.0, drift=0.0, gap_smoothing=0.5, step_minutes=30.0)


def test_scheduled_runs_average_gap_and_seed_reward() -> None:
    env = ScriptSchedulerEnv(
        **FIXED_USER, initial_interval=20.0, manual_rate=0.0, preference_prob=1.0,
        reward_mode="seed",
    )  # fmt: skip
    steps = play(env, [KEEP, INCREASE, DECREASE])
    info = [s[2] for s in steps]
    # Step 1: interval 20, timer 0 -> one run at minute 20 (gap 20), timer 30 - 20 = 10.
    #   20/40 = 0.5 < 1/1.5: the user asks for less often (-1). Seed reward: request 0.5 +
    #   stable (|20 - 20| <= 1.5) 0.2 = 0.7.
    # Step 2: interval 23, first run after 23 - 10 = 13 min (gap 23), timer 30 - 13 = 17;
    #   average 0.5*20 + 0.5*23 = 21.5. |23 - 20| > 1.5: reward 0.5.
    # Step 3: interval 19.55, first run after 2.55 min (gap 19.55), the next 19.55 later;
    #   average 0.5*21.5 + 0.5*19.55 = 20.525, then 0.5*20.525 + 0.5*19.55 = 20.0375;
    #   timer 30 - 22.1 = 7.9. |19.55 - 21.5| = 1.95 > 1.5: reward 0.5.
    assert [i["interval"] for i in info] == pytest.approx([20.0, 23.0, 19.55])
    assert [i["runs"] for i in info] == [1, 1, 2]
    assert [i["avg_gap"] for i in info] == pytest.approx([20.0, 21.5, 20.0375])
    assert [i["preference"] for i in info] == [-1, -1, -1]
    assert [s[1] for s in steps] == pytest.approx([0.7, 0.5, 0.5])
    assert env.core.since[0] == pytest.approx(7.9)
    sig = env.core.signals(steps[2][0])
    assert sig["avg_gap"] == pytest.approx(20.0375, rel=1e-5)
    assert sig["interval"] == pytest.approx(19.55, rel=1e-5)
    assert (sig["preference"], sig["manual_count"]) == (-1, 0)
    # The observation itself: log(x / 3) / log(1440 / 3) and (pref + 1) / 2.
    expected = [
        math.log(20.0375 / 3) / math.log(480),
        0.0,
        0.0,
        math.log(19.55 / 3) / math.log(480),
    ]
    np.testing.assert_allclose(steps[2][0], expected, rtol=1e-6)


def test_floor_and_overdue_run() -> None:
    env = ScriptSchedulerEnv(
        **FIXED_USER, initial_interval=3.3, manual_rate=0.0, preference_prob=0.0,
        reward_mode="seed",
    )  # fmt: skip
    (_, reward, info), (_, reward2, info2) = play(env, [DECREASE, DECREASE])
    # 3.3 * 0.85 = 2.805 is clipped to the floor 3: runs at minutes 3, 6, ..., 27 (runs fall in
    # [0, 30)), so 9 runs; timer 30 - 27 = 3. Reward: floor -0.3, and the interval 3 is within
    # 1.5 of the observed average 3.3: +0.2.
    assert info["interval"] == 3.0 and info["at_floor"] == 1
    assert info["runs"] == 9
    assert reward == pytest.approx(-0.1)
    # Step 2: the timer (3) has reached the interval (3): a run at once, then 9 more.
    assert info2["runs"] == 10 and reward2 == pytest.approx(-0.1)


def test_overdue_script_runs_at_once_after_a_decrease() -> None:
    env = ScriptSchedulerEnv(
        **FIXED_USER, initial_interval=40.0, decrease_factor=0.5, manual_rate=0.0,
        preference_prob=0.0,
    )  # fmt: skip
    steps = play(env, [KEEP, DECREASE])
    info = [s[2] for s in steps]
    # Step 1: interval 40 > 30 minutes: no run, timer 30. Step 2: interval 20 < timer 30, so a
    # run at once (gap 30), the next at minute 20 (gap 20); timer 30 - 20 = 10.
    # Average: 0.5*40 + 0.5*30 = 35, then 0.5*35 + 0.5*20 = 27.5.
    assert [i["runs"] for i in info] == [0, 2]
    assert [i["avg_gap"] for i in info] == pytest.approx([40.0, 27.5])
    assert env.core.since[0] == pytest.approx(10.0)


def test_manual_runs_when_stale_and_regret_reward() -> None:
    env = ScriptSchedulerEnv(
        **FIXED_USER, initial_interval=100.0, manual_rate=1e9, preference_prob=0.0,
        run_cost=0.1, manual_window=2,
    )  # fmt: skip
    steps = play(env, [KEEP] * 5)
    info = [s[2] for s in steps]
    # Interval 100 > ideal 40: no scheduled run within 30 minutes. The timer reads 0, 30, 60,
    # 30, 60 when the user looks; at 60 > 40 (staleness 0.5, rate 1e9) they run it by hand.
    assert [i["manual_runs"] for i in info] == [0, 0, 1, 0, 1]
    assert [i["runs"] for i in info] == [0, 0, 1, 0, 1]
    # Manual gaps of 60: average 0.5*100 + 0.5*60 = 80, then 0.5*80 + 0.5*60 = 70.
    assert [i["avg_gap"] for i in info] == pytest.approx([100, 100, 80, 80, 70])
    # Regret reward: -|100 - 40| / 40 - 0.1 per run.
    assert [s[1] for s in steps] == pytest.approx([-1.5, -1.5, -1.6, -1.5, -1.6])
    assert [i["regret"] for i in info] == pytest.approx([1.5] * 5)
    # The window holds the last 2 steps: step 3's manual run has left it by step 5.
    assert [env.core.signals(s[0])["manual_count"] for s in steps] == [0, 0, 1, 1, 1]


def test_user_asks_for_more_often_when_interval_is_too_long() -> None:
    env = ScriptSchedulerEnv(**FIXED_USER, initial_interval=100.0, preference_prob=1.0)
    env.reset(seed=1)
    obs, _, _, _, info = env.step(KEEP)
    assert info["preference"] == 1 and obs[1] == 1.0  # 100 / 40 = 2.5 > 1.5


def test_manual_run_probability_rises_with_staleness() -> None:
    # 4000 scripts with interval 1000, ideal 40, 60-minute steps: the user first looks at a
    # timer of 60 (staleness 60/40 - 1 = 0.5), then, if they did not run it, of 120 (2.0).
    n = 4000
    core = ScriptSchedulerCore(n, **{**FIXED_USER, "step_minutes": 60.0}, initial_interval=1000.0)
    venv = BatchedVecEnv(core)
    venv.seed(0)
    venv.reset()
    keep = np.full(n, KEEP)
    venv.step(keep)
    assert venv.last_info["manual_runs"].sum() == 0
    venv.step(keep)
    first = venv.last_info["manual_runs"].astype(bool)
    assert first.mean() == pytest.approx(1 - math.exp(-0.5), abs=0.03)  # 0.393
    venv.step(keep)
    second = venv.last_info["manual_runs"][~first]
    assert second.mean() == pytest.approx(1 - math.exp(-2.0), abs=0.03)  # 0.865


def test_ideal_drifts_as_a_log_normal_walk_within_bounds() -> None:
    n, steps = 200, 40
    core = ScriptSchedulerCore(n, ideal_low=1.0, ideal_high=1e6, drift=0.05, horizon=steps)
    venv = BatchedVecEnv(core)
    venv.seed(3)
    venv.reset()
    ideals = [core.ideal.copy()]
    for _ in range(steps):
        venv.step(np.full(n, KEEP))
        ideals.append(venv.last_info["ideal"])
    logs = np.log(np.array(ideals))
    assert np.isclose(np.diff(logs, axis=0).std(), 0.05, rtol=0.1)
    assert (np.array(ideals) >= 1.0).all() and (np.array(ideals) <= 1e6).all()


def test_check_env_passes() -> None:
    check_env(gym.make(ENV_ID).unwrapped)
    check_env(gym.make(ENV_ID, reward_mode="seed").unwrapped)


def test_reset_seed_determines_the_episode() -> None:
    def episode(seed: int) -> np.ndarray:
        return episode_signature(ENV_ID, seed, 30, 3, horizon=30)

    np.testing.assert_array_equal(episode(4), episode(4))
    assert not np.array_equal(episode(4), episode(5))


def test_batched_equals_single_copies() -> None:
    n, steps, horizon = 16, 300, 37
    kwargs = dict(horizon=horizon, drift=0.2, initial_interval=30.0)
    episodes = run_batched_against_singles(ENV_ID, n, steps, 11, 3, **kwargs)
    assert episodes == n * (steps // horizon)


def test_config_lists_every_constructor_argument() -> None:
    conf = OmegaConf.to_container(OmegaConf.load(CONF))
    assert (conf.pop("id"), conf.pop("name")) == (ENV_ID, "scheduler")
    assert set(conf) == set(inspect.signature(ScriptSchedulerCore).parameters) - {"num_envs"}
    env = gym.make(ENV_ID, **conf)
    env.reset(seed=0)
    assert env.step(KEEP)[4]["interval"] == 60.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"horizon": 0}, "horizon"),
        ({"step_minutes": 0}, "step_minutes"),
        ({"min_interval": -1}, "min_interval"),
        ({"max_interval": 2.0}, "max_interval"),
        ({"initial_interval": 2000}, "initial_interval"),
        ({"decrease_factor": 1.2}, "decrease_factor"),
        ({"increase_factor": 0.9}, "increase_factor"),
        (
            {"ideal_low": 50, "ideal_high": 20},
            r"ideal_low \(50\) must not exceed ideal_high \(20\)",
        ),
        ({"ideal_low": 300}, r"ideal_low \(300\) must not exceed ideal_high \(240\)"),
        ({"preference_prob": 1.5}, "preference_prob"),
        ({"preference_ratio": 0.5}, "preference_ratio"),
        ({"manual_window": 0}, "manual_window"),
        ({"gap_smoothing": 0}, "gap_smoothing"),
        ({"reward_mode": "bogus"}, "reward_mode"),
        ({"run_cost": -1}, "run_cost"),
        ({"manual_reward": float("nan")}, "manual_reward"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ScriptSchedulerEnv(**kwargs)


def test_following_the_users_signals_beats_random() -> None:
    """Decrease on a request for more or a recent manual run, increase on a request for less."""
    n = 32

    def mean_regret(policy) -> float:
        core = ScriptSchedulerCore(n)
        venv = BatchedVecEnv(core)
        venv.seed(100)
        obs, regret = venv.reset(), []
        for _ in range(core.horizon):
            obs, *_ = venv.step(policy(core.signals(obs)))
            regret.append(venv.last_info["regret"])
        return float(np.mean(regret))

    rng = np.random.default_rng(0)
    random = mean_regret(lambda s: rng.integers(0, 3, n))
    follow = mean_regret(
        lambda s: np.where(
            (s["preference"] > 0) | (s["manual_count"] > 0),
            DECREASE,
            np.where(s["preference"] < 0, INCREASE, KEEP),
        )
    )
    assert follow < 0.5 * random, f"signal-following regret {follow:.3f} vs random {random:.3f}"
