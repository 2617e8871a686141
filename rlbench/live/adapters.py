"""Sources of live experience: the small protocol a system implements so the loop can act on it.

An adapter speaks the observation and action spaces of one rlbench environment (``env_id``), so
a policy trained in that environment's simulator acts on the adapter unchanged. It is a
gymnasium-style object: ``reset`` gives the first observation, ``step`` applies one decision
and returns what followed. Three come with rlbench:

- :class:`SimAdapter`: an rlbench environment stepped in real time or accelerated
  (``speed`` simulated seconds per wall second; 0 = as fast as the loop can go), with an
  optional drift: from decision ``drift_at`` on, new episodes use ``drift_kwargs`` (a load
  pattern that changes mid-session). A recorded trace is the same adapter on
  ``load=trace trace_path=<csv>`` (the autoscaling environment replays a CSV of request counts).
- :class:`rlbench.live.scheduler.SchedulerAdapter`: real shell scripts on a schedule, user
  commands as feedback (the script-scheduler seed).

A user's own system (a real autoscaling API, say) implements :class:`Adapter` and is named in
the config as ``source._target_=my_package.MyAdapter``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np


@runtime_checkable
class Adapter(Protocol):
    """What the live loop needs of a system.

    ``env_id``: the rlbench environment whose spaces the adapter speaks (policies trained there
    act here); ``step_seconds``: simulated or real seconds one decision covers (for pacing and
    time-based triggers); ``step`` returns ``(obs, reward, terminated, truncated, info)``.
    """

    env_id: str
    observation_space: gym.Space
    action_space: gym.Space

    def reset(self, seed: int | None = None) -> np.ndarray: ...

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]: ...

    def close(self) -> None: ...


class SimAdapter:
    """An rlbench environment as a live system.

    ``speed``: simulated seconds per wall second (the environment's ``step_minutes`` sets how
    many simulated seconds a decision covers); 0 runs unpaced. ``drift_at``/``drift_kwargs``:
    from that many decisions on, every new episode is made with the environment's arguments
    updated by ``drift_kwargs``. ``seed`` fixes the sequence of episodes.
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: Mapping[str, Any] | None = None,
        *,
        speed: float = 0.0,
        drift_at: int | None = None,
        drift_kwargs: Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.drift_at = drift_at
        self.drift_kwargs = dict(drift_kwargs or {})
        self.speed = float(speed)
        self.decisions = 0
        self.drifted = False
        self._env = gym.make(env_id, **self.env_kwargs)
        self.observation_space = self._env.observation_space
        self.action_space = self._env.action_space
        core = getattr(self._env.unwrapped, "core", None)
        minutes = getattr(core, "step_minutes", None) or self.env_kwargs.get("step_minutes", 1.0)
        self.step_seconds = float(minutes) * 60.0
        self._rng = np.random.default_rng(seed)
        self._next_wall = 0.0

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start an episode (a drifted one once ``drift_at`` decisions have been made)."""
        if self.drift_at is not None and not self.drifted and self.decisions >= self.drift_at:
            self._env.close()
            self._env = gym.make(self.env_id, **{**self.env_kwargs, **self.drift_kwargs})
            self.drifted = True
        if seed is None:
            seed = int(self._rng.integers(2**31 - 1))
        obs, _ = self._env.reset(seed=seed)
        self._next_wall = time.monotonic()
        return np.asarray(obs, dtype=np.float32)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply one decision, paced to ``speed``."""
        if self.speed > 0:
            self._next_wall += self.step_seconds / self.speed
            delay = self._next_wall - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        obs, reward, terminated, truncated, info = self._env.step(int(action))
        self.decisions += 1
        info = dict(info, drifted=self.drifted)
        return np.asarray(obs, dtype=np.float32), float(reward), terminated, truncated, info

    def close(self) -> None:
        self._env.close()
