"""Policies that do not learn: the yardsticks every learning agent must beat.

``random`` (uniform, seeded), ``static`` (one fixed action, hold by default) and ``threshold``
(the seed project's rule on load and queue, with tunable thresholds and a cooldown so a sweep can
find the best hand-written policy). Their ``learn`` only advances the step counter, so a sweep or
a learning curve treats them exactly like the learning agents.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from rlbench.agents.base import Agent, LearnCallback, call_back, one_hot
from rlbench.agents.checkpoint_io import Checkpoint
from rlbench.envs import core_of, env_id_of
from rlbench.errors import UserError

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv

REMOVE, HOLD, ADD = 0, 1, 2


class _FixedPolicy(Agent):
    """An agent with nothing to learn: ``learn`` jumps the counter to the target."""

    def learn(self, total_steps: int, callback: LearnCallback | None = None) -> None:
        self.num_steps = max(int(self.num_steps), int(total_steps))
        call_back(callback, self.num_steps, {})


class RandomAgent(_FixedPolicy):
    """Uniformly random actions from a generator seeded by ``seed`` (reproducible, saved state)."""

    name: ClassVar[str] = "random"
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, env: VecEnv, cfg: Mapping[str, Any], seed: int, device: str = "cpu") -> None:
        super().__init__(env, cfg, seed, device)
        self._settings()
        self.n_actions = self._discrete_actions()
        self.rng = np.random.default_rng(self.seed)

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return self.rng.integers(self.n_actions, size=len(obs), dtype=np.int64)

    def action_probabilities(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Uniform, also when ``deterministic``: this baseline is random by definition."""
        return np.full((len(obs), self.n_actions), 1.0 / self.n_actions)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
        return {"rng": self.rng.bit_generator.state}, {}, {}

    def _restore(self, ckpt: Checkpoint) -> None:
        self.rng.bit_generator.state = ckpt.meta["state"]["rng"]


class StaticAgent(_FixedPolicy):
    """Always the same action: ``action`` (default 1 = hold, keep the initial capacity)."""

    name: ClassVar[str] = "static"
    defaults: ClassVar[dict[str, Any]] = {"action": HOLD}

    def __init__(self, env: VecEnv, cfg: Mapping[str, Any], seed: int, device: str = "cpu") -> None:
        super().__init__(env, cfg, seed, device)
        n = self._discrete_actions()
        self.action = int(self._settings()["action"])
        if not 0 <= self.action < n:
            raise UserError(f"algo.action={self.action} is not an action of this env (0..{n - 1})")

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return np.full(len(obs), self.action, dtype=np.int64)


#: what a user whose env cannot run the threshold rule (rlbench-train's default algo) does instead
OTHER_CHOICE = "pick an autoscaling env, or another algo (random, qlearning, ppo, dqn)"


class ThresholdAgent(_FixedPolicy):
    """The seed project's autoscaling rule, per copy, on ``env.core.signals(obs)``.

    Add (2) when ``load_pct > upper`` or ``queue > queue_limit``; remove (0) when
    ``load_pct < lower`` and ``queue == 0``; otherwise hold (1). With a load forecast in the
    observation (``env.forecast``; the core's signal ``forecast_pct``: the forecast load when an
    instance added now would serve, against the capacity then) and ``use_forecast`` on, the
    rule also adds when ``forecast_pct > upper`` and removes only when ``forecast_pct < lower``
    too: it scales ahead of a rise and does not shed capacity a rise will need. After a scaling
    action a copy
    holds for the next ``cooldown`` calls. The cooldown counters live in the agent, one per row
    of ``obs``; they restart when the batch size changes (a new evaluation env), and carry over
    an episode boundary within the same batch.
    """

    name: ClassVar[str] = "threshold"
    defaults: ClassVar[dict[str, Any]] = {
        "upper": 80.0,
        "lower": 40.0,
        "queue_limit": 100.0,
        "cooldown": 0,
        "use_forecast": True,
    }

    def __init__(self, env: VecEnv, cfg: Mapping[str, Any], seed: int, device: str = "cpu") -> None:
        super().__init__(env, cfg, seed, device)
        s = self._settings()
        self.upper, self.lower = float(s["upper"]), float(s["lower"])
        self.queue_limit, self.cooldown = float(s["queue_limit"]), int(s["cooldown"])
        if not isinstance(s["use_forecast"], bool):
            raise UserError(f"algo.use_forecast must be true or false, got {s['use_forecast']!r}")
        self.use_forecast = s["use_forecast"]
        if self.lower > self.upper:
            raise UserError(f"algo.lower={self.lower} must not exceed algo.upper={self.upper}")
        if self.cooldown < 0:
            raise UserError(f"algo.cooldown must be >= 0, got {self.cooldown}")
        if self._discrete_actions() != 3:
            raise UserError(
                f"threshold needs 3 actions (remove, hold, add); the env has {env.action_space}: "
                f"{OTHER_CHOICE}"
            )
        core = core_of(env)
        self._signals = getattr(core, "signals", None)
        if not callable(self._signals):
            raise UserError(
                f"threshold needs an env that reports load and queue; {env_id_of(env)} does not: "
                f"{OTHER_CHOICE}"
            )
        probe = np.zeros((1, *(env.observation_space.shape or ())), dtype=np.float32)
        missing = {"load_pct", "queue"} - set(self._signals(probe))
        if missing:  # e.g. the scheduler's signals are intervals and manual runs
            raise UserError(
                f"threshold needs an env that reports load and queue; {env_id_of(env)} reports "
                f"{', '.join(sorted(self._signals(probe)))} (no {', '.join(sorted(missing))}): "
                f"{OTHER_CHOICE}"
            )
        self._cool = np.zeros(0, dtype=np.int64)

    def rule(
        self, load_pct: np.ndarray, queue: np.ndarray, forecast_pct: np.ndarray | None = None
    ) -> np.ndarray:
        """The threshold decision alone (no cooldown), vectorised over copies."""
        load_pct, queue = np.asarray(load_pct, float), np.asarray(queue, float)
        add = (load_pct > self.upper) | (queue > self.queue_limit)
        remove = (load_pct < self.lower) & (queue == 0)
        if forecast_pct is not None:
            forecast_pct = np.asarray(forecast_pct, float)
            add |= forecast_pct > self.upper
            remove &= forecast_pct < self.lower
        return np.where(add, ADD, np.where(remove, REMOVE, HOLD)).astype(np.int64)

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        wanted, free = self._decide(obs)
        action = np.where(free, wanted, HOLD)
        self._cool = np.where(free, np.where(wanted != HOLD, self.cooldown, 0), self._cool - 1)
        return action

    def history_setting(self) -> str | None:
        return f"algo.cooldown={self.cooldown}" if self.cooldown > 0 else None

    def action_probabilities(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """One-hot on the action :meth:`predict` would take now, without stepping the cooldown."""
        wanted, free = self._decide(obs)
        return one_hot(np.where(free, wanted, HOLD), 3)

    def _decide(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rule's wish per copy, and which copies are out of their cooldown."""
        sig = self._signals(np.asarray(obs))
        forecast = sig.get("forecast_pct") if self.use_forecast else None
        wanted = self.rule(sig["load_pct"], sig["queue"], forecast)
        if self._cool.shape != wanted.shape:
            self._cool = np.zeros(wanted.shape, dtype=np.int64)
        return wanted, self._cool == 0

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
        return {}, {"cooldown_left": self._cool}, {}

    def _restore(self, ckpt: Checkpoint) -> None:
        self._cool = np.asarray(ckpt.arrays["cooldown_left"], dtype=np.int64)
