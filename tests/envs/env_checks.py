"""Checks every rlbench environment must pass, shared by the per-environment test files."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rlbench.envs import make_vec


def run_batched_against_singles(
    env_id: str, n: int, steps: int, seed: int, n_actions: int, **kwargs: Any
) -> int:
    """Step ``make_vec(env_id, n, seed)`` and ``n`` single copies seeded ``seed + i`` with the
    same random actions; assert identical observations, rewards, dones and terminal
    observations (single copies are reset by hand when done). Returns the episodes finished."""
    venv = make_vec(env_id, n, seed=seed, **kwargs)
    singles = [gym.make(env_id, **kwargs) for _ in range(n)]
    obs = venv.reset()
    np.testing.assert_array_equal(
        obs, np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(singles)])
    )
    episodes = 0
    for a in np.random.default_rng(0).integers(0, n_actions, size=(steps, n)):
        obs, rewards, dones, infos = venv.step(a)
        for i, env in enumerate(singles):
            o, r, term, trunc, _ = env.step(int(a[i]))
            assert r == rewards[i] and (term or trunc) == dones[i]
            if dones[i]:
                np.testing.assert_array_equal(infos[i]["terminal_observation"], o)
                o, _ = env.reset()
                episodes += 1
            np.testing.assert_array_equal(obs[i], o)
    return episodes


def episode_signature(env_id: str, seed: int, steps: int, n_actions: int, **kwargs: Any):
    """Observations and rewards of one episode under fixed random actions, as one array."""
    env = gym.make(env_id, **kwargs)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(9)
    rows = [obs]
    for _ in range(steps):
        obs, reward, *_ = env.step(int(rng.integers(n_actions)))
        rows.append(np.r_[obs, reward])
    return np.concatenate(rows)


def play(env: gym.Env, actions: list[int]) -> list[tuple[np.ndarray, float, dict]]:
    """Reset with seed 0, take ``actions``, and return each step's (obs, reward, info);
    the hand-worked dynamics tests read their numbers from it."""
    env.reset(seed=0)
    out = []
    for a in actions:
        obs, reward, terminated, _, info = env.step(a)
        assert not terminated
        out.append((obs, reward, info))
    return out
