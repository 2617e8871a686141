"""The forecaster as a producer thread into the bounded queue, the live agent as its consumer
(:mod:`rlbench.live.forecast_feed`): the same forecasts as a direct call, delays and drops
counted exactly under a flood, failures reported once and survived, threads that stop."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import rlbench  # noqa: F401  (registers the environments)
from rlbench.config import CONF_LIVE_DIR
from rlbench.envs.forecasters import LastValue, SeasonalNaive
from rlbench.errors import UserError
from rlbench.live import forecast_feed as ff
from rlbench.live.adapters import SimAdapter
from rlbench.live.forecast_feed import ForecastFeed, build_feed
from rlbench.live.loop import LiveSession
from rlbench.offline.log import read_log

PERIOD = 8


def loads(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 1000 + 500 * np.sin(2 * np.pi * np.arange(n) / PERIOD) + rng.normal(0, 20, n)


class Flaky:
    """A seasonal-naive forecaster that raises on the calls ``fail(k)`` says (k counts calls)."""

    name = "flaky"

    def __init__(self, fail, steps: int = 3, delay_s: float = 0.0) -> None:
        self.inner = SeasonalNaive(steps, PERIOD)
        self.window, self.steps = self.inner.window, steps
        self.fail, self.delay_s, self.calls = fail, delay_s, 0

    def predict(self, history: np.ndarray, t: np.ndarray, period: float) -> np.ndarray:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail(self.calls):
            raise RuntimeError(f"model server down (call {self.calls})")
        return self.inner.predict(history, t, period)


def test_a_round_trip_gives_what_the_forecaster_gives_and_times_it():
    forecaster = SeasonalNaive(3, PERIOD)
    series = loads(60)
    with ForecastFeed(forecaster, period=PERIOD, scale=5000.0, capacity=4, wait_s=2.0) as feed:
        for i, load in enumerate(series):
            feed.observe(load, t=i + 1)
            values, source = feed.current()
            if i + 1 < PERIOD:  # the window is not full yet: the last load, counted
                assert source == "last_value" and np.all(values == load)
                continue
            direct = forecaster.predict(series[None, i + 1 - PERIOD : i + 1], np.array([i + 1]), 8)
            assert source == "fresh"
            np.testing.assert_array_equal(values, direct[0])
        stats = feed.stats()
        metrics = feed.metrics()
    assert not feed.running
    assert stats.produced == stats.taken == 60 - PERIOD + 1 and stats.dropped == 0
    assert stats.fresh == 60 - PERIOD + 1 and stats.fallbacks == PERIOD - 1 and stats.errors == 0
    assert 0 < stats.delay_p50_ms <= stats.delay_max_ms < 2000
    assert set(metrics) == set(ff.METRICS) and metrics[ff.STALE] == 0.0
    assert 0 < metrics[ff.DELAY_MS] < 2000 and metrics[ff.FALLBACKS] == PERIOD - 1


def test_the_observation_gets_the_forecast_scaled_and_clipped():
    with ForecastFeed(LastValue(3), period=PERIOD, scale=1000.0, wait_s=2.0) as feed:
        obs = np.full(10, 0.25, dtype=np.float32)
        assert np.all(feed.apply(obs) == obs)  # nothing observed yet: the adapter's own entries
        feed.observe(500.0, t=1)
        np.testing.assert_allclose(feed.apply(obs)[7:], 0.5)
        feed.observe(4000.0, t=2)
        out = feed.apply(obs)
        np.testing.assert_allclose(out[7:], 1.0)  # clipped to [0, 1]
        np.testing.assert_allclose(out[:7], 0.25)
        with pytest.raises(ValueError, match="no room"):
            feed.apply(np.zeros(2, dtype=np.float32))


def test_a_flood_drops_the_oldest_and_counts_them_exactly(capsys):
    """A producer that keeps up with every load and a consumer that reads only every 100th
    decision: of each 100 forecasts the queue of 2 keeps the newest 2, the other 98 are
    dropped, counted, and the consumer always gets the freshest."""
    n, every, cap = 3000, 100, 2
    feed = ForecastFeed(LastValue(4), period=PERIOD, scale=1.0, capacity=cap, wait_s=0.0).start()
    series = loads(n, seed=1)
    for i, load in enumerate(series):
        feed.observe(load, t=i + 1)
        deadline = time.monotonic() + 5.0
        while feed.last_enqueued < feed.index and time.monotonic() < deadline:
            time.sleep(1e-5)  # the producer answers every load (no history skipped)
        if (i + 1) % every == 0:
            values, source = feed.current()
            assert source == "fresh" and np.all(values == load)  # the forecast of this step
    assert feed.close() and not feed.running
    s, q = feed.stats(), feed.queue.stats()
    assert s.skipped == 0 and s.produced == n == q.enqueued and s.errors == 0
    assert s.taken == q.dequeued == cap * (n // every) and q.depth == 0
    assert s.dropped == q.dropped == n - cap * (n // every) == q.enqueued - q.dequeued - q.depth
    assert s.fresh == n // every and s.fallbacks == 0
    with capsys.disabled():
        print(f"\nflood (producer keeps up, consumer every {every}th, queue {cap}): {n} "
              f"forecasts, {s.dropped} dropped, {s.taken} taken; queue delay p50 "
              f"{s.delay_p50_ms:.2f} ms, p99 {s.delay_p99_ms:.2f} ms, max "
              f"{s.delay_max_ms:.2f} ms")  # fmt: skip


def test_a_free_running_flood_never_blocks_and_accounts_for_every_load(capsys):
    """The loop observes 20,000 loads as fast as it can and reads only every 500th: loads the
    producer could not reach are skipped, forecasts the consumer did not read are dropped;
    nothing blocks, nothing raises, every load is accounted for, and each read is at least as
    fresh as anything enqueued before it."""
    n = 20_000
    feed = ForecastFeed(LastValue(4), period=PERIOD, scale=1.0, capacity=2, wait_s=0.0).start()
    series = loads(n, seed=1)
    used = []
    t0 = time.perf_counter()
    for i, load in enumerate(series):
        feed.observe(load, t=i + 1)
        if (i + 1) % 500 == 0:
            enqueued_before = feed.last_enqueued
            values, source = feed.current()
            if feed._latest is not None:
                assert feed._latest.made_for >= enqueued_before  # nothing fresher was waiting
                used.append(feed._latest.made_for)
                if source in ("fresh", "stale"):
                    assert np.all(values == series[used[-1] - 1])
    elapsed = time.perf_counter() - t0
    feed.wait_s = 2.0  # the last read waits for the forecast of the last load
    values, source = feed.current()
    assert source == "fresh" and np.all(values == series[-1])
    assert feed.close() and not feed.running
    s, q = feed.stats(), feed.queue.stats()
    assert used == sorted(used) and s.skipped + s.dropped > 0
    assert q.enqueued - q.dequeued - q.depth == q.dropped == s.dropped
    assert q.enqueued == s.produced + s.errors and s.taken == q.dequeued and s.errors == 0
    assert s.requested == n and s.skipped + s.produced + len(feed._inbox) == n
    with capsys.disabled():
        print(
            f"\nfree-running flood: {n} loads in {elapsed:.2f} s; produced {s.produced}, "
            f"skipped {s.skipped}, dropped {s.dropped}, taken {s.taken}; queue delay p50 "
            f"{s.delay_p50_ms:.3f} ms, p99 {s.delay_p99_ms:.3f} ms, max {s.delay_max_ms:.3f} ms; "
            f"forecast {s.forecast_ms:.4f} ms"
        )


def test_a_slow_forecaster_never_holds_a_decision_up():
    """wait_s=0 and a forecaster slower than the loop: decisions use the previous forecast
    shifted to their step (stale) or the last load, the histories in between are skipped."""
    slow = Flaky(lambda k: False, steps=3, delay_s=0.01)
    series = loads(200)
    sources = []
    with ForecastFeed(slow, period=PERIOD, scale=1.0, capacity=2, wait_s=0.0) as feed:
        t0 = time.perf_counter()
        for i, load in enumerate(series):
            feed.observe(load, t=i + 1)
            values, source = feed.current()
            sources.append(source)
            if source == "stale":
                shift = feed.index - feed._latest.made_for
                assert 0 < shift < 3 and values[-1] == values[-1 - shift]  # padded with its last
        elapsed = time.perf_counter() - t0
    s = feed.stats()
    assert elapsed < 0.5  # 200 decisions never waited for 200 x 10 ms of forecasting
    assert s.skipped > 0 and s.fallbacks > 0 and s.observations == 200
    assert s.fresh + s.stale + s.fallbacks == 200
    assert set(sources) <= {"fresh", "stale", "last_value"}


def test_a_failing_forecaster_is_reported_once_and_the_loop_goes_on(caplog):
    broken = Flaky(lambda k: True)
    series = loads(40)
    caplog.set_level(logging.ERROR, logger=ff.__name__)
    with ForecastFeed(broken, period=PERIOD, scale=1.0, wait_s=2.0) as feed:
        t0 = time.perf_counter()
        for i, load in enumerate(series):
            feed.observe(load, t=i + 1)
            values, source = feed.current()
            assert source == "last_value" and np.all(values == load)
        elapsed = time.perf_counter() - t0
    s = feed.stats()
    assert elapsed < 1.5  # a failure answers the request: no decision waits its wait_s out
    assert s.errors == broken.calls == 40 - PERIOD + 1 and s.produced == 0
    assert s.first_error == "RuntimeError: model server down (call 1)"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info and "fall back" in errors[0].getMessage()
    assert feed.metrics()[ff.ERRORS] == s.errors


def test_an_intermittent_failure_falls_back_to_the_previous_forecast():
    flaky = Flaky(lambda k: k % 3 == 0)
    series = loads(60)
    with ForecastFeed(flaky, period=PERIOD, scale=1.0, wait_s=2.0) as feed:
        sources = []
        for i, load in enumerate(series):
            feed.observe(load, t=i + 1)
            sources.append(feed.current()[1])
    s = feed.stats()
    assert s.errors == flaky.calls // 3 and s.produced == flaky.calls - s.errors
    assert sources[PERIOD - 1 :].count("stale") == s.errors  # shifted by one step each time
    assert s.fresh == s.produced


def test_close_returns_while_the_forecaster_is_stuck_and_the_thread_ends_after():
    release = threading.Event()

    class Stuck(LastValue):
        def predict(self, history, t, period):
            release.wait(5.0)
            return super().predict(history, t, period)

    feed = ForecastFeed(Stuck(2), period=PERIOD, scale=1.0, wait_s=0.05).start()
    feed.observe(10.0, t=1)
    assert feed.current()[1] == "last_value"  # waited 50 ms, then fell back
    t0 = time.perf_counter()
    assert feed.close(timeout=0.2) is False  # reported, not hung
    assert time.perf_counter() - t0 < 1.0
    release.set()
    feed._thread.join(2.0)
    assert not feed.running  # its put into the closed queue ended it quietly
    assert feed.close() is True
    with pytest.raises(RuntimeError, match="closed"):
        feed.start()


# ---------------------------------------------------------------------- rlbench-live's config
ENV = {"horizon": 12, "provision_delay": 0, "load": "sine_curve", "base_load": 800.0,
       "amplitude": 400.0, "noise": 0.05, "max_instances": 20, "capacity": 100.0}  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "env", "expected"),
    [
        ({"feed": "auto"}, {"forecast": "none"}, None),
        ({"feed": "auto"}, {}, None),
        ({"feed": False}, {"forecast": "naive"}, None),
        ({"feed": "auto"}, {"forecast": "oracle"}, r"oracle reads the true future"),
        ({"feed": True}, {"forecast": "none"}, r"forecast\.feed=true needs an environment"),
        ({"feed": "maybe"}, {"forecast": "naive"}, r"forecast\.feed='maybe'"),
        ({"queue": 0}, {"forecast": "naive"}, r"forecast\.queue must be an integer >= 1"),
        ({"wait_ms": -1}, {"forecast": "naive"}, r"forecast\.wait_ms must be a number >= 0"),
        ({}, {"forecast": "lstm"}, r"env_args: forecast_model: forecast=lstm needs"),
        ({}, {"forecast": "naive", "forecast_steps": 20}, r"must be <= the period"),
    ],
)
def test_the_feed_settings(settings, env, expected):
    kwargs = {**ENV, "forecast_steps": 3, **env}
    if expected is None:
        assert build_feed(settings, kwargs, (10,)) is None
    else:
        with pytest.raises(UserError, match=expected):
            build_feed(settings, kwargs, (10,))


def test_the_feed_reads_the_environments_layout():
    feed = build_feed({"queue": 3, "wait_ms": 20}, {**ENV, "forecast": "naive",
                      "forecast_steps": 3}, (10,))  # fmt: skip
    assert isinstance(feed.forecaster, SeasonalNaive) and feed.window == 12 == feed.period
    assert feed.steps == 3 and feed.scale == 2000.0 and feed.queue.capacity == 3
    assert feed.wait_s == pytest.approx(0.02)
    with pytest.raises(UserError, match=r"shape \(3,\): no room for the 3 forecast entries"):
        build_feed({}, {**ENV, "forecast": "naive", "forecast_steps": 3}, (3,))


# ---------------------------------------------------------------------- a live session
class Padded:
    """The autoscaling simulator with ``k`` forecast entries appended to its observation (the
    layout of ``env.forecast``, without depending on the environment computing one); it keeps
    every step's load."""

    def __init__(self, k: int) -> None:
        self.inner = SimAdapter("rlbench/Autoscaling-v0", ENV, seed=0)
        self.env_id, self.k, self.loads = self.inner.env_id, k, []
        self.action_space = self.inner.action_space
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(7 + k,), dtype=np.float32)

    def _pad(self, obs: np.ndarray) -> np.ndarray:
        return np.concatenate([obs, np.zeros(self.k, dtype=np.float32)])

    def reset(self, seed: int | None = None) -> np.ndarray:
        return self._pad(self.inner.reset(seed=seed))

    def step(self, action: int):
        obs, reward, terminated, truncated, info = self.inner.step(action)
        self.loads.append(float(info["influx"]))
        return self._pad(obs), reward, terminated, truncated, info

    def close(self) -> None:
        self.inner.close()


class Hold:
    def action_probabilities(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return np.tile([0.0, 1.0, 0.0], (len(obs), 1))


class Registry:
    def exists(self, model: str) -> bool:
        return True

    def resolve_alias(self, uri: str) -> str:
        return "1"

    def load(self, spec: str) -> Any:
        return Hold()


class Recorder:
    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.append(dict(metrics))


def live_cfg(folder: Path, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_LIVE_DIR, version_base="1.3"):
        return compose("live", overrides=[
            f"folder={folder}", "session=f", "decisions=120", "report_every=40",
            "triggers.drift.enabled=false", "triggers.file=false", "explore.kind=none",
            *overrides,
        ])  # fmt: skip


def test_a_live_session_acts_on_the_feeds_forecasts(tmp_path):
    """Every observation the policy saw (the log's obs) carries the seasonal-naive forecast of
    the loads observed before it, the feed's series are on the session's run, and the feed's
    thread ends with the session."""
    cfg = live_cfg(tmp_path / "s", "forecast.wait_ms=2000")
    k = 3
    adapter = Padded(k)
    feed = build_feed(cfg.forecast, {**ENV, "forecast": "naive", "forecast_steps": k},
                      adapter.observation_space.shape)  # fmt: skip
    tracker, registry = Recorder(), Registry()
    session = LiveSession(cfg, adapter, tmp_path / "s", tracker, registry, registry.load,
                          feed=feed)  # fmt: skip
    session.run()
    assert not feed.running
    log = read_log(tmp_path / "s" / "log")
    seen = np.asarray(adapter.loads)
    assert len(log) == len(seen) == 120
    full = ENV["max_instances"] * ENV["capacity"]
    for i in range(12, 120):  # decision i is made after i loads: the forecast of i .. i + 2
        expected = np.clip(seen[i - 12 : i - 12 + k] / full, 0, 1)
        np.testing.assert_allclose(log.obs[i, 7:], expected, rtol=1e-6, err_msg=str(i))
        np.testing.assert_allclose(log.next_obs[i - 1, 7:], log.obs[i, 7:], rtol=1e-6)
    last_load = np.clip(seen[:11, None] / full, 0, 1).repeat(k, axis=1)
    np.testing.assert_allclose(log.obs[1:12, 7:], last_load, rtol=1e-6)  # before the window
    s = feed.stats()
    assert s.errors == 0 and s.fallbacks == 12 and s.stale == 0  # the first decision had none
    reports = [m for m in tracker.metrics if ff.DELAY_MS in m]
    assert len(reports) == 3 and all(m[ff.STALE] == 0.0 and m[ff.DROPPED] == 0 for m in reports)
    assert session.snapshot()["forecast"]["fresh"] == s.fresh > 0


def test_a_live_session_with_a_feed_and_a_missing_load_key_says_which(tmp_path):
    cfg = live_cfg(tmp_path / "s", "forecast.load_key=requests")
    adapter = Padded(2)
    feed = build_feed(cfg.forecast, {**ENV, "forecast": "last_value", "forecast_steps": 2},
                      adapter.observation_space.shape)  # fmt: skip
    registry = Registry()
    session = LiveSession(cfg, adapter, tmp_path / "s", Recorder(), registry, registry.load,
                          feed=feed)  # fmt: skip
    with pytest.raises(UserError, match=r"forecast\.load_key=requests: .* has no such entry"):
        session.run()
    assert not feed.running


def test_the_feed_writes_what_the_simulator_would_with_env_forecast():
    """On Autoscaling-v0 with ``forecast=last_value`` (when the environment has it), the feed's
    entries equal the environment's own forecast entries wherever both see the same history
    (not at an episode's first step: the simulator's history reaches before it, the feed's is
    the previous episode's)."""
    kwargs = {**ENV, "forecast": "last_value", "forecast_steps": 3}
    try:
        inner = SimAdapter("rlbench/Autoscaling-v0", kwargs, seed=0)
    except TypeError:
        pytest.skip("Autoscaling-v0 has no forecast argument yet")
    own: list[np.ndarray] = []

    class Seen:
        env_id, action_space = inner.env_id, inner.action_space
        observation_space = inner.observation_space

        def reset(self, seed=None):
            own.append(inner.reset(seed=seed))
            return own[-1]

        def step(self, action):
            out = inner.step(action)
            own.append(out[0])
            return out

        def close(self):
            inner.close()

    feed = build_feed({"wait_ms": 2000}, kwargs, inner.observation_space.shape)
    seen = Seen()
    with feed:
        feed.observe(500.0, 0)  # a load from before the episode: the simulator cannot know it
        feeds = [feed.apply(seen.reset(seed=1))]
        for t in range(1, ENV["horizon"]):
            info = seen.step(1)[4]
            feed.observe(info["influx"], t)
            feeds.append(feed.apply(own[-1]))
    own_arr, feed_arr = np.asarray(own), np.asarray(feeds)
    assert own_arr.shape == feed_arr.shape == (12, 10)
    np.testing.assert_allclose(feed_arr[1:], own_arr[1:], rtol=1e-6)
    np.testing.assert_allclose(feed_arr[0, 7:], 0.25)  # 500 / 2000: the feed's own history
