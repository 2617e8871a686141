"""The decision server: a registered policy answers over HTTP through a bounded real-time queue.

Requests enter a :class:`~rlbench.serve.queue.BoundedQueue` (when it is full, the OLDEST waiting
request is answered 503: a real-time caller wants a fresh decision or none). One batcher, a task
on the event loop, takes up to ``max_batch`` waiting requests into one forward pass and answers
each with its actions, their probabilities, the policy version, enqueue/dequeue times and the
delay; a full batch is answered at once by the request that completes it. A poller follows the
model alias (``models:/NAME@champion``): a new version is loaded in the background
and swapped in between two batches, so no request sees a half-loaded model; a version that fails
to load is refused and the old one keeps serving.

A burst also builds a backlog before the queue, in the HTTP layer: while the event loop runs
more than ``shed_after_ms`` late, the decisions it reaches are answered 503 at once (by the
connection itself, :mod:`rlbench.serve.shedding`, or else by :class:`DecisionRoute`), so the
backlog drains in a fraction of the time deciding it would take.

Endpoints: ``POST /decide`` (``{"observations": [[...], ...]}`` or ``{"observation": [...]}``,
optional ``"deterministic": false``), ``GET /healthz``, ``GET /metrics`` (Prometheus text).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse

from rlbench.errors import UserError, first_line
from rlbench.serve.metrics import ServerMetrics
from rlbench.serve.queue import BoundedQueue, Entry

log = logging.getLogger(__name__)
RETRY_REFUSED_S = 60.0  # a version that failed to load is tried again after this long
LAG_TICK = 0.005  # seconds between the event loop's lag measurements
OVERLOADED = b'{"error":"overloaded: this request waited too long; retry"}'


@dataclass
class ServeSettings:
    """What ``rlbench-serve`` is told: the model, where it is, and the queue's limits."""

    model_uri: str
    tracking_uri: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    capacity: int = 100  # waiting requests; the seed's queue size
    max_batch: int = 64  # requests in one forward pass
    max_rows: int = 1024  # observations in one request
    poll_interval: float = 5.0  # seconds between looks at the alias (0: never)
    shed_after_ms: float = 10.0  # event-loop lag beyond which waiting decisions get 503 (0: never)

    def check(self) -> None:
        for key in ("capacity", "max_batch", "max_rows"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"{key} must be a positive integer, got {value!r}")
        if not math.isfinite(self.poll_interval) or self.poll_interval < 0:
            raise UserError(f"poll interval must be >= 0 seconds, got {self.poll_interval}")
        if not math.isfinite(self.shed_after_ms) or self.shed_after_ms < 0:
            raise UserError(f"shed-after must be >= 0 ms, got {self.shed_after_ms}")


@dataclass
class Policy:
    """One loaded version: the agent acts, ``shape`` is one observation's shape."""

    name: str
    version: str
    agent: Any
    shape: tuple[int, ...]


@dataclass
class Pending:
    """A decision request waiting in the queue; answered through ``future`` on the loop."""

    obs: np.ndarray
    deterministic: bool
    future: asyncio.Future


class BadRequest(Exception):
    """A request we answer with a 4xx and one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def load_policy(model_uri: str, tracking_uri: str | None) -> Policy:
    """Resolve ``models:/NAME@ALIAS`` to its version now and load it (``UserError`` if not)."""
    from gymnasium import spaces

    from rlbench.tracking import registry

    name, _, _ = registry.parse_model_uri(model_uri)
    version = registry.resolve_alias(model_uri, tracking_uri)
    agent, venv = registry.load_version(name, version, tracking_uri)
    if not isinstance(venv.action_space, spaces.Discrete):
        raise UserError(
            f"cannot serve {name} version {version}: rlbench-serve answers discrete actions, "
            f"and its policy acts in {venv.action_space}"
        )
    return Policy(name, version, agent, tuple(venv.observation_space.shape))


class DecisionServer:
    """The queue, the batcher and the alias poller around one served policy."""

    def __init__(self, settings: ServeSettings, policy: Policy) -> None:
        self.settings = settings
        self.policy = policy
        self.queue: BoundedQueue[Pending] = BoundedQueue(settings.capacity)
        self.metrics = ServerMetrics()
        self._next: Policy | None = None  # loaded, waiting for the next batch boundary
        self._refused: dict[str, float] = {}  # the alias's version that failed to load: when
        self._stop = threading.Event()
        self._poller_thread: threading.Thread | None = None
        self._batcher_task: asyncio.Task | None = None
        self._work: asyncio.Event | None = None  # set when the queue has something
        self._watch_task: asyncio.Task | None = None
        self.lag = 0.0  # seconds the event loop ran late at its last two ticks (a backlog)
        self._wall_offset = time.time() - time.monotonic()

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the batcher (a task on the server's event loop) and the alias poller (a thread:
        loading a model must not stall requests)."""
        self._work = asyncio.Event()
        self._batcher_task = asyncio.create_task(self._batcher())
        if self.settings.shed_after_ms > 0:
            self._watch_task = asyncio.create_task(self._watch_lag())
        if self.settings.poll_interval > 0:
            self._poller_thread = threading.Thread(target=self._poller, name="poller", daemon=True)
            self._poller_thread.start()

    async def stop(self) -> None:
        """Stop taking work; every waiting request is answered 503."""
        self._stop.set()
        self.queue.close()
        for task in (self._batcher_task, self._watch_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for entry in self.queue.drain():
            self._answer_error(entry.item, 503, "the server is shutting down")
        if self._poller_thread is not None:
            self._poller_thread.join(timeout=10)

    # -- requests -----------------------------------------------------------------------------
    def parse(self, body: bytes) -> tuple[np.ndarray, bool]:
        """Observations ``(N, *shape)`` and ``deterministic`` of a request body, or BadRequest."""
        limit = self.settings.max_rows * (32 * math.prod(self.policy.shape) + 8) + 4096
        if len(body) > limit:  # refused before parsing: a huge body must not stall the others
            raise BadRequest(
                413,
                f"request body of {len(body)} bytes; at most {limit} ({self.settings.max_rows} "
                "observations)",
            )
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:
            raise BadRequest(400, f"malformed JSON: {first_line(err)}") from None
        if not isinstance(data, dict) or not ({"observations", "observation"} & data.keys()):
            raise BadRequest(
                400, 'expected {"observations": [[...], ...]} or {"observation": [...]}'
            )
        one = "observations" not in data
        raw = data["observation"] if one else data["observations"]
        try:
            values = np.asarray(raw)
            if values.dtype.kind not in "iuf":  # "0.5" or true is no number here
                raise TypeError(values.dtype)
            obs = values.astype(np.float32)
        except (ValueError, TypeError, OverflowError):
            raise BadRequest(400, "observations must be arrays of numbers") from None
        if one:
            obs = obs[None]
        shape = self.policy.shape
        if obs.ndim != 1 + len(shape) or obs.shape[1:] != shape or len(obs) == 0:
            want = f"(N, {', '.join(map(str, shape))})"
            raise BadRequest(400, f"observations have shape {obs.shape}; this policy needs {want}")
        if len(obs) > self.settings.max_rows:
            raise BadRequest(
                413, f"{len(obs)} observations in one request; at most {self.settings.max_rows}"
            )
        if not np.isfinite(obs).all():
            raise BadRequest(400, "observations must be finite numbers (no NaN or inf)")
        deterministic = data.get("deterministic", True)
        if not isinstance(deterministic, bool):
            raise BadRequest(400, f"deterministic must be true or false, got {deterministic!r}")
        return obs, deterministic

    async def decide(self, obs: np.ndarray, deterministic: bool) -> tuple[int, dict[str, Any]]:
        """Queue the request and wait for its answer: ``(status, body)``."""
        request = Pending(obs, deterministic, asyncio.get_running_loop().create_future())
        dropped = self.queue.put(request)
        assert self._work is not None, "start() the server first"
        if len(self.queue) >= self.settings.max_batch:  # a full batch waits for nobody
            self._run_batch()
        else:
            self._work.set()
        if dropped is not None:
            self._answer_error(
                dropped.item,
                503,
                f"queue full ({self.settings.capacity} waiting): this was the oldest request",
            )
        return await request.future

    # -- the batcher --------------------------------------------------------------------------
    async def _batcher(self) -> None:
        """Take up to ``max_batch`` waiting requests, answer them with one forward pass, yield to
        the handlers, repeat. On the event loop itself: no thread hand-offs per request, and a
        batch grows while the loop reads new requests."""
        assert self._work is not None
        while not self._stop.is_set():
            await self._work.wait()
            self._work.clear()
            while self._run_batch():
                await asyncio.sleep(0)  # let the loop read requests and write answers

    async def _watch_lag(self) -> None:
        """Measure how late the event loop runs: a tick that should come after ``LAG_TICK``
        comes later by the time the loop spent on requests read before it (the backlog).

        The lag kept is the smaller of the last two ticks': a backlog makes every tick late,
        while one stall (a garbage collection, another thread holding the GIL) makes one tick
        late and must not shed requests that a moment later are on time (single ticks shed 10
        of 5000 requests at 500/s while p99 was 5.6 ms)."""
        loop = asyncio.get_running_loop()
        previous = 0.0
        while not self._stop.is_set():
            start = loop.time()
            await asyncio.sleep(LAG_TICK)
            late = loop.time() - start - LAG_TICK
            self.lag, previous = min(late, previous), late

    def overloaded(self) -> bool:
        """True while the loop lags more than ``shed_after_ms``: requests it reaches now have
        waited that long already, so they are answered 503 at once (oldest first)."""
        limit = self.settings.shed_after_ms
        return limit > 0 and self.lag * 1000.0 > limit

    def _run_batch(self) -> bool:
        """Answer up to ``max_batch`` waiting requests with one forward pass; False if none."""
        batch = self.queue.get_batch(self.settings.max_batch, timeout=0)
        if not batch:
            return False
        if self._next is not None:  # between two batches: no request sees a half-loaded model
            self.policy, self._next = self._next, None
            log.info("now serving %s version %s", self.policy.name, self.policy.version)
        self._run(batch)
        return True

    def _run(self, batch: list[Entry[Pending]]) -> None:
        policy = self.policy
        for deterministic in (True, False):
            part = [e for e in batch if e.item.deterministic is deterministic]
            if not part:
                continue
            obs = np.concatenate([e.item.obs for e in part])
            try:
                actions, pi = policy.agent.decide(obs, deterministic=deterministic)
                actions = np.asarray(actions)
            except Exception as err:  # the server never dies of a request
                log.error("the policy failed on a batch: %s", first_line(err))
                for e in part:
                    self._answer_error(e.item, 500, f"the policy failed: {first_line(err)}")
                continue
            chosen = pi[np.arange(len(actions)), actions]
            start = 0
            for e in part:
                n = len(e.item.obs)
                body = {
                    "actions": actions[start : start + n].tolist(),
                    "probabilities": chosen[start : start + n].tolist(),
                    "policy": {"name": policy.name, "version": policy.version},
                    "enqueued_at": e.enqueued_at + self._wall_offset,
                    "dequeued_at": e.dequeued_at + self._wall_offset,
                    "delay_ms": 1000.0 * e.delay,
                }
                start += n
                self.metrics.decided(policy.version, n)
                self._answer(e.item, 200, body)

    def _answer(self, request: Pending, status: int, body: dict[str, Any]) -> None:
        if not request.future.done():  # on the loop's thread: handlers and batcher share it
            request.future.set_result((status, body))

    def _answer_error(self, request: Pending, status: int, message: str) -> None:
        self._answer(request, status, {"error": message})

    # -- the alias poller ---------------------------------------------------------------------
    def _poller(self) -> None:
        from rlbench.tracking import registry

        while not self._stop.wait(self.settings.poll_interval):
            try:
                version = registry.resolve_alias(
                    self.settings.model_uri, self.settings.tracking_uri
                )
            except Exception as err:  # the store is away: keep serving what we have
                log.warning("cannot read %s: %s", self.settings.model_uri, first_line(err))
                continue
            current = self._next or self.policy
            # a refused version is tried again when the alias comes back to it, or after a
            # while (its artifacts may have been mid-copy, the store briefly away)
            self._refused = {v: t for v, t in self._refused.items() if v == version}
            refused_at = self._refused.get(version)
            recent = refused_at is not None and time.monotonic() - refused_at < RETRY_REFUSED_S
            if version == current.version or recent:
                continue
            try:
                uri = f"models:/{self.policy.name}/{version}"
                loaded = load_policy(uri, self.settings.tracking_uri)
                if loaded.shape != self.policy.shape:
                    raise UserError(f"observations {loaded.shape}, served {self.policy.shape}")
            except Exception as err:
                self._refused = {version: time.monotonic()}
                self.metrics.refused += 1
                log.error("refused %s version %s: %s", self.policy.name, version, first_line(err))
                continue
            self._next = loaded
            self._refused = {}

    # -- views --------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        stats = self.queue.stats()
        out = {
            "status": "ok",
            "policy": {"name": self.policy.name, "version": self.policy.version},
            "queue": {"depth": stats.depth, "capacity": stats.capacity, "dropped": stats.dropped},
        }
        refused = list(self._refused)  # one read: the poller replaces the dict
        if refused:  # the alias names a version that would not load: say so
            out["refused_version"] = refused[0]
        return out


class DecisionRoute:
    """``POST /decide`` as plain ASGI in front of the FastAPI app: the hot path pays for no
    routing, request object or response class (about a third of a request's CPU), and the
    other endpoints stay FastAPI's.

    While the server is overloaded a decision is answered 503 before any other work (no body
    read), so a backlog of requests drains in a fraction of the time deciding it would take and
    requests that arrive after it are answered in time. The event loop runs requests in arrival
    order: the ones shed are the oldest waiting."""

    def __init__(self, app: Any, server: DecisionServer) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/decide":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        if scope["method"] != "POST":
            status, body = 405, {"error": "use POST /decide"}
        elif self.server.overloaded():
            self.server.metrics.shed += 1
            self.server.metrics.answered(503, 0.0)
            await _respond(send, 503, OVERLOADED)
            return
        else:
            try:
                obs, deterministic = self.server.parse(await _read_body(receive))
                status, body = await self.server.decide(obs, deterministic)
            except BadRequest as err:
                status, body = err.status, {"error": str(err)}
        await _respond(send, status, json.dumps(body, separators=(",", ":")).encode())
        self.server.metrics.answered(status, time.monotonic() - started)


async def _read_body(receive: Any) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _respond(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def make_app(server: DecisionServer) -> Any:
    """The FastAPI app: ``/healthz``, ``/metrics`` and the server's lifespan; ``/decide`` is
    :class:`DecisionRoute` in front of it."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    app = FastAPI(title="rlbench decision server", lifespan=lifespan, docs_url=None)
    app.add_middleware(DecisionRoute, server=server)  # POST /decide

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse(server.health())

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        text = server.metrics.prometheus(server.queue.stats())
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    return app
