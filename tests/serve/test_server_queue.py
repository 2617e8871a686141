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


def test_while_the_loop_runs_late_decisions_are_shed_before_any_other_work():
    from rlbench.serve.server import OVERLOADED, ShedWhenLate

    server, _ = serve(capacity=100, max_batch=4)
    reached: list[str] = []

    async def app(scope, receive, send) -> None:
        reached.append(scope["path"])

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    shed = ShedWhenLate(app, server)
    scope = {"type": "http", "path": "/decide"}
    server.lag = 0.001  # 1 ms late: serve
    asyncio.run(shed(scope, None, send))
    server.lag = 0.200  # 200 ms late: the request waited too long
    asyncio.run(shed(scope, None, send))
    asyncio.run(shed({"type": "http", "path": "/healthz"}, None, send))  # never shed
    assert reached == ["/decide", "/healthz"]
    assert [m.get("status") for m in sent] == [503, None]
    assert sent[1]["body"] == OVERLOADED
    assert server.metrics.shed == 1
    server.settings.shed_after_ms = 0  # off
    asyncio.run(shed(scope, None, send))
    assert reached[-1] == "/decide"
