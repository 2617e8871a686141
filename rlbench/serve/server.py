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
Every error, on any path, is ``{"error": "<one line>"}``.

What a policy is asked is checked before it answers: observations beyond the bounds of its
observation space by more than ``bounds_tolerance`` of the bound's range are refused (400,
naming the index and the bounds: a policy trained on ``[0, 1]`` answers ``1e6`` with a
confident guess), and an answer computed from non-finite network outputs is never sent (422:
an argmax over NaN is action 0, stated with the probability of a sure thing).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException

from rlbench.errors import UserError, first_line
from rlbench.serve.metrics import ServerMetrics
from rlbench.serve.queue import BoundedQueue, Entry

log = logging.getLogger(__name__)
RETRY_REFUSED_S = 60.0  # a version that failed to load is tried again after this long
LAG_TICK = 0.005  # seconds between the event loop's lag measurements
OVERLOADED = b'{"error":"overloaded: this request waited too long; retry"}'
ENDPOINTS = {"/decide": "POST", "/healthz": "GET", "/metrics": "GET"}
REQUEST_KEYS = frozenset({"observation", "observations", "deterministic"})  # of a /decide body


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
    # how far beyond a bounded observation space a value may lie, as a share of the bound's
    # range (0: exactly within; inf: never refused)
    bounds_tolerance: float = 0.1

    def check(self) -> None:
        for key in ("capacity", "max_batch", "max_rows"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"{key} must be a positive integer, got {value!r}")
        if not math.isfinite(self.poll_interval) or self.poll_interval < 0:
            raise UserError(f"poll interval must be >= 0 seconds, got {self.poll_interval}")
        if not math.isfinite(self.shed_after_ms) or self.shed_after_ms < 0:
            raise UserError(f"shed-after must be >= 0 ms, got {self.shed_after_ms}")
        if math.isnan(self.bounds_tolerance) or self.bounds_tolerance < 0:
            raise UserError(
                f"bounds tolerance must be >= 0 (a share of each bound's range; inf: never "
                f"refuse), got {self.bounds_tolerance}"
            )


@dataclass
class Policy:
    """One loaded version: the agent acts, ``shape`` is one observation's shape, ``low`` and
    ``high`` the bounds of its observation space (None: not a Box)."""

    name: str
    version: str
    agent: Any
    shape: tuple[int, ...]
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    def accepted(self, tolerance: float) -> tuple[np.ndarray, np.ndarray] | None:
        """The values accepted per element: the bounds widened by ``tolerance`` of their range
        (by ``tolerance`` itself where only one side is bounded; an infinite bound stays
        infinite); None when nothing is bounded or the tolerance is infinite."""
        if self.low is None or self.high is None or math.isinf(tolerance):
            return None
        low, high = self.low.astype(np.float64), self.high.astype(np.float64)
        if not (np.isfinite(low).any() or np.isfinite(high).any()):
            return None
        span = high - low
        margin = np.where(np.isfinite(span), tolerance * np.nan_to_num(span), tolerance)
        return low - margin, high + margin


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
    space = venv.observation_space
    box = isinstance(space, spaces.Box)
    low, high = (np.asarray(space.low), np.asarray(space.high)) if box else (None, None)
    return Policy(name, version, agent, tuple(space.shape), low, high)


class DecisionServer:
    """The queue, the batcher and the alias poller around one served policy."""

    def __init__(self, settings: ServeSettings, policy: Policy) -> None:
        self.settings = settings
        self.policy = policy
        self.queue: BoundedQueue[Pending] = BoundedQueue(settings.capacity)
        self.metrics = ServerMetrics()
        self._next: Policy | None = None  # loaded, waiting for the next batch boundary
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bounds: tuple[str, tuple[np.ndarray, np.ndarray] | None] | None = None
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
        self._loop = asyncio.get_running_loop()
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
    def body_limit(self) -> int:
        """The largest request body: ``max_rows`` observations written out at length."""
        return self.settings.max_rows * (32 * math.prod(self.policy.shape) + 8) + 4096

    def too_large(self, size: int, exact: bool = True) -> BadRequest:
        limit = self.body_limit()
        said = f"{size} bytes" if exact else f"more than {limit} bytes"
        return BadRequest(
            413,
            f"request body of {said}; at most {limit} ({self.settings.max_rows} observations)",
        )

    def parse(self, body: bytes) -> tuple[np.ndarray, bool]:
        """Observations ``(N, *shape)`` and ``deterministic`` of a request body, or BadRequest."""
        if len(body) > self.body_limit():  # refused before parsing: it must not stall the others
            raise self.too_large(len(body))
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:
            raise BadRequest(400, f"malformed JSON: {first_line(err)}") from None
        keys = {"observations", "observation"} & data.keys() if isinstance(data, dict) else set()
        if not keys:
            raise BadRequest(
                400, 'expected {"observations": [[...], ...]} or {"observation": [...]}'
            )
        if len(keys) == 2:
            raise BadRequest(
                400,
                'give one of "observation" (one) and "observations" (a batch), not both',
            )
        unknown = sorted(set(data) - REQUEST_KEYS)
        if unknown:  # a misspelt "deterministic" silently decided greedily
            close = difflib.get_close_matches(unknown[0], REQUEST_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise BadRequest(
                400,
                f"unknown key {unknown[0]!r}{hint}: a request takes "
                f"{', '.join(repr(k) for k in sorted(REQUEST_KEYS))}",
            )
        one = "observations" not in data
        raw = data["observation"] if one else data["observations"]
        try:
            values = np.asarray(raw)
            if values.dtype.kind not in "iuf":  # "0.5" or true is no number here
                raise TypeError(values.dtype)
            with np.errstate(over="ignore"):  # 1e39 becomes inf: refused below
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
        self._check_bounds(obs, one)
        deterministic = data.get("deterministic", True)
        if not isinstance(deterministic, bool):
            raise BadRequest(400, f"deterministic must be true or false, got {deterministic!r}")
        return obs, deterministic

    def _check_bounds(self, obs: np.ndarray, one: bool) -> None:
        """BadRequest for the first value beyond the observation space's bounds (widened by the
        tolerance): the policy never saw such values, and would answer them with confidence."""
        policy = self.policy
        if self._bounds is None or self._bounds[0] != policy.version:
            self._bounds = (policy.version, policy.accepted(self.settings.bounds_tolerance))
        accepted = self._bounds[1]
        if accepted is None:
            return
        low, high = accepted
        outside = (obs < low) | (obs > high)
        if not outside.any():
            return
        row, *index = (int(i) for i in np.argwhere(outside)[0])
        where = "" if one else f"observation {row}, "
        at = index[0] if len(index) == 1 else tuple(index)
        lo, hi = policy.low[tuple(index)], policy.high[tuple(index)]  # type: ignore[index]
        tolerance = self.settings.bounds_tolerance
        share = " of its range" if np.isfinite(hi - lo) else ""
        raise BadRequest(
            400,
            f"{where}index {at}: {float(obs[row][tuple(index)]):g} is outside the observation "
            f"space [{float(lo):g}, {float(hi):g}] by more than {tolerance:g}{share}: "
            "send what the policy was trained on (rlbench-serve --bounds-tolerance widens "
            "the margin)",
        )

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
        self._swap()
        self._run(batch)
        return True

    def _swap(self) -> None:
        """Serve the version the poller loaded. Only on the event loop, where batches run whole:
        no request sees a half-loaded model, and the swap comes as soon as the loop is free
        (so ``/healthz`` names the new version at once, traffic or not)."""
        if self._next is not None:
            self.policy, self._next = self._next, None
            log.info("now serving %s version %s", self.policy.name, self.policy.version)

    def _run(self, batch: list[Entry[Pending]]) -> None:
        policy = self.policy
        for deterministic in (True, False):
            part = [e for e in batch if e.item.deterministic is deterministic]
            if part:
                part = self._finite_only(policy, part)
            if not part:
                continue
            obs = np.concatenate([e.item.obs for e in part])
            try:
                actions, pi = policy.agent.decide(obs, deterministic=deterministic)
                actions = np.asarray(actions)
                pi = np.asarray(pi)
            except Exception as err:  # the server never dies of a request
                log.error("the policy failed on a batch: %s", first_line(err))
                for e in part:
                    self._answer_error(e.item, 500, f"the policy failed: {first_line(err)}")
                continue
            finite = np.isfinite(pi).all(axis=1)
            if not finite.all():  # a distribution of NaN: no answer to give (the rows, alone)
                part, actions, pi = self._drop_rows(policy, part, finite, actions, pi)
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

    def _finite_only(self, policy: Policy, part: list[Entry[Pending]]) -> list[Entry[Pending]]:
        """The requests whose network outputs are finite; the others are answered 422 (checked
        before deciding: sampling from NaN fails the whole batch)."""
        outputs = getattr(policy.agent, "outputs", None)
        if outputs is None:
            return part
        obs = np.concatenate([e.item.obs for e in part])
        try:
            with np.errstate(all="ignore"):  # overflow is what this looks for
                raw = outputs(obs)
        except Exception:  # the decision itself says what is wrong
            return part
        if raw is None:
            return part
        finite = np.isfinite(np.asarray(raw, dtype=np.float64).reshape(len(obs), -1)).all(axis=1)
        if finite.all():
            return part
        return self._drop_rows(policy, part, finite)[0]

    def _drop_rows(
        self, policy: Policy, part: list[Entry[Pending]], finite: np.ndarray, *arrays: np.ndarray
    ) -> tuple[Any, ...]:
        """Answer 422 every request with a row that is not ``finite``; the other requests and
        their rows of ``arrays``."""
        keep, rows, start = [], [], 0
        for e in part:
            n = len(e.item.obs)
            ok = finite[start : start + n]
            if ok.all():
                keep.append(e)
                rows.extend(range(start, start + n))
            else:
                row = int(np.flatnonzero(~ok)[0])
                self._answer_error(e.item, 422, self._not_finite(policy, e.item.obs, row))
            start += n
        return (keep, *(a[rows] for a in arrays))

    @staticmethod
    def _not_finite(policy: Policy, obs: np.ndarray, row: int) -> str:
        where = f"observation {row}" if len(obs) > 1 else "this observation"
        biggest = float(np.abs(obs[row]).max())
        space = ""
        if policy.low is not None and policy.high is not None:
            lo, hi = float(policy.low.min()), float(policy.high.max())
            space = f" (its observation space spans [{lo:g}, {hi:g}])"
        return (
            f"the policy's outputs are not finite for {where} (values up to {biggest:g}): it "
            f"cannot decide there; send observations of the size it was trained on{space}"
        )

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
            if self._loop is not None:  # swapped in as soon as the loop is between batches
                with contextlib.suppress(RuntimeError):  # the loop has closed: shutting down
                    self._loop.call_soon_threadsafe(self._swap)

    # -- views --------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """The version that answers the next request (a loaded one waiting for the loop counts:
        no request is answered by the old one after it), the queue, a refused version."""
        stats = self.queue.stats()
        policy = self._next or self.policy
        out = {
            "status": "ok",
            "policy": {"name": policy.name, "version": policy.version},
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
    order: the ones shed are the oldest waiting.

    A body larger than the server takes is refused from its ``Content-Length`` before a byte of
    it is read (the connection stays open and drops the rest as it arrives, nothing kept: a
    client that sends its whole body before reading still gets the 413, where a close would
    reset the connection under it), or, sent chunked, as soon as what arrived passes the limit
    (then the connection is closed: such a body has no announced end)."""

    def __init__(self, app: Any, server: DecisionServer) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/decide":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        headers: list[tuple[bytes, bytes]] = []
        if scope["method"] != "POST":
            status = 405
            body = {"error": f"{scope['method']} /decide is not allowed: use POST /decide"}
            headers.append((b"allow", b"POST"))
        elif self.server.overloaded():
            self.server.metrics.shed += 1
            self.server.metrics.answered(503, 0.0)
            await _respond(send, 503, OVERLOADED)
            return
        else:
            try:
                raw = await _read_body(scope, receive, self.server)
                obs, deterministic = self.server.parse(raw)
                status, body = await self.server.decide(obs, deterministic)
            except BodyTooLarge as err:
                status, body = err.status, {"error": str(err)}
                if err.close:
                    headers.append((b"connection", b"close"))
            except BadRequest as err:
                status, body = err.status, {"error": str(err)}
        encoded = json.dumps(body, separators=(",", ":")).encode()
        await _respond(send, status, encoded, headers)
        self.server.metrics.answered(status, time.monotonic() - started)


class BodyTooLarge(BadRequest):
    """A 413 given before the whole body was read; ``close``: end the connection after it."""

    def __init__(self, message: str, close: bool) -> None:
        super().__init__(413, message)
        self.close = close


async def _read_body(scope: dict, receive: Any, server: DecisionServer) -> bytes:
    """The request body, read no further than the server's limit (``BodyTooLarge`` beyond it):
    a 400 MB body used to be read whole first, stalling every other client."""
    limit = server.body_limit()
    for name, value in scope.get("headers", ()):
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise BodyTooLarge(str(server.too_large(int(value))), close=False)
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(str(server.too_large(size, exact=False)), close=True)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _respond(
    send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})


def _endpoints() -> str:
    return ", ".join(f"{method} {path}" for path, method in ENDPOINTS.items())


def _error_message(method: str, path: str, status: int, detail: Any) -> str:
    """One line for an HTTP error outside ``/decide``: what is wrong and what to send."""
    if status == 404:
        tidy = "/" + "/".join(part for part in path.split("/") if part)
        close = [tidy] if tidy in ENDPOINTS else difflib.get_close_matches(path, ENDPOINTS, n=1)
        hint = f" (did you mean {close[0]}?)" if close and close[0] != path else ""
        return f"no endpoint {path}{hint}: the endpoints are {_endpoints()}"
    if status == 405:
        allowed = ENDPOINTS.get(path, "GET")
        return f"{method} {path} is not allowed: use {allowed} {path}"
    return first_line(str(detail)) if detail else f"HTTP {status}"


def make_app(server: DecisionServer) -> Any:
    """The FastAPI app: ``/healthz``, ``/metrics`` and the server's lifespan; ``/decide`` is
    :class:`DecisionRoute` in front of it. No OpenAPI schema, docs or slash redirects: a
    decision server answers its three endpoints, and every error as ``{"error": ...}``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    app = FastAPI(
        title="rlbench decision server",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,
    )
    app.add_middleware(DecisionRoute, server=server)  # POST /decide

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = _error_message(request.method, request.url.path, exc.status_code, exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def failure(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed: %s", request.method, request.url.path, first_line(exc))
        return JSONResponse({"error": f"the server failed: {first_line(exc)}"}, status_code=500)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse(server.health())

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        text = server.metrics.prometheus(server.queue.stats())
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    return app
