"""Hand-written policies for the scheduler, recommender and self-healing environments.

The yardsticks a learner must beat on each of the other seed systems, in the spirit of the
autoscaling ``threshold`` rule: deterministic, readable tables over what the environment's core
decodes from an observation (``env.core.signals(obs)``), with every threshold a setting so a
sweep can find the best hand-written policy. Like the other baselines, ``learn`` only advances
the step counter.

- ``user_feedback`` (script scheduler): do what the user last asked for.
- ``recommender_rule`` (recommender): a strategy from the personality alone.
- ``runbook`` (self-healing): an operator's runbook from the symptoms.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from rlbench.agents.baselines import _FixedPolicy
from rlbench.envs import core_of, env_id_of
from rlbench.errors import UserError

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv


def require_core(agent: str, env: VecEnv, core_cls: type, env_name: str) -> Any:
    """The env's core if it is a ``core_cls``; else a one-line ``UserError`` naming the env."""
    core = core_of(env)
    if not isinstance(core, core_cls):
        raise UserError(
            f"{agent} needs the {env_name} environment (env={env_name}); got {env_id_of(env)}"
        )
    return core


class UserFeedbackAgent(_FixedPolicy):
    """Script scheduler: follow the user's latest request.

    | preference signal this step       | action          |
    |-----------------------------------|-----------------|
    | +1 (the user wants more often)    | 0: ×0.85        |
    | -1 (the user wants less often)    | 2: ×1.15        |
    | none, and ``manual_count`` above   | 0: ×0.85        |
    | ``manual_limit`` (runs it by hand) |                 |
    | none                              | 1: keep         |

    ``manual_limit`` (manual runs in the env's window) defaults to the window itself, which the
    count never exceeds: by default only stated preferences move the interval. A lower limit
    also shortens the interval while the user keeps running the script by hand.
    """

    name: ClassVar[str] = "user_feedback"
    defaults: ClassVar[dict[str, Any]] = {"manual_limit": None}

    def __init__(self, env: VecEnv, cfg: Mapping[str, Any], seed: int, device: str = "cpu") -> None:
        super().__init__(env, cfg, seed, device)
        from rlbench.envs.scheduler import ScriptSchedulerCore

        self.core = require_core(self.name, env, ScriptSchedulerCore, "scheduler")
        limit = self._settings()["manual_limit"]
        self.manual_limit = self.core.manual_window if limit is None else int(limit)
        if self.manual_limit < 0:
            raise UserError(f"algo.manual_limit must be >= 0 (or null), got {limit}")

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        sig = self.core.signals(np.asarray(obs))
        pref, manual = sig["preference"], sig["manual_count"]
        action = np.where(pref > 0, 0, np.where(pref < 0, 2, 1))
        return np.where((pref == 0) & (manual > self.manual_limit), 0, action).astype(np.int64)


class RecommenderRuleAgent(_FixedPolicy):
    """Recommender: a strategy from the user's personality alone (context ignored).

    Each trait bin (0-4: 0-20, ..., 80-100) gives a level (0 low, 1 medium, 2 high): bins
    below ``low_bin`` (2) are level 0, above ``high_bin`` (2) level 2, otherwise 1.

    | strategy dimension | follows                                                  |
    |--------------------|----------------------------------------------------------|
    | energy             | the extraversion level (outgoing people, lively content) |
    | diversity          | the openness level (curious people, broad selections)    |
    | novelty            | the openness level, one lower when the neuroticism level |
    |                    | is high (anxious people prefer the familiar)             |

    The action is ``9 * energy + 3 * diversity + novelty``. This is a plausible hand-written
    rule, not the simulated users' hidden taste (which also moves with mood, time of day and
    content type).
    """

    name: ClassVar[str] = "recommender_rule"
    defaults: ClassVar[dict[str, Any]] = {"low_bin": 2, "high_bin": 2}

    def __init__(self, env: VecEnv, cfg: Mapping[str, Any], seed: int, device: str = "cpu") -> None:
        super().__init__(env, cfg, seed, device)
        from rlbench.envs.recommender import RecommenderCore

        self.core = require_core(self.name, env, RecommenderCore, "recommender")
        s = self._settings()
        self.low_bin, self.high_bin = int(s["low_bin"]), int(s["high_bin"])
        if not 0 <= self.low_bin <= self.high_bin <= 4:
            raise UserError(
                f"algo.low_bin ({self.low_bin}) and algo.high_bin ({self.high_bin}) must satisfy "
                "0 <= low_bin <= high_bin <= 4"
            )

    def level(self, trait_bin: np.ndarray) -> np.ndarray:
        """Level 0/1/2 of trait bins 0-4."""
        b = np.asarray(trait_bin)
        return (b >= self.low_bin).astype(np.int64) + (b > self.high_bin)

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        sig = self.core.signals(np.asarray(obs))
        energy = self.level(sig["extraversion"])
        diversity = self.level(sig["openness"])
        novelty = np.maximum(diversity - (self.level(sig["neuroticism"]) == 2), 0)
        return (9 * energy + 3 * diversity + novelty).astype(np.int64)


class RunbookAgent(_FixedPolicy):
    """Self-healing: an operator's runbook over the symptoms, first matching row wins.

    | symptom (fractions 0-1)                  | diagnosis       | first         | retry       |
    |------------------------------------------|-----------------|---------------|-------------|
    | dependency_health < ``dependency_below`` | dependency down | 6 fail over   | 5 roll back |
    | cpu > ``cpu_above``                      | CPU spike       | 2 scale up    | 6 fail over |
    | memory > ``memory_above``                | memory leak     | 4 clear cache | 1 restart   |
    | error_rate > ``error_above``             | crash           | 1 restart     | 6 fail over |
    | otherwise                                | healthy         | 0 no-op       | 0 no-op     |

    Thresholds by default: ``dependency_below`` 0.5, ``cpu_above`` 0.9, ``memory_above`` 0.8,
    ``error_above`` 0.5 (between the env's default symptom profiles, noise included).

    "retry" is used once the incident has ``retry_after`` (2) failed attempts behind it (the
    observation's failed-attempts count): when the usual fix has not worked, try the next one.
    """

    name: ClassVar[str] = "runbook"
    defaults: ClassVar[dict[str, Any]] = {
        "dependency_below": 0.5,
        "cpu_above": 0.9,
        "memory_above": 0.8,
        "error_above": 0.5,
        "retry_after": 2,
    }
    # rows: dependency down, CPU spike, memory leak, crash, healthy; columns: first, retry
    TABLE: ClassVar[np.ndarray] = np.array([[6, 5], [2, 6], [4, 1], [1, 6], [0, 0]])

    def __init__(self, env: VecEnv, cfg: Mapping[str, Any], seed: int, device: str = "cpu") -> None:
        super().__init__(env, cfg, seed, device)
        from rlbench.envs.selfhealing import SelfHealingCore

        self.core = require_core(self.name, env, SelfHealingCore, "selfhealing")
        s = self._settings()
        self.limits = {k: float(s[k]) for k in ("dependency_below", "cpu_above", "memory_above",
                                                "error_above")}  # fmt: skip
        for key, value in self.limits.items():  # the signals are normalised to 0-1
            if not 0.0 <= value <= 1.0:  # also refuses nan
                raise UserError(
                    f"algo.{key} must be in [0, 1] (the self-healing signals are normalised), "
                    f"got {s[key]}"
                )
        self.retry_after = int(s["retry_after"])
        if self.retry_after < 1:
            raise UserError(f"algo.retry_after must be >= 1, got {self.retry_after}")

    def diagnose(self, sig: Mapping[str, np.ndarray]) -> np.ndarray:
        """Row of :attr:`TABLE` per copy: 0 dependency, 1 CPU, 2 memory, 3 crash, 4 healthy."""
        lim = self.limits
        conditions = [
            sig["dependency_health"] < lim["dependency_below"],
            sig["cpu"] > lim["cpu_above"],
            sig["memory"] > lim["memory_above"],
            sig["error_rate"] > lim["error_above"],
        ]
        return np.select(conditions, [0, 1, 2, 3], 4)

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        sig = self.core.signals(np.asarray(obs))
        retry = (sig["failed_attempts"] >= self.retry_after).astype(np.int64)
        return self.TABLE[self.diagnose(sig), retry].astype(np.int64)
