"""rlbench/Recommender-v0: the user model worked out by hand, API checks, batched = single."""

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
from rlbench.envs.recommender import (
    RecommenderCore,
    RecommenderEnv,
    action_index,
    action_levels,
    time_of_day,
)

ENV_ID = "rlbench/Recommender-v0"
CONF = Path(__file__).parents[2] / "conf" / "env" / "recommender.yaml"
ZERO3, ZERO34, ZERO33 = [0.0] * 3, [[0.0] * 4] * 3, [[0.0] * 3] * 3
# Every user has all five traits at 90 ((90 - 50) / 50 = 0.8 centred) and no personal taste;
# only traits move the preferred strategy. Energy 0.5 * 0.8 = 0.4 > 0.2: high; diversity
# -0.5 * 0.8 = -0.4: focused; novelty 0.5 * 0.8 = 0.4: exploratory -> (2, 0, 2) = action 20.
TRAITS_ONLY = dict(
    personas=[[90.0] * 5],
    persona_jitter=0.0,
    user_noise=0.0,
    trait_weights=[[0, 0, 0.5, 0, 0], [0, -0.5, 0, 0, 0], [0.5, 0, 0, 0, 0]],
    mood_weights=ZERO3,
    time_weights=ZERO34,
    content_weights=ZERO33,
    completion_noise=0.0,
)


def test_action_index_order() -> None:
    assert action_index(0, 0, 0) == 0 and action_index(1, 1, 1) == 13
    assert action_index(2, 0, 2) == 20 and action_index(2, 2, 2) == 26
    assert [int(x) for x in action_levels(20)] == [2, 0, 2]
    assert [int(x) for x in action_levels(7)] == [0, 2, 1]


def test_time_of_day_bins() -> None:
    hours = [0, 5, 6, 11, 12, 17, 18, 21, 22, 23]
    assert time_of_day(np.array(hours)).tolist() == [3, 3, 0, 0, 1, 1, 2, 2, 3, 3]


def test_best_strategy_earns_the_whole_reward_table() -> None:
    env = RecommenderEnv(**TRAITS_ONLY, like_max=1.0, share_prob=1.0, mood_rate=0.5)
    env.reset(seed=0)
    mood = env.core.mood[0]
    assert env.core.ideal_action()[0] == 20
    _, reward, _, _, info = env.step(20)
    # match 1: completion 1 (completed), liked with probability 1, shared with probability
    # min(1, 1.0 * (0.5 + 90/100)) = 1, mood change +0.5.
    # Reward: 1 (like) + 0.5 (complete) + 0.8 (share) + 0.5 * 1 + 1.0 * 0.5 = 3.3.
    assert (info["liked"], info["completed"], info["shared"], info["best_action"]) == (1, 1, 1, 1)
    assert (info["disliked"], info["skipped"]) == (0, 0)
    assert (info["match"], info["completion"], info["mood_change"]) == (1.0, 1.0, 0.5)
    assert reward == pytest.approx(3.3)
    assert info["mood"] == pytest.approx(min(mood + 0.25, 1.0))


def test_opposite_strategy_earns_the_penalties() -> None:
    env = RecommenderEnv(**TRAITS_ONLY, dislike_max=1.0)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(action_index(0, 2, 0))
    # Distance 2 + 2 + 2 = 6: match 0, completion 0 (skipped), never liked, disliked with
    # probability 1 * (1 - 0)^2 = 1, mood change -0.5.
    # Reward: -1 (dislike) - 0.3 (skip) + 0.5 * 0 + 1.0 * -0.5 = -1.8.
    assert (info["liked"], info["disliked"], info["skipped"], info["completed"]) == (0, 1, 1, 0)
    assert (info["match"], info["mood_change"]) == (0.0, -0.5)
    assert reward == pytest.approx(-1.8)


def test_half_match_rates_by_simulation() -> None:
    # Distance 3 from the preferred (2, 0, 2): match 0.5, completion 0.5 (neither completed nor
    # skipped). P(like) = 0.8 * 0.25 = 0.2; P(dislike) = 0.6 * 0.25 = 0.15; P(share) =
    # 0.2 * 0.5 * (0.5 + 0.9) = 0.14. Reward 0.5 * 0.5 + 0 (mood) + like - dislike + 0.8 share.
    n = 5000
    core = RecommenderCore(n, **TRAITS_ONLY, like_max=0.8, dislike_max=0.6, share_prob=0.5)
    venv = BatchedVecEnv(core)
    venv.seed(0)
    venv.reset()
    _, rewards, _, _ = venv.step(np.full(n, action_index(1, 1, 1)))
    info = venv.last_info
    assert (info["match"] == 0.5).all() and (info["completion"] == 0.5).all()
    assert info["completed"].sum() == 0 and info["skipped"].sum() == 0
    assert info["liked"].mean() == pytest.approx(0.2, abs=0.02)
    assert info["disliked"].mean() == pytest.approx(0.15, abs=0.02)
    assert info["shared"].mean() == pytest.approx(0.14, abs=0.02)
    assert not (info["liked"] & info["disliked"]).any()
    assert not (info["shared"] & ~info["liked"].astype(bool)).any()
    expected = 0.25 + info["liked"] - info["disliked"] + 0.8 * info["shared"]
    np.testing.assert_allclose(rewards, expected)


def test_users_are_drawn_around_personas_or_from_a_broad_population() -> None:
    n = 2000
    rngs = [np.random.default_rng(i) for i in range(n)]
    core = RecommenderCore(n, personas=[[10.0] * 5, [90.0] * 5], persona_jitter=0.0)
    core.reset_copies(np.ones(n, bool), rngs)
    low = (core.traits == 10.0).all(axis=1)
    assert ((core.traits == 90.0).all(axis=1) ^ low).all()
    assert low.mean() == pytest.approx(0.5, abs=0.04)
    broad = RecommenderCore(n, personas=None, trait_mean=40.0, trait_sd=10.0)
    broad.reset_copies(np.ones(n, bool), rngs)
    assert broad.traits.mean() == pytest.approx(40.0, abs=0.5)
    assert broad.traits.std() == pytest.approx(10.0, abs=0.5)


def test_mood_changes_what_the_user_wants_next() -> None:
    # Energy follows the mood valence only: 0.1 is medium (<= 0.2); a perfect match moves it
    # by 0.5 * 0.5 = 0.25 to 0.35 > 0.2, so high energy is wanted next.
    env = RecommenderEnv(
        **{**TRAITS_ONLY, "personas": [[50.0] * 5], "mood_weights": [1.0, 0.0, 0.0]}, mood_rate=0.5
    )
    env.reset(seed=0)
    env.core.mood[:] = 0.1
    assert env.core.ideal_levels()[0].tolist() == [1, 1, 1]
    obs, *_ = env.step(action_index(1, 1, 1))
    assert env.core.mood[0] == pytest.approx(0.35)
    assert env.core.ideal_levels()[0].tolist() == [2, 1, 1]
    # 0.35 lies in the fourth of five mood bins over [-1, 1] ([0.2, 0.6): relaxed).
    assert env.core.signals(obs)["mood"] == 3


def test_context_moves_the_best_strategy() -> None:
    # Morning +0.3 energy, night -0.3; games +0.3: evening music is medium, morning games high.
    kwargs = {**TRAITS_ONLY, "personas": [[50.0] * 5]}
    kwargs["time_weights"] = [[0.3, 0.0, 0.0, -0.3], [0] * 4, [0] * 4]
    kwargs["content_weights"] = [[0.0, 0.0, 0.3], [0] * 3, [0] * 3]
    core = RecommenderCore(4, **kwargs)
    core.reset_copies(np.ones(4, bool), [np.random.default_rng(i) for i in range(4)])
    core.hour[:] = [8, 20, 23, 8]  # morning, evening, night, morning
    core.content[:, 0] = [0, 0, 2, 2]  # music, music, game, game
    assert core.ideal_levels()[:, 0].tolist() == [2, 1, 1, 2]


def test_observation_and_signals() -> None:
    core = RecommenderCore(1)
    core.reset_copies(np.ones(1, bool), [np.random.default_rng(0)])
    core.traits[0] = [0.0, 19.9, 20.0, 79.9, 100.0]
    core.hour[0], core.mood[0], core.content[0, 0] = 19, -0.7, 1  # evening, sad, video
    obs = core.observe()[0]
    np.testing.assert_allclose(obs, [0, 0, 0.25, 0.75, 1.0, 0.5, 0.0, 2 / 3], rtol=1e-6)
    sig = core.signals(obs)
    assert [sig[k] for k in ("openness", "extraversion", "neuroticism")] == [0, 1, 4]
    assert (sig["content_type"], sig["mood"], sig["time_of_day"]) == (1, 0, 2)


def test_check_env_passes() -> None:
    check_env(gym.make(ENV_ID).unwrapped)


def test_reset_seed_determines_the_episode() -> None:
    def episode(seed: int) -> np.ndarray:
        return episode_signature(ENV_ID, seed, 20, 27)

    np.testing.assert_array_equal(episode(4), episode(4))
    assert not np.array_equal(episode(4), episode(5))


def test_batched_equals_single_copies() -> None:
    n, steps, horizon = 16, 300, 20
    episodes = run_batched_against_singles(ENV_ID, n, steps, 7, 27, horizon=horizon)
    assert episodes == n * (steps // horizon)


def test_config_lists_every_constructor_argument() -> None:
    conf = OmegaConf.to_container(OmegaConf.load(CONF))
    assert (conf.pop("id"), conf.pop("name")) == (ENV_ID, "recommender")
    assert set(conf) == set(inspect.signature(RecommenderCore).parameters) - {"num_envs"}
    core = RecommenderCore(1, **conf)
    defaults = RecommenderCore(1)
    for key in ("trait_weights", "mood_weights", "time_weights", "content_weights"):
        np.testing.assert_array_equal(getattr(core, key), getattr(defaults, key))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"horizon": 0}, "horizon"),
        ({"personas": [[50.0] * 4]}, "personas"),
        ({"personas": [[150.0] * 5]}, "personas"),
        ({"personas": 3}, "personas"),
        ({"personas": []}, "personas is empty: .* or null for the broad population"),
        ({"persona_jitter": -1}, "persona_jitter"),
        ({"trait_mean": 120}, "trait_mean"),
        ({"trait_sd": -1}, "trait_sd"),
        ({"content_probs": [0, 0, 0]}, "content_probs"),
        ({"content_probs": [1, 1]}, "content_probs"),
        ({"trait_weights": [[0.0] * 5] * 2}, "trait_weights"),
        ({"time_weights": "morning"}, "time_weights"),
        ({"like_max": 1.5}, "like_max"),
        ({"skip_threshold": 0.95}, "skip_threshold"),
        ({"share_prob": -0.1}, "share_prob"),
        ({"like_reward": float("inf")}, "like_reward"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RecommenderEnv(**kwargs)


def test_context_policies_beat_random() -> None:
    """The hidden best action (oracle) and a personality rule both beat random choices."""
    n = 64

    def run(policy) -> tuple[float, float]:
        core = RecommenderCore(n)
        venv = BatchedVecEnv(core)
        venv.seed(200)
        obs, returns, likes = venv.reset(), np.zeros(n), []
        for _ in range(core.horizon):
            obs, rewards, *_ = venv.step(policy(core, obs))
            returns += rewards
            likes.append(venv.last_info["liked"])
        return float(returns.mean()), float(np.mean(likes))

    def level(trait_bin: np.ndarray) -> np.ndarray:
        return np.clip(trait_bin - 1, 0, 2)  # bins 0-1 low, 2 medium, 3-4 high

    def rule(core: RecommenderCore, obs: np.ndarray) -> np.ndarray:
        # Extraverts get energy, open minds diversity and novelty, anxious minds familiarity.
        s = core.signals(obs)
        adventurous = s["openness"] - s["neuroticism"] + 2
        return 9 * level(s["extraversion"]) + 3 * level(s["openness"]) + level(adventurous)

    rng = np.random.default_rng(0)
    random = run(lambda core, obs: rng.integers(0, 27, n))
    oracle = run(lambda core, obs: core.ideal_action())
    personality = run(rule)
    assert oracle[0] > random[0] + 20, f"oracle {oracle} vs random {random} (return, like rate)"
    assert oracle[1] > 0.8 > 0.4 > random[1], f"like rates: oracle {oracle[1]}, random {random[1]}"
    assert personality[0] > random[0] + 10, f"rule {personality} vs random {random}"
