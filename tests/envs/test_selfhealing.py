"""rlbench/SelfHealing-v0: incidents and rewards worked out by hand, API checks, batched = single
copies."""

from __future__ import annotations

import inspect
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from env_checks import episode_signature, run_batched_against_singles
from gymnasium.utils.env_checker import check_env
from omegaconf import OmegaConf

import rlbench  # noqa: F401  (registers the environments)
from rlbench.envs.batched import BatchedVecEnv
from rlbench.envs.selfhealing import (
    CPU_SPIKE,
    CRASH,
    RewardConfig,
    SelfHealingCore,
    SelfHealingEnv,
)

ENV_ID = "rlbench/SelfHealing-v0"
CONF = Path(__file__).parents[2] / "conf" / "env" / "selfhealing.yaml"
NOOP, RESTART, SCALE_UP, SCALE_DOWN, CLEAR_CACHE, ROLLBACK, FAILOVER = range(7)
ZERO_ROW = [0.0] * 7
# Deterministic service: load 2.0 on 4 replicas, no symptom noise, no recovery jitter, every
# healthy step starts an incident. Crashes heal by restart (2 s), rollback (6 s) or failover
# (4 s) for sure, and by nothing else; CPU spikes heal by scale up (2 s) for sure.
SURE = dict(
    load_low=2.0,
    load_high=2.0,
    symptom_noise=0.0,
    recovery_jitter=0.0,
    incident_prob=1.0,
    success_prob=[[0, 1, 0, 0, 0, 1, 1], ZERO_ROW, [0, 0, 1, 0, 0, 0, 0], ZERO_ROW],
    recovery_time=[[1, 2, 1, 1, 1, 6, 4], [1] * 7, [1, 1, 2, 1, 1, 1, 1], [1] * 7],
)


def play(env: SelfHealingEnv, actions: list[int]) -> tuple[np.ndarray, list[tuple]]:
    obs, _ = env.reset(seed=0)
    out = []
    for a in actions:
        o, reward, terminated, _, info = env.step(a)
        assert not terminated
        out.append((o, reward, info))
    return obs, out


def test_failed_repeated_and_successful_attempts_on_crashes() -> None:
    env = SelfHealingEnv(**SURE, failure_weights=[1, 0, 0, 0])
    obs, steps = play(env, [NOOP, CLEAR_CACHE, RESTART, ROLLBACK, FAILOVER])
    rewards = [s[1] for s in steps]
    info = [s[2] for s in steps]
    # A crash from the start: CPU 0.05, memory 0.1, errors 0.9, latency 1.0, replicas
    # (4 - 1) / 9, dependency 1.0, utilisation 2 / 4, no failed attempt yet.
    np.testing.assert_allclose(obs, [0.05, 0.1, 0.9, 1.0, 3 / 9, 1.0, 0.5, 0.0], rtol=1e-6)
    # no-op fails (-10); clear cache fails again (-10 - 5); restart heals in 2 s (< 2.5: +10 +
    # 2); a new crash starts at once; rollback heals in 6 s (> 5: +10 - 2); failover in 4 s
    # (+10).
    assert rewards == pytest.approx([-10, -15, 12, 8, 10])
    assert [i["failure"] for i in info] == [CRASH] * 5
    assert [i["healed"] for i in info] == [0, 0, 1, 1, 1]
    assert [i["failed_action"] for i in info] == [1, 1, 0, 0, 0]
    assert [i["recovery_time"] for i in info] == pytest.approx([0, 0, 2, 6, 4])
    assert steps[0][0][7] == pytest.approx(1 / 5) and steps[1][0][7] == pytest.approx(2 / 5)
    # Episode sums of the running statistics: 3 heals in 5 attempts, (2 + 6 + 4) / 3 s.
    assert sum(i["success_rate"] for i in info) == pytest.approx(0.6)
    assert sum(i["mean_recovery_time"] for i in info) == pytest.approx(4.0)


def test_escalation_after_repeated_failures() -> None:
    env = SelfHealingEnv(**SURE, failure_weights=[1, 0, 0, 0], escalate_after=2)
    _, steps = play(env, [NOOP, NOOP, NOOP])
    info = [s[2] for s in steps]
    # The second failure in a row hands the crash to an operator; a new crash starts and the
    # count of failed attempts starts again.
    assert [i["escalated"] for i in info] == [0, 1, 0]
    assert [s[1] for s in steps] == pytest.approx([-10, -15, -10])
    assert [s[0][7] for s in steps] == pytest.approx([0.5, 0.0, 0.5])


def test_scaling_bonus_when_utilisation_ends_in_band() -> None:
    env = SelfHealingEnv(**SURE, failure_weights=[0, 0, 1, 0])
    obs, steps = play(env, [SCALE_UP, SCALE_UP, SCALE_DOWN])
    # A spike doubles the load: 4 / 4 replicas -> CPU 0.98 (the profile), utilisation 1.0.
    assert (obs[0], obs[6]) == pytest.approx((0.98, 1.0))
    # 1: scale up heals in 2 s (+12); utilisation 2 / 5 = 0.4 is in [0.4, 0.8]: +1 -> 13.
    # 2: a new spike (4 / 5 = 0.8); scale up heals (+12); 2 / 6 = 0.33 is out of band -> 12.
    # 3: scale down cannot heal a spike (-10); the spike stays: 4 / 5 = 0.8 in band: +1 -> -9.
    assert [s[1] for s in steps] == pytest.approx([13, 12, -9])
    assert [s[2]["replicas"] for s in steps] == [5, 6, 5]
    assert [s[2]["failure"] for s in steps] == [CPU_SPIKE] * 3
    assert [s[2]["utilisation"] for s in steps] == pytest.approx([0.4, 2 / 6, 0.8])


def test_healthy_service_wants_no_op() -> None:
    env = SelfHealingEnv(**{**SURE, "incident_prob": 0.0})
    obs, steps = play(env, [NOOP, RESTART, SCALE_UP, SCALE_DOWN])
    # Healthy profile: CPU = utilisation 0.5, memory 0.4, errors 0.01, latency 0.1.
    np.testing.assert_allclose(obs, [0.5, 0.4, 0.01, 0.1, 3 / 9, 1.0, 0.5, 0.0], rtol=1e-6)
    assert [s[1] for s in steps] == pytest.approx([0, -1, -1, -1])
    assert [s[2]["incident"] for s in steps] == [0, 0, 0, 0]
    assert [s[2]["replicas"] for s in steps] == [4, 4, 5, 4]


def test_replicas_stay_within_bounds() -> None:
    env = SelfHealingEnv(**{**SURE, "incident_prob": 0.0}, min_replicas=3, max_replicas=5)
    _, steps = play(env, [SCALE_DOWN, SCALE_DOWN, SCALE_UP, SCALE_UP, SCALE_UP])
    assert [s[2]["replicas"] for s in steps] == [3, 3, 4, 5, 5]
    assert [s[0][4] for s in steps] == pytest.approx([0, 0, 0.5, 1, 1])


def test_default_table_success_and_recovery_by_simulation() -> None:
    # Default tables: a crash heals by restart with probability 0.9, in 3 s * (1 +- 0.25).
    n = 4000
    core = SelfHealingCore(n, incident_prob=1.0, failure_weights=[1, 0, 0, 0])
    venv = BatchedVecEnv(core)
    venv.seed(0)
    venv.reset()
    venv.step(np.full(n, RESTART))
    info = venv.last_info
    assert (info["failure"] == CRASH).all()
    assert info["healed"].mean() == pytest.approx(0.9, abs=0.015)
    times = info["recovery_time"][info["healed"] == 1]
    assert times.min() >= 2.25 and times.max() <= 3.75
    assert times.mean() == pytest.approx(3.0, abs=0.05)


def test_incident_types_follow_the_weights() -> None:
    n = 4000
    core = SelfHealingCore(n, incident_prob=0.5, failure_weights=[3, 1, 0, 0])
    core.reset_copies(np.ones(n, bool), [np.random.default_rng(i) for i in range(n)])
    counts = np.bincount(core.failure, minlength=5) / n
    np.testing.assert_allclose(counts, [0.5, 0.375, 0.125, 0, 0], atol=0.025)


def test_signals_name_the_symptoms() -> None:
    core = SelfHealingCore(1, escalate_after=4)
    sig = core.signals(np.array([0.9, 0.2, 0.3, 0.4, 5 / 9, 0.6, 0.7, 0.75], dtype=np.float32))
    assert sig["cpu"] == pytest.approx(0.9) and sig["dependency_health"] == pytest.approx(0.6)
    assert sig["replicas"] == 6 and sig["failed_attempts"] == 3  # 1 + 5 / 9 * 9; 0.75 * 4


def test_reward_config_defaults_are_the_seeds() -> None:
    cfg = RewardConfig()
    assert (cfg.success_reward, cfg.failure_penalty, cfg.repeated_failure_penalty) == (
        10.0,
        -10.0,
        -5.0,
    )
    assert (cfg.slow_recovery_penalty, cfg.fast_recovery_bonus) == (-2.0, 2.0)
    assert (cfg.recovery_time_threshold, cfg.fast_recovery_threshold) == (5.0, 2.5)
    env = SelfHealingEnv(**SURE, failure_weights=[1, 0, 0, 0], reward={"success_reward": 4.0})
    _, steps = play(env, [RESTART])
    assert steps[0][1] == pytest.approx(6.0)  # 4 + 2 (fast)


def test_check_env_passes() -> None:
    check_env(gym.make(ENV_ID).unwrapped)


def test_reset_seed_determines_the_episode() -> None:
    def episode(seed: int) -> np.ndarray:
        return episode_signature(ENV_ID, seed, 30, 7, horizon=30)

    np.testing.assert_array_equal(episode(4), episode(4))
    assert not np.array_equal(episode(4), episode(5))


def test_batched_equals_single_copies() -> None:
    n, steps, horizon = 16, 300, 40
    episodes = run_batched_against_singles(ENV_ID, n, steps, 5, 7, horizon=horizon)
    assert episodes == n * (steps // horizon)


def test_config_lists_every_constructor_argument() -> None:
    conf = OmegaConf.to_container(OmegaConf.load(CONF))
    assert (conf.pop("id"), conf.pop("name")) == (ENV_ID, "selfhealing")
    assert set(conf) == set(inspect.signature(SelfHealingCore).parameters) - {"num_envs"}
    core, defaults = SelfHealingCore(1, **conf), SelfHealingCore(1)
    assert core.reward == defaults.reward
    for key in ("success_prob", "recovery_time", "symptoms", "failure_cdf"):
        np.testing.assert_array_equal(getattr(core, key), getattr(defaults, key))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"horizon": 0}, "horizon"),
        ({"min_replicas": 5, "max_replicas": 3}, "max_replicas"),
        ({"initial_replicas": 20}, "initial_replicas"),
        ({"load_low": 3.0, "load_high": 1.0}, "load_high"),
        ({"spike_factor": 0.5}, "spike_factor"),
        ({"incident_prob": 1.5}, "incident_prob"),
        ({"failure_weights": [0, 0, 0, 0]}, "failure_weights"),
        ({"success_prob": [[0.5] * 7] * 3}, "success_prob"),
        ({"success_prob": [[1.5] * 7] * 4}, "success_prob"),
        ({"recovery_time": [[-1.0] * 7] * 4}, "recovery_time"),
        ({"symptoms": [[None] * 5] * 5}, "symptoms"),
        ({"escalate_after": 0}, "escalate_after"),
        ({"reward": {"bogus": 1.0}}, "reward.bogus"),
        ({"reward": {"success_reward": float("nan")}}, "reward.success_reward"),
        ({"reward": {"utilisation_low": 0.9}}, "reward.utilisation_low"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SelfHealingEnv(**kwargs)


def test_runbook_beats_random() -> None:
    """A runbook on the symptoms (fail over, restart, clear cache, scale up) beats random."""
    n = 32

    def run(policy) -> tuple[float, float]:
        core = SelfHealingCore(n)
        venv = BatchedVecEnv(core)
        venv.seed(300)
        obs, returns, rate = venv.reset(), np.zeros(n), np.zeros(n)
        for _ in range(core.horizon):
            obs, rewards, *_ = venv.step(policy(core.signals(obs)))
            returns += rewards
            rate += venv.last_info["success_rate"]
        return float(returns.mean()), float(rate.mean())

    def runbook(s: dict[str, np.ndarray]) -> np.ndarray:
        crash = (s["error_rate"] > 0.7) & (s["cpu"] < 0.3)
        cases = [s["dependency_health"] < 0.5, crash, s["memory"] > 0.8, s["cpu"] > 0.9]
        return np.select(cases, [FAILOVER, RESTART, CLEAR_CACHE, SCALE_UP], NOOP)

    rng = np.random.default_rng(0)
    random = run(lambda s: rng.integers(0, 7, n))
    book = run(runbook)
    assert book[0] > random[0] + 200, f"runbook {book} vs random {random} (return, success rate)"
    assert book[1] > 0.8 > 0.5 > random[1], f"success rate: runbook {book[1]}, random {random[1]}"
