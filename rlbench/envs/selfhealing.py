"""``rlbench/SelfHealing-v0``: choose a healing action for a failing service.

The seed (a continuous-learning framework for a self-healing cloud) scored healing actions
with a ``RewardConfig`` (success, failure, repeated failure, slow or fast recovery) and a
scaling bonus. Here the service and its failures are simulated, with documented tables of which
action heals which failure and how fast. Dynamics live in :class:`SelfHealingCore` (vectorised
over ``N`` copies); :class:`SelfHealingEnv` is its one-copy face, documented there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from rlbench.envs._checks import integer as _integer
from rlbench.envs._checks import number as _number
from rlbench.envs.base import Core, CoreEnv, StepResult

FAILURES = ("none", "crash", "memory_leak", "cpu_spike", "dependency_down")
ACTIONS = ("noop", "restart", "scale_up", "scale_down", "clear_cache", "rollback", "failover")
NONE, CRASH, MEMORY_LEAK, CPU_SPIKE, DEPENDENCY_DOWN = range(5)
NOOP, RESTART, SCALE_UP, SCALE_DOWN, CLEAR_CACHE, ROLLBACK, FAILOVER = range(7)
SYMPTOMS = ("cpu", "memory", "error_rate", "latency", "dependency_health")

# Rows: crash, memory leak, CPU spike, dependency down; columns: ACTIONS.
DEFAULT_SUCCESS_PROB = (
    (0.0, 0.9, 0.3, 0.0, 0.1, 0.6, 0.8),
    (0.0, 0.8, 0.2, 0.0, 0.85, 0.5, 0.4),
    (0.2, 0.3, 0.9, 0.0, 0.2, 0.2, 0.5),
    (0.1, 0.1, 0.0, 0.0, 0.1, 0.3, 0.9),
)
DEFAULT_RECOVERY_TIME = (
    (1.0, 3.0, 6.0, 6.0, 2.0, 8.0, 4.0),
    (1.0, 3.0, 6.0, 6.0, 1.5, 8.0, 4.0),
    (1.0, 3.0, 2.0, 6.0, 1.5, 8.0, 4.0),
    (1.0, 3.0, 6.0, 6.0, 1.5, 8.0, 4.0),
)
# Rows: FAILURES; columns: SYMPTOMS. A None CPU entry means "the utilisation".
DEFAULT_SYMPTOMS = (
    (None, 0.4, 0.01, 0.1, 1.0),
    (0.05, 0.1, 0.9, 1.0, 1.0),
    (None, 0.95, 0.15, 0.4, 1.0),
    (0.98, 0.5, 0.1, 0.6, 1.0),
    (None, 0.4, 0.6, 0.8, 0.1),
)


@dataclass(frozen=True)
class RewardConfig:
    """The seed's ``RewardConfig`` values, plus the scaling bonus and an idle-action penalty.

    A successful healing attempt earns ``success_reward``, plus ``fast_recovery_bonus`` if it
    recovered in under ``fast_recovery_threshold`` seconds or ``slow_recovery_penalty`` if it
    took over ``recovery_time_threshold``. A failed one costs ``failure_penalty``, plus
    ``repeated_failure_penalty`` from the second failed attempt on the same incident on. A
    scale action taken during an incident earns ``scaling_bonus`` if it leaves utilisation in
    ``[utilisation_low, utilisation_high]`` (the seed's scaling feedback). Any action other
    than no-op while the service is healthy costs ``idle_action_penalty`` (rlbench's
    addition: without it, restarting a healthy service would be free).
    """

    success_reward: float = 10.0
    failure_penalty: float = -10.0
    repeated_failure_penalty: float = -5.0
    slow_recovery_penalty: float = -2.0
    fast_recovery_bonus: float = 2.0
    recovery_time_threshold: float = 5.0
    fast_recovery_threshold: float = 2.5
    scaling_bonus: float = 1.0
    utilisation_low: float = 0.4
    utilisation_high: float = 0.8
    idle_action_penalty: float = -1.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not np.isfinite(float(value)):
                raise ValueError(f"reward.{f.name} must be a finite number, got {value!r}")
            object.__setattr__(self, f.name, float(value))
        if not 0 <= self.fast_recovery_threshold <= self.recovery_time_threshold:
            raise ValueError(
                "reward.fast_recovery_threshold must lie in [0, reward.recovery_time_threshold], "
                f"got {self.fast_recovery_threshold}"
            )
        if self.utilisation_low > self.utilisation_high:
            raise ValueError(
                f"reward.utilisation_low ({self.utilisation_low}) must be <= "
                f"reward.utilisation_high ({self.utilisation_high})"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | RewardConfig | None) -> RewardConfig:
        """A config from a mapping of field overrides (a Hydra ``env.reward`` block)."""
        if values is None:
            return cls()
        if isinstance(values, RewardConfig):
            return values
        if not isinstance(values, Mapping):
            raise ValueError(f"reward must be a mapping of RewardConfig fields, got {values!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"reward.{unknown[0]} is not a RewardConfig field; known: {sorted(known)}"
            )
        return cls(**values)


def _table(
    name: str, value: Any, shape: tuple[int, ...], low: float, high: float | None = None
) -> np.ndarray:
    """A float table of ``shape`` with entries in ``[low, high]``; ``None`` becomes NaN."""
    try:
        rows = (
            [[np.nan if v is None else v for v in row] for row in value]
            if len(shape) == 2
            else value
        )
        x = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a numeric table of shape {shape}, got {value!r}"
        ) from None
    finite = x[~np.isnan(x)]
    if x.shape != shape or (finite < low).any() or (high is not None and (finite > high).any()):
        raise ValueError(
            f"{name} must be a table of shape {shape} with entries in [{low}, {high or 'inf'}], "
            f"got {value!r}"
        )
    return x


class SelfHealingCore(Core):
    """The self-healing service for ``N`` copies; see :class:`SelfHealingEnv` for the model.

    State per copy: the active failure (0 = none), failed attempts on it, replicas, the
    episode's base load, the step, the episode's counters for the success rate and recovery
    time, and the episode's pre-drawn random numbers (per step: success, recovery time, new
    incident, failure type; per observation: symptom noise).
    """

    render_keys: ClassVar[tuple[str, ...]] = ("failure", "healed", "recovery_time", "replicas")
    info_aggregates: ClassVar[dict[str, str]] = {
        "incident": "sum",
        "healed": "sum",
        "failed_action": "sum",
        "escalated": "sum",
        "recovery_time": "sum",
        "success_rate": "sum",
        "mean_recovery_time": "sum",
        "utilisation": "mean",
    }
    info_units: ClassVar[dict[str, str]] = {
        "success_rate": "success rate (heals / attempts, 0-1)",
        "mean_recovery_time": "mean recovery time (seconds per heal)",
        "healed": "incidents healed (per episode)",
        "incident": "healing attempts (per episode)",
        "failed_action": "failed attempts (per episode)",
        "escalated": "escalated to an operator (per episode)",
        "recovery_time": "recovery time (seconds summed per episode)",
        "utilisation": "utilisation (load / replicas, mean)",
    }
    return_meaning: ClassVar[str] = (
        "the seed's healing reward (+10 a heal, -10 a failed attempt, -5 more for repeats, "
        "-1 an action on a healthy service), so higher is better"
    )
    # the symptoms that tell the failures apart: cpu, memory, error rate, dependency health
    tabular_hint: ClassVar[dict[str, Any]] = {"obs_indices": [0, 1, 2, 5], "bins": 2}

    def __init__(
        self,
        num_envs: int = 1,
        *,
        horizon: int = 100,
        min_replicas: int = 1,
        max_replicas: int = 10,
        initial_replicas: int = 4,
        load_low: float = 1.6,
        load_high: float = 3.2,
        spike_factor: float = 2.0,
        incident_prob: float = 0.3,
        failure_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        success_prob: Sequence[Sequence[float]] = DEFAULT_SUCCESS_PROB,
        recovery_time: Sequence[Sequence[float]] = DEFAULT_RECOVERY_TIME,
        recovery_jitter: float = 0.25,
        symptoms: Sequence[Sequence[float | None]] = DEFAULT_SYMPTOMS,
        symptom_noise: float = 0.05,
        escalate_after: int = 5,
        reward: Mapping[str, Any] | RewardConfig | None = None,
    ) -> None:
        super().__init__(num_envs)
        self.horizon = _integer("horizon", horizon, 1)
        self.min_replicas = _integer("min_replicas", min_replicas, 1)
        self.max_replicas = _integer("max_replicas", max_replicas, 1)
        if self.max_replicas <= self.min_replicas:
            raise ValueError(
                f"max_replicas ({max_replicas}) must be > min_replicas ({min_replicas})"
            )
        self.initial_replicas = _integer("initial_replicas", initial_replicas, 1)
        if not self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise ValueError(
                f"initial_replicas ({initial_replicas}) must lie in [min_replicas, max_replicas]"
                f" = [{min_replicas}, {max_replicas}]"
            )
        self.load_low = _number("load_low", load_low, low=0.0)
        self.load_high = _number("load_high", load_high, low=self.load_low)
        self.spike_factor = _number("spike_factor", spike_factor, low=1.0)
        self.incident_prob = _number("incident_prob", incident_prob, 0.0, 1.0)
        weights = _table("failure_weights", failure_weights, (4,), 0.0)
        if weights.sum() <= 0 or np.isnan(weights).any():
            raise ValueError(
                f"failure_weights must be 4 numbers >= 0, not all 0, got {failure_weights!r}"
            )
        self.failure_cdf = np.cumsum(weights / weights.sum())
        self.success_prob = _table("success_prob", success_prob, (4, 7), 0.0, 1.0)
        self.recovery_time = _table("recovery_time", recovery_time, (4, 7), 0.0)
        if np.isnan(self.success_prob).any() or np.isnan(self.recovery_time).any():
            raise ValueError("success_prob and recovery_time must not contain nulls")
        self.recovery_jitter = _number("recovery_jitter", recovery_jitter, 0.0, 1.0)
        self.symptoms = _table("symptoms", symptoms, (5, 5), 0.0, 1.0)
        if np.isnan(self.symptoms[:, 1:]).any():
            raise ValueError("symptoms may be null only in the cpu column (0)")
        self.symptom_noise = _number("symptom_noise", symptom_noise, 0.0, 1.0)
        self.escalate_after = _integer("escalate_after", escalate_after, 1)
        self.reward = RewardConfig.from_mapping(reward)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(8,), dtype=np.float32)
        self.action_space = spaces.Discrete(len(ACTIONS))

        n = self.num_envs
        self._rows = np.arange(n)
        self.t = np.zeros(n, dtype=np.int64)
        self.failure = np.zeros(n, dtype=np.int64)
        self.fails = np.zeros(n, dtype=np.int64)
        self.replicas = np.full(n, self.initial_replicas, dtype=np.int64)
        self.load = np.full(n, self.load_low)
        self.attempts = np.zeros(n, dtype=np.int64)
        self.heals = np.zeros(n, dtype=np.int64)
        self.total_recovery = np.zeros(n)
        self.draws = np.zeros((n, self.horizon, 4))
        self.noise = np.zeros((n, self.horizon + 1, 5))

    def _new_failure(self, u_incident: np.ndarray, u_type: np.ndarray) -> np.ndarray:
        """Failure index (0 none) of a step whose incident and type draws are given."""
        kind = 1 + np.minimum(np.searchsorted(self.failure_cdf, u_type, side="right"), 3)
        return np.where(u_incident < self.incident_prob, kind, NONE)

    def reset_copies(self, mask: np.ndarray, rngs: Sequence[np.random.Generator]) -> None:
        for i in np.flatnonzero(mask):
            rng = rngs[i]
            self.load[i] = rng.uniform(self.load_low, self.load_high)
            first = rng.random(2)
            self.failure[i] = self._new_failure(first[:1], first[1:])[0]
            self.draws[i] = rng.random((self.horizon, 4))
            self.noise[i] = rng.random((self.horizon + 1, 5))
        self.t[mask] = 0
        self.fails[mask] = 0
        self.replicas[mask] = self.initial_replicas
        self.attempts[mask] = 0
        self.heals[mask] = 0
        self.total_recovery[mask] = 0.0

    def utilisation(self) -> np.ndarray:
        """Load over capacity (one unit per replica); a CPU spike multiplies the load."""
        spike = np.where(self.failure == CPU_SPIKE, self.spike_factor, 1.0)
        return self.load * spike / self.replicas

    def observe(self) -> np.ndarray:
        util = self.utilisation()
        base = self.symptoms[self.failure]
        base[:, 0] = np.where(np.isnan(base[:, 0]), np.minimum(util, 1.0), base[:, 0])
        noise = self.noise[self._rows, np.minimum(self.t, self.horizon)]
        cpu, memory, errors, latency, dependency = np.clip(
            base + self.symptom_noise * (2.0 * noise - 1.0), 0.0, 1.0
        ).T
        obs = np.column_stack(
            [
                cpu,
                memory,
                errors,
                latency,
                (self.replicas - self.min_replicas) / (self.max_replicas - self.min_replicas),
                dependency,
                np.minimum(util, 1.0),
                np.minimum(self.fails / self.escalate_after, 1.0),
            ]
        )
        return obs.astype(np.float32)

    def step(self, actions: np.ndarray) -> StepResult:
        actions = np.asarray(actions)
        if ((actions < 0) | (actions >= len(ACTIONS))).any():
            raise ValueError(f"actions must be in 0..{len(ACTIONS) - 1}, got {actions}")
        cfg, rows = self.reward, self._rows
        u = self.draws[rows, self.t]
        failure = self.failure
        incident = failure != NONE
        # 1. Scaling changes the replicas whatever the state.
        step = (actions == SCALE_UP).astype(np.int64) - (actions == SCALE_DOWN)
        self.replicas = np.clip(self.replicas + step, self.min_replicas, self.max_replicas)
        # 2. A healing attempt on the active failure: success and recovery time from the tables.
        kind = np.maximum(failure - 1, 0)
        p = np.where(incident, self.success_prob[kind, actions], 0.0)
        healed = incident & (u[:, 0] < p)
        jitter = 1.0 + self.recovery_jitter * (2.0 * u[:, 1] - 1.0)
        recovery = np.where(healed, self.recovery_time[kind, actions] * jitter, 0.0)
        failed = incident & ~healed
        self.fails = np.where(failed, self.fails + 1, 0)
        repeated = failed & (self.fails >= 2)
        escalated = failed & (self.fails >= self.escalate_after)
        self.fails[escalated] = 0
        self.failure = np.where(healed | escalated, NONE, failure)
        util = self.utilisation()
        # 3. The reward of this step (see RewardConfig).
        scaled = (actions == SCALE_UP) | (actions == SCALE_DOWN)
        in_band = (util >= cfg.utilisation_low) & (util <= cfg.utilisation_high)
        reward = (
            healed
            * (
                cfg.success_reward
                + cfg.fast_recovery_bonus * (recovery < cfg.fast_recovery_threshold)
                + cfg.slow_recovery_penalty * (recovery > cfg.recovery_time_threshold)
            )
            + failed * (cfg.failure_penalty + cfg.repeated_failure_penalty * repeated)
            + cfg.scaling_bonus * (incident & scaled & in_band)
            + cfg.idle_action_penalty * (~incident & (actions != NOOP))
        )
        # 4. Episode statistics, reported as increments so that their episode sums are the
        #    success rate (heals / attempts) and mean recovery time (seconds per heal).
        rate_before = self.heals / np.maximum(self.attempts, 1)
        mean_rt_before = self.total_recovery / np.maximum(self.heals, 1)
        self.attempts = self.attempts + incident
        self.heals = self.heals + healed
        self.total_recovery = self.total_recovery + recovery
        rate = self.heals / np.maximum(self.attempts, 1)
        mean_rt = self.total_recovery / np.maximum(self.heals, 1)
        # 5. A new incident may start once the service is healthy; seen in the next observation.
        new = self._new_failure(u[:, 2], u[:, 3])
        self.failure = np.where(self.failure == NONE, new, self.failure)
        self.t = self.t + 1
        info = {
            "failure": failure,
            "incident": incident.astype(np.int64),
            "healed": healed.astype(np.int64),
            "failed_action": failed.astype(np.int64),
            "escalated": escalated.astype(np.int64),
            "recovery_time": recovery,
            "success_rate": rate - rate_before,
            "mean_recovery_time": mean_rt - mean_rt_before,
            "utilisation": util,
            "replicas": self.replicas.copy(),
        }
        return StepResult(
            reward=reward.astype(np.float64),
            terminated=np.zeros(self.num_envs, dtype=bool),
            truncated=self.t >= self.horizon,
            info=info,
        )

    def signals(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """Decode observations (``(N, 8)`` or ``(8,)``) into the symptoms a runbook reads:
        ``cpu``, ``memory``, ``error_rate``, ``latency``, ``dependency_health``,
        ``utilisation`` (fractions 0-1), ``replicas`` (count) and ``failed_attempts`` on the
        current incident."""
        obs = np.asarray(obs, dtype=np.float64)
        span = self.max_replicas - self.min_replicas
        return {
            "cpu": obs[..., 0],
            "memory": obs[..., 1],
            "error_rate": obs[..., 2],
            "latency": obs[..., 3],
            "replicas": np.rint(self.min_replicas + obs[..., 4] * span).astype(np.int64),
            "dependency_health": obs[..., 5],
            "utilisation": obs[..., 6],
            "failed_attempts": np.rint(obs[..., 7] * self.escalate_after).astype(np.int64),
        }

    def format_step(self, info: dict[str, Any]) -> str:
        outcome = "healed" if info["healed"] else ("failed" if info["failed_action"] else "-")
        return (
            f"failure={FAILURES[info['failure']]:<15} {outcome:<6} "
            f"recovery={info['recovery_time']:.2f}s replicas={info['replicas']} "
            f"util={info['utilisation']:.2f}"
        )


class SelfHealingEnv(CoreEnv):
    """Heal a failing service: pick the action that fixes each incident, fast.

    ## Description
    A service runs on ``replicas`` replicas (one unit of capacity each) under a base load
    drawn per episode, uniform in ``[load_low, load_high]``; utilisation is load / replicas.
    Incidents hit it one at a time: whenever the service is healthy at the end of a step, a
    new incident starts with probability ``incident_prob`` (also at reset), of a type drawn
    with ``failure_weights`` from crash, memory leak, CPU spike (the load is multiplied by
    ``spike_factor`` while it lasts) and dependency down. Each step the agent takes one action.
    During an incident the action is a healing attempt: it succeeds with probability
    ``success_prob[failure][action]`` and then takes ``recovery_time[failure][action] * (1 +
    recovery_jitter * (2u - 1))`` seconds; otherwise the incident stays. After
    ``escalate_after`` failed attempts in a row an operator takes the incident over (it ends,
    not healed). Scale actions change the replicas (within ``[min_replicas, max_replicas]``)
    in every state.

    The default tables (rows: the failure; columns: noop, restart, scale_up, scale_down,
    clear_cache, rollback, failover). Success probability:

    | failure         | noop | restart | up  | down | cache | rollback | failover |
    |-----------------|------|---------|-----|------|-------|----------|----------|
    | crash           | 0.0  | 0.9     | 0.3 | 0.0  | 0.1   | 0.6      | 0.8      |
    | memory leak     | 0.0  | 0.8     | 0.2 | 0.0  | 0.85  | 0.5      | 0.4      |
    | CPU spike       | 0.2  | 0.3     | 0.9 | 0.0  | 0.2   | 0.2      | 0.5      |
    | dependency down | 0.1  | 0.1     | 0.0 | 0.0  | 0.1   | 0.3      | 0.9      |

    Recovery time in seconds (before jitter):

    | failure         | noop | restart | up  | down | cache | rollback | failover |
    |-----------------|------|---------|-----|------|-------|----------|----------|
    | crash           | 1.0  | 3.0     | 6.0 | 6.0  | 2.0   | 8.0      | 4.0      |
    | memory leak     | 1.0  | 3.0     | 6.0 | 6.0  | 1.5   | 8.0      | 4.0      |
    | CPU spike       | 1.0  | 3.0     | 2.0 | 6.0  | 1.5   | 8.0      | 4.0      |
    | dependency down | 1.0  | 3.0     | 6.0 | 6.0  | 1.5   | 8.0      | 4.0      |

    So the best action is restart for a crash, clear cache for a memory leak, scale up for a
    CPU spike and fail over for a dependency outage; a healthy service wants no-op.

    ## Action Space
    ``Discrete(7)``: 0 no-op, 1 restart, 2 scale up (one replica), 3 scale down (one
    replica), 4 clear cache, 5 roll back, 6 fail over.

    ## Observation Space
    ``Box(0, 1, (8,), float32)``. The symptoms (0-3, 5) are the failure's profile in
    ``symptoms`` plus uniform noise of ``±symptom_noise``, clipped to [0, 1]; by default:

    | failure         | cpu         | memory | error rate | latency | dependency |
    |-----------------|-------------|--------|------------|---------|------------|
    | none            | utilisation | 0.4    | 0.01       | 0.1     | 1.0        |
    | crash           | 0.05        | 0.1    | 0.9        | 1.0     | 1.0        |
    | memory leak     | utilisation | 0.95   | 0.15       | 0.4     | 1.0        |
    | CPU spike       | 0.98        | 0.5    | 0.1        | 0.6     | 1.0        |
    | dependency down | utilisation | 0.4    | 0.6        | 0.8     | 0.1        |

    | Num | Observation                                                      |
    |-----|------------------------------------------------------------------|
    | 0   | CPU usage (fraction)                                             |
    | 1   | memory usage (fraction)                                          |
    | 2   | error rate (fraction of requests)                                |
    | 3   | latency (0 = nominal, 1 = timing out)                            |
    | 4   | replicas: (replicas - min_replicas) / (max_replicas - min_replicas) |
    | 5   | dependency health (1 = healthy)                                  |
    | 6   | utilisation, min(load / replicas, 1)                             |
    | 7   | failed attempts on the current incident / escalate_after         |

    The failure type itself is hidden; ``SelfHealingCore.signals(obs)`` names the entries.

    ## Rewards
    From ``reward``, a :class:`RewardConfig` (the seed's values): during an incident, a
    successful attempt earns +10, +2 more if it recovered in under 2.5 s, -2 if over 5 s; a
    failed attempt (no-op included) costs -10, and -5 more from the second failed attempt on
    the same incident; a scale action that leaves utilisation (after any spike it cured) in
    [0.4, 0.8] earns a scaling bonus of +1. On a healthy service, no-op earns 0 and anything
    else -1 (``idle_action_penalty``, rlbench's addition).

    ## Starting State
    ``initial_replicas`` replicas, no failed attempts; the base load, whether an incident is
    active at the start (and its type), and all the episode's draws come from the
    environment's generator, so ``reset(seed=...)`` fixes the episode.

    ## Episode End
    Never terminated; truncated after ``horizon`` steps (default 100), each an action.

    ## Info
    ``failure`` (index into ``FAILURES`` at the step's start), ``incident`` (1 if one was
    active), ``healed``, ``failed_action``, ``escalated`` (0/1), ``recovery_time`` (seconds,
    0 unless healed), ``utilisation`` and ``replicas`` after the step. ``success_rate`` and
    ``mean_recovery_time`` are the step's change in the episode's running success rate (heals
    / attempts) and mean recovery time (seconds per heal), so their sums over an episode
    (their ``info_aggregates``) are the episode's success rate and mean recovery time.

    ## Arguments
    - ``horizon`` (100); ``min_replicas`` (1), ``max_replicas`` (10), ``initial_replicas``
      (4); ``load_low`` (1.6), ``load_high`` (3.2) in replicas' worth of load;
      ``spike_factor`` (2.0).
    - Incidents: ``incident_prob`` (0.3), ``failure_weights`` ([1, 1, 1, 1]: crash, memory
      leak, CPU spike, dependency down), ``success_prob`` and ``recovery_time`` (4×7 tables
      above), ``recovery_jitter`` (0.25), ``escalate_after`` (5).
    - Symptoms: ``symptoms`` (5×5 table above; ``null`` CPU = utilisation),
      ``symptom_noise`` (0.05).
    - ``reward``: a mapping of :class:`RewardConfig` fields to override.
    - ``render_mode``: ``"ansi"`` or ``"rgb_array"`` (failure, healed, recovery time and
      replicas over the episode).

    Invalid arguments raise ``ValueError`` naming the argument.
    """

    core_cls = SelfHealingCore
