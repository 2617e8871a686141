"""The decision server's queue discipline, in-process: drop-oldest order, full batches at once."""

from __future__ import annotations

import asyncio

import numpy as np

from rlbench.serve.server import DecisionServer, Policy, ServeSettings


class Echo:
    """A policy stub: the action is the observation's first number; records its batches."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        self.batches.append(len(obs))
        return obs[:, 0].astype(np.int64)

    def action_probabilities(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        pi = np.zeros((len(obs), 8))
        pi[np.arange(len(obs)), obs[:, 0].astype(np.int64)] = 1.0
        return pi

    def decide(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, np.ndarray]:
        return self.predict(obs, deterministic), self.action_probabilities(obs, deterministic)


def serve(capacity: int, max_batch: int) -> tuple[DecisionServer, Echo]:
    agent = Echo()
    settings = ServeSettings("models:/x@champion", capacity=capacity, max_batch=max_batch)
    return DecisionServer(settings, Policy("x", "1", agent, (1,))), agent


def test_when_the_queue_is_full_the_oldest_waiting_request_gets_503():
    server, agent = serve(capacity=3, max_batch=64)

    async def main() -> list[tuple[int, dict]]:
        await server.start()
        try:  # five requests queued before the batcher runs: the two oldest are pushed out
            calls = [server.decide(np.array([[i]], np.float32), True) for i in range(5)]
            return await asyncio.gather(*calls)
        finally:
            await server.stop()

    answers = asyncio.run(main())
    assert [status for status, _ in answers] == [503, 503, 200, 200, 200]
    assert "oldest request" in answers[0][1]["error"]
    assert [body["actions"] for _, body in answers[2:]] == [[2], [3], [4]]
    assert agent.batches == [3]  # the three survivors in one forward pass
    assert server.queue.stats().dropped == 2


def test_a_full_batch_is_answered_without_waiting_for_the_batcher():
    server, agent = serve(capacity=100, max_batch=4)

    async def main() -> list[tuple[int, dict]]:
        await server.start()
        try:
            calls = [server.decide(np.array([[i % 8]], np.float32), True) for i in range(10)]
            return await asyncio.gather(*calls)
        finally:
            await server.stop()

    answers = asyncio.run(main())
    assert all(status == 200 for status, _ in answers)
    assert agent.batches == [4, 4, 2]
    assert [body["actions"][0] for _, body in answers] == [i % 8 for i in range(10)]


def test_decide_route_answers_sheds_while_late_and_passes_other_paths_on():
    import json

    from rlbench.serve.server import OVERLOADED, DecisionRoute

    server, agent = serve(capacity=100, max_batch=4)
    reached: list[str] = []

    async def app(scope, receive, send) -> None:  # the FastAPI app behind the route
        reached.append(scope["path"])

    async def body() -> dict:
        return {"type": "http.request", "body": b'{"observation": [5]}', "more_body": False}

    async def never() -> dict:
        raise AssertionError("a shed request's body is not read")

    async def main() -> list[dict]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        route = DecisionRoute(app, server)
        decide = {"type": "http", "path": "/decide", "method": "POST"}
        await server.start()
        try:
            server.lag = 0.001  # 1 ms late: decide
            await route(decide, body, send)
            server.lag = 0.200  # 200 ms late: the request waited too long
            await route(decide, never, send)
            await route({"type": "http", "path": "/healthz", "method": "GET"}, never, send)
        finally:
            await server.stop()
        return sent

    sent = asyncio.run(main())
    statuses = [m["status"] for m in sent if m["type"] == "http.response.start"]
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert statuses == [200, 503]
    assert json.loads(bodies[0])["actions"] == [5] and bodies[1] == OVERLOADED
    assert reached == ["/healthz"] and agent.batches == [1]
    assert server.metrics.shed == 1


class Transport:
    """Enough of an asyncio transport for uvicorn's protocol: records what is written."""

    def __init__(self) -> None:
        self.written, self.closed = b"", False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 8000) if name in ("sockname", "peername") else default

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def test_the_connection_sheds_a_decision_while_late_keeping_the_connection_and_the_order():
    """While late, the HTTP protocol answers POST /decide 503 itself (no ASGI task), keeps a
    keep-alive connection open for the next request and closes one that asked to close; any
    other path, and any decision while on time, goes to the app."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from rlbench.serve.server import OVERLOADED
    from rlbench.serve.shedding import shedding_protocol

    server, _ = serve(capacity=100, max_batch=4)
    reached: list[str] = []

    async def app(scope, receive, send) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def request(path: str, close: bool = False, method: str = "POST") -> bytes:
        head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        return (head + ("Connection: close\r\n" if close else "") + "\r\n{}").encode()

    async def main() -> tuple[Transport, Transport]:
        config = Config(app, lifespan="off", log_level="warning", server_header=False)
        protocol = shedding_protocol(server, OVERLOADED)
        late = protocol(config=config, server_state=ServerState(), app_state={})
        late.connection_made(Transport())
        server.lag = 0.200
        late.data_received(request("/decide") + request("/decide?x=1", close=True))
        assert reached == []  # answered in the connection itself
        # a shed answer followed, in the same read, by a request for the app: the keep-alive
        # timer the answer armed must not run while the app answers
        mixed = protocol(config=config, server_state=ServerState(), app_state={})
        mixed.connection_made(Transport())
        mixed.data_received(request("/decide") + request("/healthz", method="GET"))
        assert mixed.timeout_keep_alive_task is None
        await asyncio.sleep(0.01)
        assert mixed.transport.written.count(b"HTTP/1.1 503") == 1
        assert mixed.transport.written.count(b"HTTP/1.1 204") == 1
        on_time = protocol(config=config, server_state=ServerState(), app_state={})
        on_time.connection_made(Transport())
        on_time.data_received(request("/healthz", method="GET"))  # late, but not a decision
        await asyncio.sleep(0.01)
        server.lag = 0.0
        on_time.data_received(request("/decide"))
        await asyncio.sleep(0.01)
        return late.transport, on_time.transport

    late, on_time = asyncio.run(main())
    answers = late.written.split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"503", b"503"]
    assert all(a.endswith(OVERLOADED) for a in answers)
    assert b"connection: close" not in answers[0] and b"connection: close" in answers[1]
    assert late.closed and server.metrics.shed == 3
    assert reached == ["/healthz", "/healthz", "/decide"] and not on_time.closed
    assert on_time.written.count(b"HTTP/1.1 204") == 2


def test_healthz_names_a_promoted_version_without_any_decision(monkeypatch):
    """The poller's new version is swapped in as soon as the event loop is free: /healthz
    named the old one until a decision came (with no traffic, forever)."""
    import time

    from rlbench.serve import server as server_module
    from rlbench.tracking import registry

    server, agent = serve(capacity=10, max_batch=4)
    server.settings.poll_interval = 0.02
    monkeypatch.setattr(registry, "resolve_alias", lambda uri, tracking=None: "2")
    monkeypatch.setattr(
        server_module, "load_policy", lambda uri, tracking: Policy("x", "2", Echo(), (1,))
    )

    async def main() -> tuple[str, str]:
        await server.start()
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and server.policy.version != "2":
                await asyncio.sleep(0.02)
            return server.health()["policy"]["version"], server.policy.version
        finally:
            await server.stop()

    assert asyncio.run(main()) == ("2", "2")
    assert agent.batches == []  # no request was needed


def bounded(tolerance: float = 0.1) -> DecisionServer:
    """A policy on [0, 1] x [0, 1] x [0, inf)."""
    low, high = np.zeros(3, np.float32), np.array([1.0, 1.0, np.inf], np.float32)
    settings = ServeSettings("models:/x@champion", bounds_tolerance=tolerance)
    return DecisionServer(settings, Policy("x", "1", Echo(), (3,), low, high))


def test_observations_beyond_the_space_are_refused_naming_index_and_bounds():
    import json

    import pytest

    from rlbench.serve.server import BadRequest

    server = bounded()
    obs, _ = server.parse(json.dumps({"observation": [1.05, -0.05, 1e30]}).encode())
    assert obs.shape == (1, 3)  # within 10% of the range; the third is unbounded above
    with pytest.raises(
        BadRequest,
        match=r"^index 2: -5 is outside the observation space \[0, inf\] by more than 0.1: ",
    ):
        server.parse(json.dumps({"observation": [0, 0, -5]}).encode())  # but not below
    with pytest.raises(BadRequest) as refused:
        server.parse(json.dumps({"observation": [5, -3, 100]}).encode())
    assert refused.value.status == 400
    assert str(refused.value).startswith(
        "index 0: 5 is outside the observation space [0, 1] by more than 0.1 of its range"
    )
    with pytest.raises(BadRequest, match=r"^observation 1, index 1: -3 is outside .* \[0, 1\]"):
        server.parse(json.dumps({"observations": [[0, 0, 0], [0, -3, 0]]}).encode())
    with pytest.raises(BadRequest, match=r"index 0: 1\.01 is outside"):
        bounded(0.0).parse(b'{"observation": [1.01, 0, 0]}')
    obs, _ = bounded(float("inf")).parse(b'{"observation": [3e38, -3e38, 0]}')
    assert obs[0, 0] == np.float32(3e38)  # --bounds-tolerance inf: never refused
    for bad in (-0.1, float("nan")):
        with pytest.raises(Exception, match="bounds tolerance must be >= 0"):
            ServeSettings("models:/x@champion", bounds_tolerance=bad).check()


def test_a_body_with_both_observation_and_observations_is_refused():
    import pytest

    from rlbench.serve.server import BadRequest

    with pytest.raises(BadRequest, match=r'give one of "observation" .* not both'):
        bounded().parse(b'{"observation": [0, 0, 0], "observations": [[0, 0, 0]]}')


class Overflowing(Echo):
    """A network that overflows past 1e30: its outputs are NaN there, and (like an argmax over
    NaN) its decision is action 0, stated with certainty; sampling from NaN fails."""

    def outputs(self, obs: np.ndarray) -> np.ndarray:
        return np.where(np.abs(obs) > 1e30, np.nan, obs)

    def decide(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, np.ndarray]:
        if not deterministic and (np.abs(obs) > 1e30).any():
            raise RuntimeError("probability tensor contains either inf, nan or element < 0")
        safe = np.where(np.abs(obs) > 1e30, 0, obs)
        return super().decide(safe, deterministic)


def test_an_answer_from_non_finite_outputs_is_never_sent_and_spares_the_batch():
    agent = Overflowing()
    settings = ServeSettings("models:/x@champion", max_batch=8, bounds_tolerance=float("inf"))
    server = DecisionServer(settings, Policy("x", "1", agent, (1,), np.zeros(1), np.ones(1)))

    async def main() -> list[tuple[int, dict]]:
        await server.start()
        try:
            calls = [
                server.decide(np.array(rows, np.float32), deterministic)
                for deterministic in (True, False)
                for rows in ([[3]], [[2], [3e38]], [[4]])
            ]
            return await asyncio.gather(*calls)
        finally:
            await server.stop()

    answers = asyncio.run(main())
    assert [status for status, _ in answers] == [200, 422, 200] * 2
    assert [answers[i][1]["actions"] for i in (0, 2, 3, 5)] == [[3], [4], [3], [4]]
    message = answers[1][1]["error"]
    assert message.startswith("the policy's outputs are not finite for observation 1 ")
    assert "values up to 3e+38" in message and "[0, 1]" in message


def asgi(app, method: str, path: str, body: bytes = b"", headers=()) -> tuple[int, dict, dict]:
    """One request through an ASGI app: status, headers, JSON body."""
    import json

    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": method, "path": path, "raw_path": path.encode(),
        "query_string": b"", "headers": list(headers), "http_version": "1.1",
        "scheme": "http", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 1),
        "root_path": "", "app": app,
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    text = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), json.loads(text) if text else {}


def test_every_error_outside_decide_is_one_error_line_with_allow_and_no_docs():
    from rlbench.serve.server import make_app

    server, _ = serve(capacity=10, max_batch=4)
    app = make_app(server)
    endpoints = "the endpoints are POST /decide, GET /healthz, GET /metrics"
    for path, hint in [("/decide/", "/decide"), ("//decide", "/decide"), ("/healthz/", "/healthz")]:
        status, _, body = asgi(app, "POST" if "decide" in path else "GET", path)
        assert status == 404, path  # /healthz/ was a 307 redirect
        assert body == {"error": f"no endpoint {path} (did you mean {hint}?): {endpoints}"}
    for path in ("/nope", "/openapi.json", "/redoc", "/docs"):
        assert asgi(app, "GET", path)[::2] == (404, {"error": f"no endpoint {path}: {endpoints}"})
    status, headers, body = asgi(app, "POST", "/healthz")
    assert (status, headers[b"allow"]) == (405, b"GET")
    assert body == {"error": "POST /healthz is not allowed: use GET /healthz"}
    status, headers, body = asgi(app, "GET", "/decide")
    assert (status, headers[b"allow"]) == (405, b"POST")
    assert body == {"error": "GET /decide is not allowed: use POST /decide"}


def test_a_large_body_is_refused_from_its_length_and_a_stream_stops_at_the_limit():
    """A 400 MB body was read whole before its 413 (1.2 GB of memory, other clients stalled)."""
    import json

    from rlbench.serve.server import DecisionRoute

    server, _ = serve(capacity=10, max_batch=4)
    limit = server.body_limit()
    reads: list[int] = []

    async def stream() -> dict:  # chunked: no length, 64 KiB at a time, without end
        reads.append(1)
        return {"type": "http.request", "body": b" " * 65536, "more_body": True}

    async def never() -> dict:
        raise AssertionError("the body of a request too long by its Content-Length is not read")

    async def main() -> list[dict]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        route = DecisionRoute(None, server)
        scope = {"type": "http", "path": "/decide", "method": "POST"}
        await route({**scope, "headers": [(b"content-length", b"400000000")]}, never, send)
        await route({**scope, "headers": [(b"transfer-encoding", b"chunked")]}, stream, send)
        return sent

    sent = asyncio.run(main())
    starts = [m for m in sent if m["type"] == "http.response.start"]
    bodies = [json.loads(m["body"]) for m in sent if m["type"] == "http.response.body"]
    assert [m["status"] for m in starts] == [413, 413]
    assert bodies[0]["error"].startswith(f"request body of 400000000 bytes; at most {limit}")
    assert bodies[1]["error"].startswith(f"request body of more than {limit} bytes")
    assert len(reads) == limit // 65536 + 1  # no chunk read past the limit
    assert (b"connection", b"close") in starts[1]["headers"]  # the rest is never read
    assert (b"connection", b"close") not in starts[0]["headers"]  # the client reads its 413
