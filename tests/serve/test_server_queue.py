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
