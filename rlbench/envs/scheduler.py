"""``rlbench/ScriptScheduler-v0``: choose how often a script runs for a user whose need drifts.

The seed (an adaptive script scheduler) let a hybrid MLP + Q-learning agent scale each script's
run interval by ×0.85 / keep / ×1.15 from the user's manual runs and preference requests. Here
the user is simulated, so the interval they really want (hidden from the agent) is known and
policies can be compared by regret. Dynamics live in :class:`ScriptSchedulerCore` (vectorised
over ``N`` copies); :class:`ScriptSchedulerEnv` is its one-copy face, documented there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from rlbench.envs._checks import integer as _integer
from rlbench.envs._checks import number as _number
from rlbench.envs.base import Core, CoreEnv, StepResult

DECREASE, KEEP, INCREASE = 0, 1, 2
REWARD_MODES = ("seed", "regret")


class ScriptSchedulerCore(Core):
    """The script scheduler for ``N`` copies (one script each); see :class:`ScriptSchedulerEnv`.

    State per copy: the run interval, the user's hidden ideal interval, the minutes since the
    script last ran, the smoothed gap between runs, the manual runs of the last
    ``manual_window`` steps, the latest preference signal, and the episode's pre-drawn random
    numbers (drift, manual-run and preference draws, one row per step).
    """

    render_keys: ClassVar[tuple[str, ...]] = ("interval", "ideal", "manual_runs", "preference")
    info_aggregates: ClassVar[dict[str, str]] = {
        "interval": "mean",
        "ideal": "mean",
        "regret": "mean",
        "manual_runs": "sum",
        "requests": "sum",
        "preference": "mean",
        "runs": "sum",
        "at_floor": "sum",
    }
    info_units: ClassVar[dict[str, str]] = {
        "regret": "regret (abs(interval - ideal) / ideal, mean)",
        "interval": "run interval (minutes, mean)",
        "ideal": "user's ideal interval (minutes, mean)",
        "runs": "script runs (scheduled + manual, per episode)",
        "manual_runs": "manual runs (per episode)",
        "requests": "preference requests (per episode)",
        "preference": "preference (+1 more often, -1 less often; mean)",
        "at_floor": "steps at min_interval (per episode)",
    }
    return_meaning: ClassVar[str] = (
        "minus the run interval's relative error to the user's hidden ideal and a cost per run, "
        "so closer to 0 is better (reward_mode=seed: the seed's reward instead)"
    )

    def __init__(
        self,
        num_envs: int = 1,
        *,
        horizon: int = 96,
        step_minutes: float = 30.0,
        initial_interval: float = 60.0,
        min_interval: float = 3.0,
        max_interval: float = 1440.0,
        decrease_factor: float = 0.85,
        increase_factor: float = 1.15,
        ideal_low: float = 10.0,
        ideal_high: float = 240.0,
        drift: float = 0.05,
        manual_rate: float = 1.0,
        preference_ratio: float = 1.5,
        preference_prob: float = 0.5,
        manual_window: int = 8,
        gap_smoothing: float = 0.3,
        reward_mode: str = "regret",
        manual_reward: float = 1.0,
        preference_reward: float = 0.5,
        floor_penalty: float = -0.3,
        stability_reward: float = 0.2,
        stability_tolerance: float = 1.5,
        run_cost: float = 0.01,
    ) -> None:
        super().__init__(num_envs)
        self.horizon = _integer("horizon", horizon, 1)
        self.step_minutes = _number("step_minutes", step_minutes, positive=True)
        self.min_interval = _number("min_interval", min_interval, positive=True)
        self.max_interval = _number("max_interval", max_interval, low=self.min_interval)
        if self.max_interval == self.min_interval:
            raise ValueError(f"max_interval must be > min_interval, got {max_interval!r}")
        self.initial_interval = _number(
            "initial_interval", initial_interval, self.min_interval, self.max_interval
        )
        self.decrease_factor = _number("decrease_factor", decrease_factor, 0.0, 1.0)
        if not 0.0 < self.decrease_factor < 1.0:
            raise ValueError(f"decrease_factor must be in (0, 1), got {decrease_factor!r}")
        self.increase_factor = _number("increase_factor", increase_factor, 1.0)
        if self.increase_factor == 1.0:
            raise ValueError(f"increase_factor must be > 1, got {increase_factor!r}")
        self.ideal_low = _number("ideal_low", ideal_low, positive=True)
        self.ideal_high = _number("ideal_high", ideal_high, positive=True)
        if self.ideal_low > self.ideal_high:  # named together: either may be the one to change
            raise ValueError(
                f"ideal_low ({self.ideal_low:g}) must not exceed ideal_high ({self.ideal_high:g})"
            )
        self.drift = _number("drift", drift, low=0.0)
        self.manual_rate = _number("manual_rate", manual_rate, low=0.0)
        self.preference_ratio = _number("preference_ratio", preference_ratio, low=1.0)
        self.preference_prob = _number("preference_prob", preference_prob, 0.0, 1.0)
        self.manual_window = _integer("manual_window", manual_window, 1)
        self.gap_smoothing = _number("gap_smoothing", gap_smoothing, 0.0, 1.0)
        if self.gap_smoothing == 0.0:
            raise ValueError("gap_smoothing must be in (0, 1], got 0")
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
        self.reward_mode = reward_mode
        self.manual_reward = _number("manual_reward", manual_reward)
        self.preference_reward = _number("preference_reward", preference_reward)
        self.floor_penalty = _number("floor_penalty", floor_penalty)
        self.stability_reward = _number("stability_reward", stability_reward)
        self.stability_tolerance = _number("stability_tolerance", stability_tolerance, low=0.0)
        self.run_cost = _number("run_cost", run_cost, low=0.0)
        self.factors = np.array([self.decrease_factor, 1.0, self.increase_factor])
        self._log_span = np.log(self.max_interval / self.min_interval)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(4,), dtype=np.float32)
        self.action_space = spaces.Discrete(3)

        n = self.num_envs
        self._rows = np.arange(n)
        self.t = np.zeros(n, dtype=np.int64)
        self.interval = np.full(n, self.initial_interval)
        self.ideal = np.full(n, self.ideal_low)
        self.since = np.zeros(n)
        self.avg_gap = np.full(n, self.initial_interval)
        self.preference = np.zeros(n, dtype=np.int64)
        self.manual_hist = np.zeros((n, self.manual_window), dtype=np.int64)
        self.drift_draws = np.zeros((n, self.horizon))
        self.uniform_draws = np.zeros((n, self.horizon, 2))

    def reset_copies(self, mask: np.ndarray, rngs: Sequence[np.random.Generator]) -> None:
        log_lo, log_hi = np.log(self.ideal_low), np.log(self.ideal_high)
        for i in np.flatnonzero(mask):
            rng = rngs[i]
            self.ideal[i] = np.exp(rng.uniform(log_lo, log_hi))
            self.drift_draws[i] = rng.standard_normal(self.horizon)
            self.uniform_draws[i] = rng.random((self.horizon, 2))
        self.t[mask] = 0
        self.interval[mask] = self.initial_interval
        self.since[mask] = 0.0
        self.avg_gap[mask] = self.initial_interval
        self.preference[mask] = 0
        self.manual_hist[mask] = 0

    def _log_scale(self, minutes: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(minutes, 1e-12) / self.min_interval) / self._log_span

    def observe(self) -> np.ndarray:
        obs = np.stack(
            [
                self._log_scale(self.avg_gap),
                (self.preference + 1) / 2.0,
                self.manual_hist.sum(axis=1) / self.manual_window,
                self._log_scale(self.interval),
            ],
            axis=1,
        )
        return np.clip(obs, 0.0, 1.0).astype(np.float32)

    def step(self, actions: np.ndarray) -> StepResult:
        actions = np.asarray(actions)
        if ((actions < DECREASE) | (actions > INCREASE)).any():
            raise ValueError(f"actions must be 0 (×{self.decrease_factor}), 1 or 2, got {actions}")
        rows, t, b, d = self._rows, self.t, self.gap_smoothing, self.step_minutes
        seen_gap = self.avg_gap
        # 1. The agent rescales the interval; the user's ideal drifts (log-normal random walk).
        interval = np.clip(
            self.interval * self.factors[actions], self.min_interval, self.max_interval
        )
        ideal = self.ideal * np.exp(self.drift * self.drift_draws[rows, t])
        ideal = np.clip(ideal, self.ideal_low, self.ideal_high)
        u_manual, u_pref = self.uniform_draws[rows, t, 0], self.uniform_draws[rows, t, 1]
        # 2. The user looks at the script: runs it by hand if stale, may ask for a change.
        staleness = np.maximum(self.since / ideal - 1.0, 0.0)
        manual = u_manual < 1.0 - np.exp(-self.manual_rate * staleness)
        ratio = interval / ideal
        asks = u_pref < self.preference_prob
        more = asks & (ratio > self.preference_ratio)
        less = asks & (ratio < 1.0 / self.preference_ratio)
        preference = more.astype(np.int64) - less.astype(np.int64)
        gap = np.where(manual, (1 - b) * seen_gap + b * self.since, seen_gap)
        since = np.where(manual, 0.0, self.since)
        # 3. Scheduled runs in [0, step_minutes): the first when the timer reaches the interval
        #    (at once if overdue), then one every interval.
        first = np.maximum(interval - since, 0.0)
        runs = np.where(first < d, np.ceil((d - first) / interval), 0.0).astype(np.int64)
        gap = np.where(runs > 0, (1 - b) * gap + b * np.maximum(interval, since), gap)
        keep = (1 - b) ** np.maximum(runs - 1, 0)
        gap = keep * gap + (1 - keep) * interval
        since = np.where(runs > 0, d - (first + (runs - 1) * interval), since + d)

        self.interval, self.ideal, self.since, self.avg_gap = interval, ideal, since, gap
        self.preference = preference
        self.manual_hist[rows, t % self.manual_window] = manual
        self.t = t + 1
        regret = np.abs(interval - ideal) / ideal
        total_runs = runs + manual
        at_floor = interval <= self.min_interval
        if self.reward_mode == "seed":
            reward = (
                self.manual_reward * manual
                + self.preference_reward * (preference != 0)
                + self.floor_penalty * at_floor
                + self.stability_reward * (np.abs(interval - seen_gap) <= self.stability_tolerance)
            )
        else:
            reward = -regret - self.run_cost * total_runs
        info = {
            "interval": interval.copy(),
            "ideal": ideal.copy(),
            "regret": regret,
            "manual_runs": manual.astype(np.int64),
            "preference": preference.copy(),
            "requests": (preference != 0).astype(np.int64),
            "runs": total_runs,
            "avg_gap": gap.copy(),
            "at_floor": at_floor.astype(np.int64),
        }
        return StepResult(
            reward=reward.astype(np.float64),
            terminated=np.zeros(self.num_envs, dtype=bool),
            truncated=self.t >= self.horizon,
            info=info,
        )

    def signals(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """Decode observations (``(N, 4)`` or ``(4,)``) into the seed's state in its own units:
        ``avg_gap`` and ``interval`` (minutes), ``manual_count`` (manual runs in the window) and
        ``preference`` (+1 more often, -1 less often, 0 none)."""
        obs = np.asarray(obs, dtype=np.float64)

        def minutes(x: np.ndarray) -> np.ndarray:
            return self.min_interval * np.exp(x * self._log_span)

        return {
            "avg_gap": minutes(obs[..., 0]),
            "preference": np.rint(obs[..., 1] * 2 - 1).astype(np.int64),
            "manual_count": np.rint(obs[..., 2] * self.manual_window).astype(np.int64),
            "interval": minutes(obs[..., 3]),
        }

    def format_step(self, info: dict[str, Any]) -> str:
        return (
            f"interval={info['interval']:7.1f}min ideal={info['ideal']:7.1f}min "
            f"runs={info['runs']} manual={info['manual_runs']} pref={info['preference']:+d} "
            f"regret={info['regret']:.3f}"
        )


class ScriptSchedulerEnv(CoreEnv):
    """Choose how often a script runs, for a simulated user whose hidden need drifts.

    ## Description
    One copy schedules one script (a batch of ``N`` copies schedules ``N`` independent scripts).
    Each step is a decision epoch of ``step_minutes`` minutes (default 30). The script runs
    every ``interval`` minutes; the user wants it every ``ideal`` minutes, a hidden value that
    starts log-uniform in ``[ideal_low, ideal_high]`` and drifts by a log-normal random walk
    (``ideal *= exp(drift * z)``, ``z ~ N(0, 1)`` per step, clipped to the same range).

    Each step, in order:

    1. The action rescales the interval, clipped to ``[min_interval, max_interval]``; the ideal
       drifts.
    2. The user looks at the script at the start of the epoch. It has not run for ``since``
       minutes; with probability ``1 - exp(-manual_rate * max(0, since / ideal - 1))`` (zero
       until the script is older than the ideal, rising with staleness) they run it by hand,
       which restarts the timer. With probability ``preference_prob`` they state a preference
       if the interval is far off: ``+1`` ("increase", run more often) when
       ``interval / ideal > preference_ratio``, ``-1`` ("decrease", less often) when
       ``interval / ideal < 1 / preference_ratio``; otherwise the signal is 0.
    3. Scheduled runs happen during the epoch whenever the timer reaches the interval (at once
       if it is already overdue after a decrease), then every ``interval`` minutes.

    The "average gap of the last runs" is an exponential moving average over runs: each run,
    manual or scheduled, with gap ``g`` (minutes since the previous run) updates
    ``avg_gap = (1 - gap_smoothing) * avg_gap + gap_smoothing * g``.

    ## Action Space
    ``Discrete(3)``: 0 multiplies the interval by ``decrease_factor`` (0.85), 1 keeps it,
    2 multiplies it by ``increase_factor`` (1.15). The interval never leaves
    ``[min_interval, max_interval]`` (3 minutes to one day).

    ## Observation Space
    ``Box(0, 1, (4,), float32)``. Minutes are shown on a log scale,
    ``log(x / min_interval) / log(max_interval / min_interval)``, clipped to [0, 1];
    ``ScriptSchedulerCore.signals(obs)`` turns an observation back into natural units.

    | Num | Observation                                                         |
    |-----|---------------------------------------------------------------------|
    | 0   | average gap between the script's recent runs (log scale)            |
    | 1   | preference signal of this step: (pref + 1) / 2, i.e. 0, 0.5 or 1    |
    | 2   | manual runs in the last ``manual_window`` steps / ``manual_window`` |
    | 3   | current run interval (log scale), which the agent's actions move    |

    Entries 0-2 are the seed's state (``avg_interval``, ``user_pref``, ``manual_count``);
    entry 3 is added because the agent cannot otherwise know where its actions have put the
    interval. The ideal interval is hidden (it is in ``info``).

    ## Rewards
    ``reward_mode="regret"`` (default): ``-|interval - ideal| / ideal - run_cost * runs``, with
    ``runs`` the scheduled and manual runs of the step. The first term is 0 exactly when the
    schedule matches the user's need and grows with the relative error either way; the second
    charges each run (compute, noise), so running far too often costs more than the error alone.

    ``reward_mode="seed"``: the seed's reward, kept faithfully, as the sum of
    ``manual_reward`` (+1.0) if the user ran the script by hand this step,
    ``preference_reward`` (+0.5) if they stated a preference, ``floor_penalty`` (-0.3) if the
    interval is at ``min_interval``, and ``stability_reward`` (+0.2) if the new interval is
    within ``stability_tolerance`` (1.5) minutes of the average gap the agent observed; each
    term is 0 when its condition does not hold. Note that this reward *pays* for the user's
    complaints (manual runs and requests), so maximising it drives the schedule away from what
    the user wants; compare agents on ``regret`` (in ``info``) whatever the mode.

    ## Starting State
    ``interval = avg_gap = initial_interval`` (60), the script has just run (``since = 0``), no
    manual runs or preference yet; the ideal is drawn from the environment's generator, as are
    the episode's drift and user draws, so ``reset(seed=...)`` fixes the episode.

    ## Episode End
    Never terminated; truncated after ``horizon`` steps (default 96: two days of 30 minutes).

    ## Info
    ``interval`` and ``ideal`` (minutes, after the step), ``regret`` (``|interval - ideal| /
    ideal``), ``manual_runs`` (1 if the user ran the script by hand), ``preference`` (-1/0/+1),
    ``requests`` (1 if a preference was stated), ``runs`` (scheduled + manual), ``avg_gap``
    (minutes), ``at_floor`` (1 if the interval is at ``min_interval``).

    ## Arguments
    - ``horizon`` (96), ``step_minutes`` (30).
    - ``initial_interval`` (60), ``min_interval`` (3, the seed's floor), ``max_interval``
      (1440), ``decrease_factor`` (0.85), ``increase_factor`` (1.15): minutes and factors.
    - The user: ``ideal_low`` (10), ``ideal_high`` (240), ``drift`` (0.05 per step, log
      scale), ``manual_rate`` (1.0), ``preference_ratio`` (1.5), ``preference_prob`` (0.5),
      ``manual_window`` (8 steps), ``gap_smoothing`` (0.3).
    - ``reward_mode``: ``regret`` or ``seed``; ``run_cost`` (0.01 per run, regret mode);
      ``manual_reward`` (1.0), ``preference_reward`` (0.5), ``floor_penalty`` (-0.3),
      ``stability_reward`` (0.2), ``stability_tolerance`` (1.5 minutes) for seed mode.
    - ``render_mode``: ``"ansi"`` or ``"rgb_array"`` (interval, ideal, manual runs and
      preference over the episode).

    Invalid arguments raise ``ValueError`` naming the argument.
    """

    core_cls = ScriptSchedulerCore
