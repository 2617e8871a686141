"""A faithful port of adobe/gym-scaling's ``ScalingEnv``, quirks included.

Numbers published on gym-scaling (and on the seed project built on it) can only be set beside
ours if the environment is the same one, so this module reproduces its step order, cost
accounting and observation exactly instead of fixing them; :mod:`rlbench.envs.autoscaling` is
the sound environment for research. Sources checked: ``gym_scaling/envs/scaling_env.py`` and
``helpers.py`` of adobe/gym-scaling (commit 4bb7d15), and the seed's port of its load patterns
(``steady_load``, ``sinusoidal_load``, ``spike_load``, ``poisson_load``, ``random_load``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from rlbench.envs.base import Core, CoreEnv, StepResult

LOAD_PATTERNS: tuple[str, ...] = (
    "steady",
    "sine_curve",
    "sinusoidal",
    "spike",
    "poisson",
    "random",
)
_RANDOM_PATTERNS = ("poisson", "random")
_SINE_FREQUENCY = 0.01  # rad per step, both sine patterns
_SPIKE_PERIOD = 500  # steps between spike starts
_SPIKE_RAMP = 10  # steps up, then as many down
_SPIKE_BASE = 0.3  # base load, as a fraction of (max_influx - offset) above offset
_SPIKE_PEAK = 0.8  # spike top, same scale
_COST_PERIOD = 12  # steps per hour (5-minute steps); instances are billed at ages k·12
_OUT_OF_RANGE_PENALTY = -0.1
_DRAW_BLOCK = 256  # random influx values pre-drawn per copy at a time


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


class GymScalingCompatCore(Core):
    """``N`` copies of gym-scaling's ``ScalingEnv`` (see :class:`GymScalingCompatEnv`).

    Instances live in a per-copy ring buffer of ``max_instances`` slots (start step and price
    each): the published code appends new instances and removes ``instances.pop(0)``, so the
    oldest is always at the head and the newest at the tail.
    """

    render_keys: ClassVar[tuple[str, ...]] = ("influx", "capacity", "instances", "queue")
    info_aggregates: ClassVar[dict[str, str]] = {
        "cost": "sum",
        "scale_action": "sum",
        "penalty": "sum",
        "load_pct": "mean",
        "instances": "mean",
        "queue": "mean",
    }
    info_units: ClassVar[dict[str, str]] = {
        "cost": "billed cost ($ per episode, gym-scaling's billing)",
        "instances": "instances (mean)",
        "load_pct": "load (%, mean)",
        "queue": "queue (requests waiting, mean)",
        "scale_action": "scale actions (per episode)",
        "penalty": "out-of-range penalty (reward per episode, -0.1 each)",
    }
    return_meaning: ClassVar[str] = (
        "gym-scaling's unitless reward: minus idle capacity, a queue term and range penalties "
        "per step, so closer to 0 is better"
    )
    # n/max, load/100 and the raw queue (binned over 0..1000 requests).
    tabular_hint: ClassVar[dict[str, Any]] = {
        "obs_indices": [0, 1, 4],
        "bins": [25, 10, 5],
        "low": [0.0, 0.0, 0.0],
        "high": [1.0, 1.0, 1000.0],
        "q_init": -100.0,
    }

    def __init__(
        self,
        num_envs: int,
        load: str = "sine_curve",
        horizon: int | None = None,
        max_instances: int = 100,
        min_instances: int = 2,
        capacity_per_instance: int = 87,
        cost_per_instance_per_hour: float = 0.192,
        offset: int = 500,
        change_rate: int = 1,
    ) -> None:
        super().__init__(num_envs)
        if not isinstance(load, str) or load.lower() not in LOAD_PATTERNS:
            raise ValueError(f"load must be one of {', '.join(LOAD_PATTERNS)}; got {load!r}")
        if horizon is not None and (not _is_int(horizon) or horizon < 1):
            raise ValueError(f"horizon must be a positive integer or None, got {horizon!r}")
        if not _is_int(max_instances) or max_instances < 2:
            raise ValueError(f"max_instances must be an integer >= 2, got {max_instances!r}")
        if not _is_int(min_instances) or not 1 <= min_instances <= max_instances:
            raise ValueError(
                f"min_instances must be an integer in [1, max_instances={max_instances}], "
                f"got {min_instances!r}"
            )
        if not _is_int(capacity_per_instance) or capacity_per_instance <= 0:
            raise ValueError(
                f"capacity_per_instance must be a positive integer, got {capacity_per_instance!r}"
            )
        cost = cost_per_instance_per_hour
        if isinstance(cost, bool) or not isinstance(cost, int | float | np.number) or cost < 0:
            raise ValueError(
                f"cost_per_instance_per_hour must be a finite number >= 0, got {cost!r}"
            )
        if not np.isfinite(cost):
            raise ValueError(f"cost_per_instance_per_hour must be finite, got {cost!r}")
        if not _is_int(offset):
            raise ValueError(f"offset must be an integer, got {offset!r}")
        # As published: influx_range = max/2 · capacity − offset; max_influx = offset + range.
        max_influx = offset + ((max_instances / 2) * capacity_per_instance - offset)
        if not 0 <= offset <= max_influx:
            raise ValueError(
                f"offset must be an integer in [0, max_influx={max_influx:g}], got {offset!r}"
            )
        if not _is_int(change_rate) or change_rate < 1:
            raise ValueError(f"change_rate must be an integer >= 1, got {change_rate!r}")

        self.load = load.lower()
        self.horizon = None if horizon is None else int(horizon)
        self.max_instances = int(max_instances)
        self.min_instances = int(min_instances)
        self.capacity_per_instance = int(capacity_per_instance)
        self.cost_per_instance_per_hour = float(cost_per_instance_per_hour)
        self.offset = int(offset)
        self.change_rate = int(change_rate)
        self.max_influx = float(max_influx)
        self.initial_instances = int(self.max_instances / 2)

        influx_high = math.ceil(self.max_influx)  # every pattern stays within [0, this]
        # The queue can exceed 10·max_influx by at most one step's influx before termination.
        queue_high = 10.0 * self.max_influx + influx_high
        high = [1.0, 1.0, self.max_instances * self.capacity_per_instance, influx_high, queue_high]
        self.observation_space = spaces.Box(
            low=np.zeros(5, dtype=np.float32), high=np.array(high, dtype=np.float32)
        )
        self.action_space = spaces.Discrete(3)

        n, m = self.num_envs, self.max_instances
        self._t = np.zeros(n, dtype=np.int64)
        self._head = np.zeros(n, dtype=np.int64)  # ring-buffer slot of the oldest instance
        self._n = np.zeros(n, dtype=np.int64)
        self._start = np.zeros((n, m), dtype=np.int64)
        self._price = np.zeros((n, m), dtype=np.float64)
        self._influx = np.zeros(n, dtype=np.float64)
        self._queue = np.zeros(n, dtype=np.float64)
        self._load = np.zeros(n, dtype=np.float64)  # percent, an integer value
        self._capacity = np.zeros(n, dtype=np.float64)  # capacity_total before the action
        self._pending = np.zeros(n, dtype=np.int64)  # last step's action as −1/0/+1
        self._slots = np.arange(m, dtype=np.int64)[None, :]
        self._draws = np.zeros((n, _DRAW_BLOCK), dtype=np.float64)
        self._draw_pos = np.zeros(n, dtype=np.int64)
        self._rngs: list[np.random.Generator | None] = [None] * n

    # -- load patterns -------------------------------------------------------------------
    def _pattern(self, t: np.ndarray) -> np.ndarray:
        """Influx at steps ``t`` of a deterministic pattern, with the published float order."""
        mi, off = self.max_influx, float(self.offset)
        if self.load == "sine_curve":
            return np.ceil((np.sin(t * _SINE_FREQUENCY) + 1) * mi / 2)
        if self.load == "sinusoidal":
            return np.ceil((np.sin(t * _SINE_FREQUENCY) + 1) * (mi - off) / 2) + off
        if self.load == "steady":
            return np.full(t.shape, float(math.trunc(off + (mi - off) * 0.5)))
        # spike: linear ramp base → peak over _SPIKE_RAMP steps, then back; int() truncates.
        base = off + (mi - off) * _SPIKE_BASE
        peak = off + (mi - off) * _SPIKE_PEAK
        k = t % _SPIKE_PERIOD
        up = base + (peak - base) * (k / float(_SPIKE_RAMP))
        down = peak - (peak - base) * ((k - _SPIKE_RAMP) / float(_SPIKE_RAMP))
        value = np.where(k < _SPIKE_RAMP, up, np.where(k < 2 * _SPIKE_RAMP, down, base))
        return np.trunc(value)

    def _draw_block(self, i: int) -> None:
        """Refill copy ``i``'s block of random influx values from its own generator."""
        rng = self._rngs[i]
        if rng is None:
            raise RuntimeError("reset_copies must be called before step")
        if self.load == "random":
            block = rng.integers(self.offset, int(self.max_influx), size=_DRAW_BLOCK, endpoint=True)
        else:  # poisson around the mid-point, clipped to [offset, max_influx], then int()
            lam = self.offset + (self.max_influx - self.offset) * 0.5
            block = np.trunc(
                np.clip(rng.poisson(lam, size=_DRAW_BLOCK), self.offset, self.max_influx)
            )
        self._draws[i] = block
        self._draw_pos[i] = 0

    def _next_influx(self, rows: np.ndarray) -> np.ndarray:
        """Influx of copies ``rows`` (indices) at their current step."""
        if self.load not in _RANDOM_PATTERNS:
            return self._pattern(self._t[rows].astype(np.float64))
        for i in rows[self._draw_pos[rows] >= _DRAW_BLOCK]:  # once per _DRAW_BLOCK draws
            self._draw_block(int(i))
        values = self._draws[rows, self._draw_pos[rows]]
        self._draw_pos[rows] += 1
        return values

    # -- the Core interface --------------------------------------------------------------
    def reset_copies(self, mask: np.ndarray, rngs: Sequence[np.random.Generator]) -> None:
        rows = np.flatnonzero(np.asarray(mask, dtype=bool))
        for i in rows:
            self._rngs[i] = rngs[i]
            if self.load in _RANDOM_PATTERNS:
                self._draw_block(int(i))
        k = self.initial_instances
        self._t[rows] = 0
        self._head[rows] = 0
        self._n[rows] = k
        self._start[rows] = 0
        self._price[rows] = 0.0
        self._price[rows, :k] = float(self.capacity_per_instance)  # quirk: capacity as price
        self._queue[rows] = 0.0
        self._load[rows] = 0.0
        self._capacity[rows] = float(k * self.capacity_per_instance)
        self._pending[rows] = 0
        self._influx[rows] = self._next_influx(rows)

    def observe(self) -> np.ndarray:
        obs = np.stack(
            [
                self._n / self.max_instances,
                self._load / 100,
                self._capacity,
                self._influx,
                self._queue,
            ],
            axis=1,
        )
        return obs.astype(np.float32)

    def step(self, actions: np.ndarray) -> StepResult:
        actions = np.asarray(actions).reshape(self.num_envs)
        if np.any((actions < 0) | (actions > 2)):
            raise ValueError(f"action must be 0 (remove), 1 (hold) or 2 (add), got {actions}")
        self._t += 1
        t = self._t
        changes = np.flatnonzero(t % self.change_rate == 0)
        if changes.size:
            self._influx[changes] = self._next_influx(changes)

        total = self._influx + self._queue
        capacity = (self._n * self.capacity_per_instance).astype(np.float64)
        processed = np.minimum(total, capacity)
        self._load = np.ceil(processed / capacity * 100)
        self._queue = total - processed
        self._capacity = capacity

        # Billing before the action: every instance whose age is a multiple of 12 is charged
        # price/12·age, i.e. everything since its start again (cumulative, as published).
        live = (self._slots - self._head[:, None]) % self.max_instances < self._n[:, None]
        age = t[:, None] - self._start
        billed = live & (age % _COST_PERIOD == 0)
        cost = np.where(billed, self._price / 12.0 * age, 0.0).sum(axis=1)

        # One-step lag: apply the previous step's action, keep this one for the next step.
        delta = self._pending
        self._pending = actions.astype(np.int64) - 1
        target = self._n + delta
        in_range = (target >= self.min_instances) & (target <= self.max_instances)
        penalty = np.where(in_range, 0.0, _OUT_OF_RANGE_PENALTY)
        add = np.flatnonzero(in_range & (delta > 0))
        slot = (self._head[add] + self._n[add]) % self.max_instances
        self._start[add, slot] = t[add]
        self._price[add, slot] = self.cost_per_instance_per_hour
        remove = in_range & (delta < 0)
        self._head[remove] = (self._head[remove] + 1) % self.max_instances  # the oldest goes
        scaled = in_range & (delta != 0)
        self._n = np.where(in_range, target, self._n)

        reward = -1 * (1 - self._load / 100) * (self._n / self.max_instances)
        reward = reward + penalty
        reward = reward - self._queue / (1 + self._queue)
        terminated = self._queue > self.max_influx * 10
        if self.horizon is None:
            truncated = np.zeros(self.num_envs, dtype=bool)
        else:
            truncated = t >= self.horizon
        info = {
            "influx": self._influx.copy(),
            "capacity": capacity.copy(),
            "instances": self._n.copy(),
            "queue": self._queue.copy(),
            "load_pct": self._load.copy(),
            "cost": cost,
            "penalty": penalty,
            "scale_action": scaled.astype(np.int64),
        }
        return StepResult(reward=reward, terminated=terminated, truncated=truncated, info=info)

    @staticmethod
    def signals(obs: np.ndarray) -> dict[str, np.ndarray]:
        """The threshold rule's inputs from observations of shape ``(5,)`` or ``(B, 5)``.

        ``load_pct`` is rounded back to the env's whole percent: the float32 ``load/100``
        times 100 is not exact, and the rule's ``load > 80`` must not fire at exactly 80.
        """
        obs = np.asarray(obs, dtype=np.float64)
        return {"load_pct": np.rint(obs[..., 1] * 100), "queue": obs[..., 4]}


class GymScalingCompatEnv(CoreEnv):
    """adobe/gym-scaling's ``ScalingEnv``, step for step, with its quirks kept on purpose.

    A service takes requests from a queue; ``n`` instances process ``capacity_per_instance``
    requests each per 5-minute step. Steps run in the published order: ``t += 1``; every
    ``change_rate`` steps ``influx = pattern(t)``; ``total = influx + queue``;
    ``capacity_total = n·capacity_per_instance``; ``processed = min(total, capacity_total)``;
    ``load = ceil(processed / capacity_total · 100)``; ``queue = total − processed``; billing;
    then the previous step's action is applied.

    **Actions** ``Discrete(3)``: 0 remove one instance, 1 hold, 2 add one.

    **Observation** ``Box(5,)`` float32: ``[n/max_instances, load/100, capacity_total, influx,
    queue]``, ``n`` after this step's scaling, ``capacity_total`` from before it. Bounds are
    ``[0, 1]``, ``[0, 1]``, ``[0, max·capacity]``, ``[0, ceil(max_influx)]`` and
    ``[0, 11·max_influx]`` (the queue can pass ``10·max_influx`` by one step's influx before
    the episode terminates).

    **Reward** ``−(1 − load/100)·(n/max_instances) + penalty − queue/(1 + queue)``, ``n``
    after scaling; ``penalty`` is −0.1 when the applied action would leave
    ``[min_instances, max_instances]``.

    **Termination** when ``queue > 10·max_influx``. **Truncation**: none of its own
    (``horizon=None``, faithful); ``horizon=H`` truncates after ``H`` steps (200 for evaluation).

    **Load patterns** (``load=``, lower case, upper accepted; ``max_influx = offset + (max/2 ·
    capacity − offset)`` = 4350, ``offset`` = 500 by default): ``sine_curve``
    ``ceil((sin(0.01t) + 1)·max_influx/2)``; ``sinusoidal``
    ``ceil((sin(0.01t) + 1)·(max_influx − offset)/2) + offset``; ``steady``
    ``int(offset + (max_influx − offset)/2)`` = 2425; ``spike`` base 1655, and whenever
    ``t mod 500 < 20`` a linear ramp up to 3580 over 10 steps and back over the next 10
    (``int()`` truncated); ``poisson`` ``int(clip(Poisson(2425), offset, max_influx))``;
    ``random`` uniform integers in ``[offset, max_influx]``.

    **info** (per step): ``influx``; ``capacity`` (capacity_total, before scaling);
    ``instances`` (after scaling); ``queue``; ``load_pct`` (the env's ``load``, percent);
    ``cost``: THIS step's billing increment in $ (the published env only keeps a running
    ``total_cost``, which is the episode sum of ``cost``); ``penalty`` (0 or −0.1);
    ``scale_action`` (1 if an instance was actually added or removed this step).

    Quirks kept on purpose (published behaviour, not bugs of this port):

    1. The initial ``max_instances/2`` = 50 instances are priced at ``capacity_per_instance``
       (87 $/h): the code passes the capacity as ``cost_per_hour``. Only instances added later
       cost ``cost_per_instance_per_hour`` (0.192 $/h).
    2. Cumulative billing: an instance of age ``k = t − start`` is charged
       ``price/12·k`` whenever ``k mod 12 = 0``, i.e. everything since its start again each
       hour, so an instance's total cost grows quadratically with its lifetime.
    3. Billing happens before scaling: an instance added at step ``t`` is first billed at
       ``t + 12``, and one removed at step ``t`` is still billed at ``t`` if its age is a
       multiple of 12.
    4. One-step action lag: the action given at step ``t`` is applied at step ``t + 1``; the
       first step applies "hold". Observation, load and capacity at step ``t`` thus reflect the
       action of step ``t − 1``.
    5. Removal takes the OLDEST instance (``instances.pop(0)``): the cheap-looking new ones stay
       and the 87 $/h initial ones go first.
    6. The range check is on the lagged action, so an out-of-range request is penalised (−0.1)
       one step after it was made; it also fires on "hold" if ``n`` itself is out of range
       (possible only when ``min_instances > max_instances/2``).
    7. The observation mixes normalised values (``n/max``, ``load/100``) with raw counts
       (``capacity_total``, ``influx``, ``queue`` in the thousands).
    8. ``capacity_total`` in the observation is from before this step's scaling, ``n`` after.
    9. ``load`` is rounded UP to a whole percent; it starts at 0 after reset.
    10. Influx only changes when ``t mod change_rate = 0``. The published class default is
        ``change_rate=10000`` (influx fixed at ``pattern(0)`` for 9999 steps); the published
        sine-curve play-back sets ``change_rate = 1``, which is this constructor's default (and
        design.md's "influx = pattern(t)"). Pass ``change_rate=10000`` (and ``load="random"``,
        the published default pattern) for the published class defaults.

    Where this port differs from the published code, for reasons outside the dynamics: the
    published repository defines only ``SINE_CURVE`` and ``RANDOM`` (``steady``,
    ``sinusoidal``, ``spike`` and ``poisson`` follow the seed's port of the patterns); random
    influx comes from the copy's own seeded generator (pre-drawn in blocks of 256), not from
    Python's global ``random``/``numpy.random``; the published observation space
    ``Box(0, float max, (1, 5))`` does not match the ``(5,)`` observations it returns, so it is
    ``(5,)`` here with finite bounds; observations are float32; rendering is ``ansi`` /
    ``rgb_array`` instead of pyglet.
    """

    core_cls: ClassVar[type[Core]] = GymScalingCompatCore

    def signals(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """See :meth:`GymScalingCompatCore.signals`."""
        return GymScalingCompatCore.signals(obs)
