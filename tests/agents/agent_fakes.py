"""Test helper (not a test): a tiny fake env, so agent tests run fast and know every number.

``FakeCore``: observation ``[load_pct / 100, queue / 1000]`` (``Box(0, 1, (2,))``), 3 actions.
Each step the load moves by ``(action - 1) * -10`` points plus a draw from the copy's
generator; the reward is ``-|load - 50| / 50`` (best: keep the load near 50 %). Episodes are
truncated after ``horizon`` steps. ``signals(obs)`` decodes the observation like the real
autoscaling core does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from gymnasium import spaces

from rlbench.envs.base import Core, StepResult
from rlbench.envs.batched import BatchedVecEnv


class FakeCore(Core):
    def __init__(self, num_envs: int = 1, horizon: int = 10) -> None:
        super().__init__(num_envs)
        self.horizon = horizon
        self.observation_space = spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Discrete(3)
        self.load = np.zeros(num_envs)
        self.queue = np.zeros(num_envs)
        self.t = np.zeros(num_envs, dtype=np.int64)
        self._rngs: Sequence[np.random.Generator] = []

    def reset_copies(self, mask: np.ndarray, rngs: Sequence[np.random.Generator]) -> None:
        self._rngs = rngs
        for i in np.flatnonzero(mask):
            self.load[i] = rngs[i].uniform(0, 100)
            self.queue[i] = 0.0
            self.t[i] = 0

    def observe(self) -> np.ndarray:
        return np.stack([self.load / 100.0, self.queue / 1000.0], axis=1).astype(np.float32)

    def step(self, actions: np.ndarray) -> StepResult:
        noise = np.array([rng.normal(0, 5) for rng in self._rngs])
        self.load = np.clip(self.load - (np.asarray(actions) - 1) * 10.0 + noise, 0, 100)
        self.queue = np.where(self.load > 90, self.queue + 50, 0.0).clip(0, 1000)
        self.t += 1
        return StepResult(
            reward=-np.abs(self.load - 50.0) / 50.0,
            terminated=np.zeros(self.num_envs, dtype=bool),
            truncated=self.t >= self.horizon,
            info={"load_pct": self.load.copy()},
        )

    def signals(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        obs = np.asarray(obs, dtype=np.float64)
        return {"load_pct": obs[..., 0] * 100.0, "queue": obs[..., 1] * 1000.0}


class NoSignalsCore(FakeCore):
    """The same env without ``signals`` (the threshold rule cannot read it)."""

    signals = None  # type: ignore[assignment]


class BoxActionCore(FakeCore):
    """The same env with a continuous action space (DQN cannot use it)."""

    def __init__(self, num_envs: int = 1, horizon: int = 10) -> None:
        super().__init__(num_envs, horizon)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)


def make_fake(n: int = 4, seed: int = 0, horizon: int = 10, core=FakeCore) -> BatchedVecEnv:
    venv = BatchedVecEnv(core(num_envs=n, horizon=horizon))
    venv.seed(seed)
    return venv


def episode_return(policy, env_kwargs, n=4, seed=10_000) -> float:
    """Mean return of ``n`` full ``rlbench/Autoscaling-v0`` episodes (288 steps) on eval seeds."""
    from rlbench.envs import make_vec

    env = make_vec("rlbench/Autoscaling-v0", n, seed=seed, **env_kwargs)
    obs, total = env.reset(), np.zeros(n)
    for _ in range(288):
        obs, rewards, dones, _ = env.step(policy.predict(obs))
        total += rewards
    assert dones.all()
    return float(total.mean())
