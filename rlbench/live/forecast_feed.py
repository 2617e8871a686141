"""The load forecaster as a producer thread feeding the live agent through a bounded queue.

Why a thread and a queue, not a call in the loop: in a live system the forecaster (an LSTM, a
remote model) is a separate component with its own latency, and a decision must never wait
for it longer than it can afford. So, as in the ML-Scope seed, the forecaster *produces*
forecasts into a :class:`~rlbench.serve.queue.BoundedQueue` (drop-oldest, counted) and the
agent's observation builder *consumes* the freshest one when it decides; every hand-over is
timed and every forecast that was not used, came late or failed is counted, so a slow or
broken forecaster shows up in the session's metrics instead of silently in its rewards.

The flow, per decision (:class:`ForecastFeed`):

1. the loop's thread calls :meth:`~ForecastFeed.observe` with the load (arrivals) the step just
   brought; once ``window`` loads are known, the last ``window`` go to the producer through an
   inbox of capacity 1 (drop-oldest: a producer that falls behind forecasts the newest history
   and skips the ones in between, counted as ``skipped``);
2. the producer thread runs the stateless forecaster
   (:mod:`rlbench.envs.forecasters`: ``predict(history (1, window), t (1,), period)``) and puts
   a :class:`Forecast` (the feed index it is for, its values, when it was made) into the bounded
   outbox (``queue`` forecasts at most; when full the oldest is dropped, counted as ``dropped``);
   a forecaster that raises or returns non-finite values puts a failure in its place, so the
   consumer stops waiting at once; the first error is logged with its traceback, later ones
   are counted (``errors``) and the session goes on;
3. the consumer (:meth:`~ForecastFeed.apply`, in the loop's thread) takes everything waiting,
   keeps the freshest, waits at most ``wait_s`` for the forecast of the current step while one
   is being made, and writes it into the observation's forecast entries
   (``offset .. offset + steps - 1``: load / ``scale`` clipped to [0, 1], the layout of
   ``Autoscaling-v0`` with ``env.forecast``).

When the forecast of the current step is not there in time, the fallback is, in order: the
**previous forecast shifted** to the current step (its values from the current step on, the
last one repeated; staleness = current step - the step it was made for), while it still
covers the step (staleness < ``steps``); else the **last value** (the last observed load
repeated, :class:`~rlbench.envs.forecasters.LastValue`); with no load observed yet the
adapter's own entries are left as they are. Each fallback decision is counted.

The feed sees one continuous load stream: an episode boundary of a simulated system is not a
break in it (a real system has none); ``t`` (the time of day the forecaster may read) is the
environment's step. Indices (``made_for``, staleness) count observed loads, so they increase
over episodes.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlbench.errors import UserError
from rlbench.serve.queue import BoundedQueue, Entry
from rlbench.tracking import schema

log = logging.getLogger(__name__)

# the session's series (on its MLflow parent run, every report_every decisions)
DELAY_MS = schema.live_metric("forecast_delay_ms")  # mean enqueue -> dequeue since the last report
DELAY_P99_MS = schema.live_metric("forecast_delay_p99_ms")
STALE = schema.live_metric("forecast_stale")  # mean staleness (steps) of the forecasts used
DROPPED = schema.live_metric("forecast_dropped")  # forecasts pushed out of the full queue (total)
SKIPPED = schema.live_metric("forecast_skipped")  # histories never forecast: a newer came first
FALLBACKS = schema.live_metric("forecast_fallbacks")  # decisions without a forecast (total)
ERRORS = schema.live_metric("forecast_errors")  # forecaster failures (total)
METRICS = (DELAY_MS, DELAY_P99_MS, STALE, DROPPED, SKIPPED, FALLBACKS, ERRORS)

FEED_MODES = ("auto", "true", "false")
LIVE_FORECASTS = ("naive", "last_value", "lstm")  # env.forecast values a live feed can produce


@dataclass(frozen=True)
class Request:
    """A history to forecast: the loads of feed indices ``made_for - window .. made_for - 1``."""

    made_for: int
    t: int  # the environment step of index ``made_for`` (the forecaster's time of day)
    history: np.ndarray  # (window,)


@dataclass(frozen=True)
class Forecast:
    """The producer's answer to a :class:`Request`; ``values`` None when the forecaster failed."""

    made_for: int
    values: np.ndarray | None  # (steps,) requests per step for indices made_for ...
    seconds: float  # how long the forecaster took


@dataclass
class FeedStats:
    """The feed's counters (totals since it started) and its recent delays."""

    requested: int  # histories handed to the producer
    skipped: int  # of those, replaced in the inbox by a newer one before the producer took them
    produced: int  # forecasts put into the queue
    errors: int  # forecaster failures (answered with a failure, not a forecast)
    dropped: int  # forecasts pushed out of the full queue, never seen by the consumer
    taken: int  # forecasts (and failures) the consumer took out of the queue
    depth: int  # waiting in the queue now
    observations: int  # observations the consumer built (a forecast written, or a fallback)
    fresh: int  # ... with the forecast made for their step
    stale: int  # ... with an earlier forecast shifted (staleness 1 .. steps - 1)
    fallbacks: int  # ... with no forecast covering their step (last value, or nothing yet)
    delay_p50_ms: float  # enqueue -> dequeue, over the queue's recent items
    delay_p99_ms: float
    delay_max_ms: float
    forecast_ms: float  # mean time the forecaster took per forecast
    first_error: str | None


class ForecastFeed:
    """A forecaster in a producer thread, its forecasts in a bounded queue, consumed by the loop.

    ``forecaster``: a :class:`~rlbench.envs.forecasters.Forecaster`; ``steps``: how many of its
    steps the observation holds (default all); ``period``: steps per cycle (its ``t / period``);
    ``scale``: load that maps to 1.0 in the observation (``max_instances * capacity``);
    ``offset``: the first forecast entry of the observation (None: the last ``steps`` entries);
    ``capacity``: forecasts the queue holds; ``wait_s``: how long a decision waits for the
    forecast of its step while it is being made (0: never waits).

    Use it as a context manager, or :meth:`start` and :meth:`close`. :meth:`observe`,
    :meth:`apply` and :meth:`metrics` belong to one thread (the loop's); the producer is the
    feed's own.
    """

    def __init__(
        self,
        forecaster: Any,
        *,
        period: float,
        scale: float,
        steps: int | None = None,
        offset: int | None = None,
        capacity: int = 4,
        wait_s: float = 0.05,
    ) -> None:
        self.forecaster = forecaster
        self.window = int(forecaster.window)
        self.steps = int(forecaster.steps if steps is None else steps)
        if not 1 <= self.steps <= int(forecaster.steps):
            raise ValueError(
                f"steps must be 1 .. {forecaster.steps} (the forecaster's), got {steps}"
            )
        self.period, self.scale = float(period), float(scale)
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.offset = offset
        self.wait_s = max(float(wait_s), 0.0)
        self.queue: BoundedQueue[Forecast] = BoundedQueue(int(capacity))
        self._inbox: BoundedQueue[Request] = BoundedQueue(1)
        self._history: collections.deque[float] = collections.deque(maxlen=self.window)
        self.index = 0  # loads observed so far: the index of the next step
        self._requested = 0  # made_for of the last request (0: none yet)
        self._answered = 0  # made_for of the last answer taken (a forecast or a failure)
        self._latest: Forecast | None = None  # the freshest forecast taken
        self._last_load: float | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        # producer-side counters (written by the producer only)
        self._produced = self._errors = 0
        self.last_enqueued = 0  # made_for of the newest forecast put into the queue
        self._forecast_s = 0.0
        self.first_error: str | None = None
        # consumer-side counters
        self._taken = self._fresh = self._stale = self._fallbacks = 0
        self._window_delays: list[float] = []
        self._window_stale: list[int] = []
        self.last_source = "none"  # fresh | stale | last_value | none: the last decision's

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> ForecastFeed:
        """Start the producer thread (once)."""
        if self._closed:
            raise RuntimeError("the forecast feed is closed")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._produce, name="rlbench-forecast-feed", daemon=True
            )
            self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the producer and close the queues; True when the thread ended within
        ``timeout`` s (a forecaster stuck in a call cannot be interrupted: the daemon thread
        is then left to end with it, and this is logged). Idempotent."""
        if self._closed:
            return self._thread is None or not self._thread.is_alive()
        self._closed = True
        self._stop.set()
        self._inbox.close()
        stopped = True
        if self._thread is not None:
            self._thread.join(timeout)
            stopped = not self._thread.is_alive()
            if not stopped:
                log.warning("the forecaster did not return within %.1f s of close", timeout)
        self.queue.close()
        return stopped

    def __enter__(self) -> ForecastFeed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ the producer
    def _produce(self) -> None:
        while not self._stop.is_set():
            entry = self._inbox.get(timeout=None)
            if entry is None:  # the inbox was closed
                return
            req = entry.item
            t0 = time.perf_counter()
            try:
                out = self.forecaster.predict(
                    req.history[None, :], np.array([req.t], dtype=np.int64), self.period
                )
                values = np.asarray(out, dtype=np.float64)
                if values.ndim != 2 or values.shape[0] != 1 or values.shape[1] < self.steps:
                    raise ValueError(
                        f"predict returned shape {values.shape}, expected (1, >= {self.steps})"
                    )
                values = values[0, : self.steps].copy()
                if not np.all(np.isfinite(values)):
                    raise ValueError(f"predict returned non-finite values: {values}")
            except Exception as err:  # reported, answered with a failure, and the feed goes on
                values = None
                self._errors += 1
                if self.first_error is None:
                    self.first_error = f"{type(err).__name__}: {err}"
                    log.error(
                        "forecaster %s failed (decisions fall back until it works; later "
                        "failures are only counted): %s",
                        getattr(self.forecaster, "name", type(self.forecaster).__name__),
                        self.first_error,
                        exc_info=True,
                    )
            seconds = time.perf_counter() - t0
            self._forecast_s += seconds
            try:
                self.queue.put(Forecast(req.made_for, values, seconds))
            except RuntimeError:  # closed while the forecaster ran
                return
            if values is not None:
                self._produced += 1
                self.last_enqueued = req.made_for

    # ------------------------------------------------------------------ the loop's side
    def observe(self, load: float, t: int) -> None:
        """The load (arrivals) of the step just taken; ``t``: the environment's next step."""
        load = float(load)
        if not math.isfinite(load):
            raise ValueError(f"the observed load must be a finite number, got {load}")
        self._history.append(load)
        self._last_load = load
        self.index += 1
        if len(self._history) == self.window and not self._closed:
            history = np.fromiter(self._history, dtype=np.float64, count=self.window)
            self._inbox.put(Request(self.index, int(t), history))
            self._requested = self.index

    def current(self) -> tuple[np.ndarray | None, str]:
        """The forecast of the current step (``steps`` loads, requests per step) and where it
        came from: ``fresh`` | ``stale`` (an earlier one shifted) | ``last_value`` | ``none``."""
        deadline = time.monotonic() + self.wait_s
        self._take(self.queue.get_batch(self.queue.capacity, timeout=0))
        while self._answered < self._requested == self.index and self.running:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._take(self.queue.get_batch(self.queue.capacity, timeout=left))
        latest = self._latest
        shift = self.index - latest.made_for if latest is not None else self.steps
        if shift < self.steps:
            values = latest.values[shift:]
            if shift:
                values = np.concatenate([values, np.repeat(values[-1:], shift)])
            source = "fresh" if shift == 0 else "stale"
            self._window_stale.append(shift)
            if shift:
                self._stale += 1
            else:
                self._fresh += 1
        elif self._last_load is not None:
            values, source = np.full(self.steps, self._last_load), "last_value"
            self._fallbacks += 1
        else:
            values, source = None, "none"
            self._fallbacks += 1
        self.last_source = source
        return values, source

    def apply(self, obs: np.ndarray) -> np.ndarray:
        """``obs`` with its forecast entries set from :meth:`current` (a copy)."""
        obs = np.array(obs, dtype=np.float32, copy=True)
        offset = obs.shape[-1] - self.steps if self.offset is None else self.offset
        if offset < 0 or offset + self.steps > obs.shape[-1]:
            raise ValueError(
                f"the observation has {obs.shape[-1]} entries: no room for {self.steps} "
                f"forecast entries at {offset}"
            )
        values, _ = self.current()
        if values is not None:
            obs[..., offset : offset + self.steps] = np.clip(values / self.scale, 0.0, 1.0)
        return obs

    def _take(self, entries: list[Entry[Forecast]]) -> None:
        for entry in entries:
            item = entry.item
            self._taken += 1
            self._window_delays.append(entry.delay)
            self._answered = max(self._answered, item.made_for)
            if item.values is not None and (
                self._latest is None or item.made_for > self._latest.made_for
            ):
                self._latest = item

    # ------------------------------------------------------------------ records
    def stats(self) -> FeedStats:
        q = self.queue.stats()
        done = self._produced + self._errors
        return FeedStats(
            requested=self._inbox.enqueued, skipped=self._inbox.dropped,
            produced=self._produced, errors=self._errors, dropped=q.dropped, taken=self._taken,
            depth=q.depth, observations=self._fresh + self._stale + self._fallbacks,
            fresh=self._fresh, stale=self._stale, fallbacks=self._fallbacks,
            delay_p50_ms=q.delay_p50 * 1e3, delay_p99_ms=q.delay_p99 * 1e3,
            delay_max_ms=q.delay_max * 1e3,
            forecast_ms=self._forecast_s / done * 1e3 if done else math.nan,
            first_error=self.first_error,
        )  # fmt: skip

    def metrics(self) -> dict[str, float]:
        """The ``live/forecast_*`` series: delays and staleness since the last call, totals."""
        delays = np.asarray(self._window_delays, dtype=np.float64) * 1e3
        stale = np.asarray(self._window_stale, dtype=np.float64)
        self._window_delays, self._window_stale = [], []
        s = self.stats()
        return {
            DELAY_MS: float(delays.mean()) if delays.size else math.nan,
            DELAY_P99_MS: float(np.percentile(delays, 99)) if delays.size else math.nan,
            STALE: float(stale.mean()) if stale.size else math.nan,
            DROPPED: float(s.dropped),
            SKIPPED: float(s.skipped),
            FALLBACKS: float(s.fallbacks),
            ERRORS: float(s.errors),
        }

    def snapshot(self) -> dict[str, Any]:
        """What the dashboard shows."""
        s = self.stats()
        return {
            "forecaster": getattr(self.forecaster, "name", type(self.forecaster).__name__),
            "source": self.last_source, "delay_p50_ms": s.delay_p50_ms,
            "delay_p99_ms": s.delay_p99_ms, "fresh": s.fresh, "stale": s.stale,
            "fallbacks": s.fallbacks, "dropped": s.dropped, "skipped": s.skipped,
            "errors": s.errors, "first_error": s.first_error,
        }  # fmt: skip


def build_feed(
    fc: Mapping[str, Any] | None,
    env_kwargs: Mapping[str, Any],
    obs_shape: tuple[int, ...],
    tracking_uri: str | None = None,
) -> ForecastFeed | None:
    """The feed ``rlbench-live``'s ``forecast`` settings ask for on an environment with
    ``env_kwargs`` (None when there is none to run); ``UserError`` naming the setting.
    ``tracking_uri``: the session's store, where a ``models:/`` forecaster is looked up (None:
    ``MLFLOW_TRACKING_URI``, else the default)."""
    from rlbench.envs.forecasters import make_forecaster

    fc = dict(fc or {})
    mode = str(fc.get("feed", "auto")).lower()
    if mode not in FEED_MODES:
        raise UserError(f"forecast.feed={fc.get('feed')!r}: choose auto, true or false")
    forecast = str(env_kwargs.get("forecast") or "none").lower()
    if mode == "false":
        return None
    if forecast == "oracle":
        raise UserError(
            "env_args.forecast=oracle reads the true future load, which a live system does not "
            f"have: use {' | '.join(LIVE_FORECASTS)} (or forecast.feed=false: the simulator "
            "computes it itself, a simulation only)"
        )
    if forecast not in LIVE_FORECASTS:
        if mode == "true":
            raise UserError(
                "forecast.feed=true needs an environment with a forecast in its observation: "
                f"+env_args.forecast={'|'.join(LIVE_FORECASTS)}"
            )
        return None
    steps = int(env_kwargs.get("forecast_steps") or 6)
    horizon = env_kwargs.get("horizon") or 288
    period = float(env_kwargs.get("period") or horizon)
    scale = float(env_kwargs.get("max_instances") or 50) * float(env_kwargs.get("capacity") or 100)
    try:
        model = env_kwargs.get("forecast_model")
        forecaster = make_forecaster(forecast, steps, period, model, tracking_uri)
    except ValueError as err:
        raise UserError(f"env_args: {err}") from None
    if not obs_shape or obs_shape[-1] < steps + 1:
        raise UserError(
            f"forecast.feed: the adapter's observations have shape {tuple(obs_shape)}: no room "
            f"for the {steps} forecast entries of env_args.forecast={forecast}"
        )
    queue = fc.get("queue", 4)
    if isinstance(queue, bool) or not isinstance(queue, int) or queue < 1:
        raise UserError(f"forecast.queue must be an integer >= 1, got {queue!r}")
    wait_ms = fc.get("wait_ms", 50)
    if isinstance(wait_ms, bool) or not isinstance(wait_ms, int | float) or wait_ms < 0:
        raise UserError(f"forecast.wait_ms must be a number >= 0, got {wait_ms!r}")
    return ForecastFeed(
        forecaster, period=period, scale=scale, steps=steps, capacity=queue,
        wait_s=float(wait_ms) / 1e3,
    )  # fmt: skip
