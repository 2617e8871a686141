"""``rlbench/Autoscaling-v0``: scale a pool of cloud instances to a request load, paying in dollars.

The dynamics are written once in :class:`AutoscalingCore`, vectorised over ``N`` copies;
:class:`AutoscalingEnv` is its one-copy gymnasium face (documented there).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from rlbench.envs import forecasters, load_patterns
from rlbench.envs._checks import integer as _integer
from rlbench.envs._checks import number as _number
from rlbench.envs.base import Core, CoreEnv, StepResult

REMOVE, HOLD, ADD = 0, 1, 2


class AutoscalingCore(Core):
    """The autoscaling dynamics for ``N`` copies; see :class:`AutoscalingEnv` for the model.

    State per copy: step ``t``, running instances, a provisioning pipeline (``pipeline[:, j]``
    instances become running at the countdown ``j`` steps from now), the queue, and the
    episode's load series (drawn at reset from the copy's generator).
    """

    render_keys: ClassVar[tuple[str, ...]] = ("influx", "capacity", "instances", "queue")
    info_aggregates: ClassVar[dict[str, str]] = {
        "cost": "sum",
        "sla_violation": "sum",
        "dropped": "sum",
        "scale_action": "sum",
        "utilisation": "mean",
        "instances": "mean",
        "queue": "mean",
        "load_pct": "mean",
    }
    info_units: ClassVar[dict[str, str]] = {
        "cost": "instance cost ($ per episode)",
        "sla_violation": "SLA violations (steps per episode)",
        "utilisation": "utilisation (0-1, mean)",
        "dropped": "dropped (requests per episode)",
        "instances": "instances (running, mean)",
        "queue": "queue (requests waiting, mean)",
        "load_pct": "load (%, mean)",
        "scale_action": "scale actions (per episode)",
    }
    return_meaning: ClassVar[str] = (
        "minus dollars (instances, waiting and dropped requests, scaling), so closer to 0 is better"
    )
    # running instances, utilisation, queue: 25 x 10 x 5 = 1250 states; q_init about the
    # return scale (pessimistic), so untried actions do not look best (measured: with 0 the
    # greedy policy sometimes walked into unvisited states and collapsed to about -1700).
    tabular_hint: ClassVar[dict[str, Any]] = {
        "obs_indices": [0, 2, 3],
        "bins": [25, 10, 5],
        "q_init": -100.0,
    }

    def __init__(
        self,
        num_envs: int = 1,
        *,
        load: str = "sine_curve",
        horizon: int = 288,
        step_minutes: float = 5.0,
        initial_instances: int = 10,
        min_instances: int = 1,
        max_instances: int = 50,
        provision_delay: int = 2,
        capacity: float = 100.0,
        max_queue: float | None = None,
        price_per_hour: float = 0.192,
        sla_penalty: float = 0.5,
        drop_penalty: float = 5.0,
        churn_penalty: float = 0.01,
        invalid_action_penalty: float = 0.0,
        reward_scale: float = 1.0,
        base_load: float = 2000.0,
        amplitude: float = 1500.0,
        period: float | None = None,
        harmonic: int = 4,
        harmonic_weight: float = 0.5,
        spike_height: float = 2500.0,
        spike_every: int = 72,
        spike_ramp: int = 3,
        random_step: float = 150.0,
        noise: float = 0.0,
        trace_path: str | Path | None = None,
        trace_scale: float = 1.0,
        forecast: str = "none",
        forecast_steps: int = 6,
        forecast_model: str | None = None,
    ) -> None:
        super().__init__(num_envs)
        self.load = load_patterns.pattern_name(load)
        self.horizon = _integer("horizon", horizon, 1)
        self.step_minutes = _number("step_minutes", step_minutes, positive=True)
        self.min_instances = _integer("min_instances", min_instances, 0)
        self.max_instances = _integer("max_instances", max_instances, 1)
        if self.min_instances > self.max_instances:
            raise ValueError(
                f"min_instances ({min_instances}) must be <= max_instances ({max_instances})"
            )
        self.initial_instances = _integer("initial_instances", initial_instances, 0)
        if not self.min_instances <= self.initial_instances <= self.max_instances:
            raise ValueError(
                f"initial_instances ({initial_instances}) must lie in "
                f"[min_instances, max_instances] = [{min_instances}, {max_instances}]"
            )
        self.provision_delay = _integer("provision_delay", provision_delay, 0)
        self.capacity = _number("capacity", capacity, positive=True)
        full = self.max_instances * self.capacity
        self.max_queue = full if max_queue is None else _number("max_queue", max_queue, 0.0)
        self.price_per_hour = _number("price_per_hour", price_per_hour, 0.0)
        self.sla_penalty = _number("sla_penalty", sla_penalty, 0.0)
        self.drop_penalty = _number("drop_penalty", drop_penalty, 0.0)
        self.churn_penalty = _number("churn_penalty", churn_penalty, 0.0)
        self.invalid_action_penalty = _number("invalid_action_penalty", invalid_action_penalty, 0.0)
        self.reward_scale = _number("reward_scale", reward_scale, positive=True)
        if self.load == "trace" and trace_path is None:
            trace_path = load_patterns.SAMPLE_TRACE
        trace = None if trace_path is None else load_patterns.read_trace(trace_path)
        self.params = load_patterns.LoadParams(
            base_load=float(base_load),
            amplitude=float(amplitude),
            period=float(self.horizon if period is None else period),
            harmonic=harmonic,
            harmonic_weight=float(harmonic_weight),
            spike_height=float(spike_height),
            spike_every=spike_every,
            spike_ramp=spike_ramp,
            random_step=float(random_step),
            noise=float(noise),
            trace_scale=float(trace_scale),
            trace=trace,
        )
        self.dollars_per_instance_step = self.price_per_hour * self.step_minutes / 60.0
        # A forecast appends ``forecast_steps`` entries to the observation; the load series
        # then carries the history the forecaster reads (``_before`` steps in front of the
        # episode) and, for the oracle, the future it reveals (``_after`` steps behind).
        self.forecast = str(forecast).strip().lower()
        self.forecast_steps = _integer("forecast_steps", forecast_steps, 1)
        self.forecaster = forecasters.make_forecaster(
            self.forecast, self.forecast_steps, self.params.period, forecast_model
        )
        k = 0 if self.forecast == "none" else self.forecast_steps
        self._before = self.forecaster.window if self.forecaster is not None else 0
        self._after = k if self.forecast == "oracle" else 0
        self.observation_space = spaces.Box(0.0, 1.0, shape=(7 + k,), dtype=np.float32)
        # the observation entry of the forecast load when an instance added now would serve
        self._ahead = 7 + min(self.provision_delay, self.forecast_steps - 1)
        if k:
            # tabular agents also bin it
            self.tabular_hint = {
                "obs_indices": [0, 2, 3, self._ahead],
                "bins": [25, 10, 5, 5],
                "q_init": -100.0,
            }
        self.action_space = spaces.Discrete(3)

        n = self.num_envs
        self._rows = np.arange(n)
        self.t = np.zeros(n, dtype=np.int64)
        self.running = np.full(n, self.initial_instances, dtype=np.int64)
        self.pipeline = np.zeros((n, self.provision_delay + 1), dtype=np.int64)
        self.queue = np.zeros(n)
        self.arrivals = np.zeros(n)
        self.utilisation = np.zeros(n)
        self.loads = np.zeros((n, self._before + self.horizon + self._after))
        self.pending = np.zeros(n, dtype=np.int64)  # pipeline.sum(axis=1), kept up to date
        # the time-of-day features of every step of an episode (the same arithmetic as for
        # one step; observe() reads them instead of two trig calls a step)
        phase = 2.0 * np.pi * np.arange(self.horizon + 1) / self.params.period
        self._time_features = np.stack(
            [(np.sin(phase) + 1.0) / 2.0, (np.cos(phase) + 1.0) / 2.0], 1
        )
        # every step's forecast of the episode, made at reset (see reset_copies)
        self.forecasts = np.zeros((n, self.horizon + 1, k))

    def reset_copies(self, mask: np.ndarray, rngs: Sequence[np.random.Generator]) -> None:
        steps = np.arange(self.horizon)
        for i in np.flatnonzero(mask):
            series = load_patterns.generate(self.load, steps, self.params, rngs[i])
            if self._before or self._after:
                # drawn from a child generator: the copy's own stream, and so every later
                # episode, stays what it is without a forecast
                extra = _child(rngs[i])
                series = load_patterns.extend(
                    self.load, series, self._before, self._after, self.params, extra
                )
            self.loads[i] = series
            if self.forecaster is not None:
                self.forecasts[i] = self._episode_forecasts(series)
        self.t[mask] = 0
        self.running[mask] = self.initial_instances
        self.pipeline[mask] = 0
        # a new array, not an update in place: the last step's info holds the old one
        self.pending = np.where(mask, 0, self.pending)
        self.queue[mask] = 0.0
        self.arrivals[mask] = 0.0
        self.utilisation[mask] = 0.0

    def observe(self) -> np.ndarray:
        full = self.max_instances * self.capacity
        obs = np.empty((self.num_envs, self.observation_space.shape[0]))
        obs[:, 0] = self.running / self.max_instances
        obs[:, 1] = self.pending / self.max_instances
        obs[:, 2] = self.utilisation
        obs[:, 3] = self.queue / self.max_queue if self.max_queue > 0 else 0.0 * self.queue
        obs[:, 4] = self.arrivals / full
        if self.t.max() <= self.horizon:  # within an episode: the precomputed features
            obs[:, 5:7] = self._time_features[self.t]
        else:  # stepped past the horizon without a reset
            phase = 2.0 * np.pi * self.t / self.params.period
            obs[:, 5] = (np.sin(phase) + 1.0) / 2.0
            obs[:, 6] = (np.cos(phase) + 1.0) / 2.0
        if self.forecast != "none":
            obs[:, 7:] = self.forecast_loads() / full
        return np.clip(obs, 0.0, 1.0, out=obs).astype(np.float32)

    def forecast_loads(self) -> np.ndarray:
        """``(N, forecast_steps)``: the forecast load (requests per step) of steps ``t`` ..
        ``t + forecast_steps - 1`` of every copy; the true loads for the oracle."""
        if self.forecaster is None:  # the oracle
            t = self.t[:, None]
            return self.loads[
                self._rows[:, None], self._before + t + np.arange(self.forecast_steps)
            ]
        return self.forecasts[self._rows, self.t]

    def _episode_forecasts(self, series: np.ndarray) -> np.ndarray:
        """The forecast at every step ``t = 0 .. horizon`` of one episode, in one call.

        Each forecast reads only the ``window`` loads before its step, exactly as a forecast
        made at that step would; making them all at reset is one batched call instead of one
        per step (the LSTM's cost is in its per-call overhead), and, being one call per copy
        with the same shapes, gives a copy the same numbers in a batch and alone.
        """
        w = self.forecaster.window
        windows = np.lib.stride_tricks.sliding_window_view(series[: w + self.horizon], w)
        t = np.arange(self.horizon + 1)
        forecast = self.forecaster.predict(windows, t, self.params.period)
        return forecast[:, : self.forecast_steps]

    def step(self, actions: np.ndarray) -> StepResult:
        actions = np.asarray(actions)
        if ((actions < REMOVE) | (actions > ADD)).any():
            raise ValueError(f"actions must be 0 (remove), 1 (hold) or 2 (add), got {actions}")
        # 1. The action: add goes into the pipeline, remove takes a running instance at once;
        #    one that would cross min/max (running + pending) is a no-op.
        total = self.running + self.pending
        add = (actions == ADD) & (total < self.max_instances)
        remove = (actions == REMOVE) & (total > self.min_instances) & (self.running > 0)
        invalid = (actions != HOLD) & ~add & ~remove
        self.pipeline[:, -1] += add
        self.running -= remove
        # 2. Pending instances count down; those due become running.
        self.running += self.pipeline[:, 0]
        self.pipeline[:, :-1] = self.pipeline[:, 1:]
        self.pipeline[:, -1] = 0
        self.pending = self.pipeline.sum(axis=1)
        # 3. Requests: the queue is served first-come with this step's arrivals.
        self.arrivals = self.loads[self._rows, self._before + self.t % self.horizon]
        demand = self.queue + self.arrivals
        capacity = self.running * self.capacity
        served = np.minimum(demand, capacity)
        unserved = demand - served
        self.queue = np.minimum(unserved, self.max_queue)
        dropped = unserved - self.queue
        self.utilisation = np.divide(
            served, capacity, out=np.zeros_like(served), where=capacity > 0
        )
        self.t += 1
        # 4. Money, in dollars: instances billed from launch, waiting and dropped work, churn.
        pending = self.pending
        cost = (self.running + pending) * self.dollars_per_instance_step
        sla_cost = (self.sla_penalty * self.queue + self.drop_penalty * dropped) / 1000.0
        scaled = add | remove
        churn_cost = self.churn_penalty * scaled + self.invalid_action_penalty * invalid
        cost_reward = -cost * self.reward_scale
        sla_reward = -sla_cost * self.reward_scale
        churn_reward = -churn_cost * self.reward_scale
        info = {
            "influx": self.arrivals,
            "capacity": capacity,
            "instances": self.running.copy(),
            "pending": pending,
            "queue": self.queue,
            "load_pct": self.utilisation * 100.0,
            "utilisation": self.utilisation,
            "cost": cost,
            "sla_violation": (unserved > 0).astype(np.int64),
            "dropped": dropped,
            "scale_action": scaled.astype(np.int64),
            "invalid_action": invalid.astype(np.int64),
            "cost_reward": cost_reward,
            "sla_reward": sla_reward,
            "churn_reward": churn_reward,
        }
        return StepResult(
            reward=cost_reward + sla_reward + churn_reward,
            terminated=np.zeros(self.num_envs, dtype=bool),
            truncated=self.t >= self.horizon,
            info=info,
        )

    def signals(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """Decode observations (``(N, d)`` or ``(d,)``) into what a threshold rule reads:
        ``load_pct`` (served / capacity, 0-100) and ``queue`` (requests waiting); with a
        forecast also ``forecast_pct``: the forecast load ``provision_delay`` steps ahead (when
        an instance added now serves) against running + pending capacity, percent."""
        obs = np.asarray(obs, dtype=np.float64)
        signals = {"load_pct": obs[..., 2] * 100.0, "queue": obs[..., 3] * self.max_queue}
        if self.forecast != "none":
            # the forecast load when an instance added now would serve, against the capacity
            # running and pending instances will have then (percent; inf with none at all)
            load = obs[..., self._ahead] * self.max_instances * self.capacity
            capacity = (obs[..., 0] + obs[..., 1]) * self.max_instances * self.capacity
            with np.errstate(divide="ignore", invalid="ignore"):
                pct = np.where(capacity > 0, load / capacity * 100.0, np.inf)
            signals["forecast_pct"] = np.where(load > 0, pct, 0.0)
        return signals

    def format_step(self, info: dict[str, Any]) -> str:
        reward = info["cost_reward"] + info["sla_reward"] + info["churn_reward"]
        return (
            f"instances={info['instances']:3d} (+{info['pending']} pending) "
            f"influx={info['influx']:7.0f} queue={info['queue']:7.0f} "
            f"dropped={info['dropped']:5.0f} load={info['load_pct']:5.1f}% "
            f"cost=${info['cost']:.3f} reward={reward:+.4f}"
        )


class AutoscalingEnv(CoreEnv):
    """Scale a pool of cloud instances to a fluctuating request load at least cost in dollars.

    ## Description
    Requests arrive every step (``step_minutes``, default 5 minutes) following a load pattern.
    Each running instance serves ``capacity`` requests per step; requests that cannot be served
    wait in a queue carried over to the next step, and whatever exceeds ``max_queue`` is
    dropped. Each step the agent may remove one instance, hold, or add one; an added instance
    is billed at once but only serves after ``provision_delay`` steps. The agent pays for
    instances, for waiting and dropped requests, and for changing the pool.

    Each step, in order: (1) the action is applied (an added instance enters the provisioning
    pipeline, a removed one stops running at once; an action that would take running + pending
    instances outside ``[min_instances, max_instances]``, or remove when no instance is running,
    is a no-op); (2) pending instances count down, and those due start running; (3)
    ``arrivals = load[t]``, ``demand = queue + arrivals``,
    ``served = min(demand, running * capacity)``, the rest queues up to ``max_queue`` and the
    excess is dropped.

    ## Action Space
    ``Discrete(3)``: 0 remove one instance, 1 hold, 2 add one instance. An instance added at
    step ``s`` serves from step ``s + provision_delay`` (``provision_delay = 0``: in step ``s``).

    ## Observation Space
    ``Box(0, 1, (7,), float32)``, each entry clipped to [0, 1], describing the state after the
    step:

    | Num | Observation                                            |
    |-----|--------------------------------------------------------|
    | 0   | running instances / max_instances                      |
    | 1   | pending (provisioning) instances / max_instances       |
    | 2   | utilisation: served / (running * capacity); 0 if none run |
    | 3   | queue / max_queue (0 if max_queue = 0)                 |
    | 4   | arrivals of the last step / (max_instances * capacity) |
    | 5   | time of day: (sin(2π t / period) + 1) / 2              |
    | 6   | time of day: (cos(2π t / period) + 1) / 2              |

    ``t`` counts the steps taken in the episode. After reset, utilisation and arrivals are 0.

    With ``forecast`` other than ``none`` the observation has ``7 + forecast_steps`` entries:
    entry ``7 + j`` is the forecast load of step ``t + j`` (the arrivals of the ``j + 1``-th
    step from now) / (max_instances * capacity). ``naive``: the load one ``period`` earlier;
    ``last_value``: the last load; ``lstm``: a trained forecaster (``forecast_model``);
    ``oracle``: the true future load, the upper bound of what a forecast can give. The
    forecasters read the loads before ``t`` only, including, at an episode's start, the
    pattern's history before step 0; the episode's loads are the same with or without a
    forecast.

    ## Rewards
    All terms are in dollars, multiplied by ``reward_scale``; ``reward = cost_reward +
    sla_reward + churn_reward`` (each term is in ``info``):

    - ``cost_reward = -(running + pending) * price_per_hour * step_minutes / 60`` (billed from
      launch);
    - ``sla_reward = -(sla_penalty * queue + drop_penalty * dropped) / 1000``: dollars per
      1000 requests left waiting after the step, and per 1000 dropped;
    - ``churn_reward = -(churn_penalty * scale_action + invalid_action_penalty *
      invalid_action)``: per instance added or removed, and per no-op caused by a bound.

    ## Starting State
    ``t = 0``, ``initial_instances`` running, none pending, empty queue. The episode's whole
    load series (``horizon`` steps) is drawn from the environment's generator, so
    ``reset(seed=...)`` fixes the episode.

    ## Episode End
    Never terminated; truncated after ``horizon`` steps (default 288 = one day of 5 minutes).

    ## Info
    One number each: ``influx`` (arrivals), ``capacity`` (running * capacity), ``instances``
    (running), ``pending``, ``queue``, ``load_pct`` (utilisation * 100), ``utilisation``,
    ``cost`` (instance dollars this step), ``sla_violation`` (1 if any request was not served
    this step: queued or dropped), ``dropped``, ``scale_action`` (1 if an instance was added or
    removed), ``invalid_action`` (1 if the action was a no-op because of a bound),
    ``cost_reward``, ``sla_reward``, ``churn_reward``.

    ## Arguments
    - ``load``: ``steady``, ``sine_curve``, ``sinusoidal``, ``spike``, ``poisson``, ``random``
      or ``trace`` (upper case accepted); see :mod:`rlbench.envs.load_patterns`.
    - ``base_load`` (2000), ``amplitude`` (1500): requests per step; ``period`` (steps,
      default ``horizon``) of the sine patterns and the time-of-day signal; ``harmonic`` (4) and
      ``harmonic_weight`` (0.5): the faster cycle of ``sinusoidal``; ``spike_height`` (2500),
      ``spike_every`` (72), ``spike_ramp`` (3); ``random_step`` (150): the random walk's step
      deviation; ``trace_path`` (a CSV of request counts, default the bundled synthetic
      ``data/sample_trace.csv``) and ``trace_scale`` (1.0); ``noise`` (0.0): multiplicative
      Gaussian noise on every pattern.
    - ``horizon`` (288), ``step_minutes`` (5), ``initial_instances`` (10), ``min_instances``
      (1), ``max_instances`` (50), ``provision_delay`` (2 steps), ``capacity`` (100 requests per
      instance per step), ``max_queue`` (default max_instances * capacity).
    - ``price_per_hour`` (0.192 $), ``sla_penalty`` (0.5 $ per 1000 waiting requests),
      ``drop_penalty`` (5.0 $ per 1000 dropped), ``churn_penalty`` (0.01 $),
      ``invalid_action_penalty`` (0.0 $), ``reward_scale`` (1.0).
    - ``forecast`` (``none``), ``forecast_steps`` (6), ``forecast_model`` (a folder written
      by ``rlbench-forecast train`` or ``models:/<name>@<alias>``; ``lstm`` only).
    - ``render_mode``: ``"ansi"`` (the last step as one line) or ``"rgb_array"`` (influx,
      capacity, instances and queue over the episode so far).

    Invalid arguments raise ``ValueError`` naming the argument.
    """

    core_cls = AutoscalingCore


def _child(rng: np.random.Generator) -> np.random.Generator:
    """A generator derived from ``rng`` without drawing from it (its seed sequence's next
    child; a generator without one gives a copy of its state, advanced independently)."""
    try:
        return rng.spawn(1)[0]
    except (TypeError, ValueError):
        copy = np.random.Generator(type(rng.bit_generator)())
        copy.bit_generator.state = rng.bit_generator.state
        return copy
