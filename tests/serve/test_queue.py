"""The bounded real-time queue: drop-oldest with a count, timestamps, delays, threads."""

from __future__ import annotations

import threading
import time

import pytest

from rlbench.serve.queue import BoundedQueue


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_full_queue_drops_the_oldest_and_counts_it():
    clock = Clock()
    q: BoundedQueue[int] = BoundedQueue(3, clock=clock)
    assert [q.put(i) for i in range(3)] == [None, None, None]
    dropped = q.put(3)
    assert dropped is not None and dropped.item == 0
    assert q.put(4).item == 1
    assert [e.item for e in q.get_batch(10, timeout=0)] == [2, 3, 4]
    stats = q.stats()
    assert (stats.enqueued, stats.dequeued, stats.dropped, stats.depth) == (5, 3, 2, 0)


def test_entries_carry_their_timestamps_and_the_queue_its_delays():
    clock = Clock()
    q: BoundedQueue[str] = BoundedQueue(100, clock=clock)
    q.put("a")
    clock.now = 0.5
    q.put("b")
    clock.now = 2.0
    a, b = q.get_batch(2, timeout=0)
    assert (a.enqueued_at, a.dequeued_at, a.delay) == (0.0, 2.0, 2.0)
    assert (b.enqueued_at, b.delay) == (0.5, 1.5)
    stats = q.stats()
    assert stats.delay_max == 2.0 and stats.delay_mean == 1.75


def test_a_batch_takes_what_waits_without_waiting_for_more():
    q: BoundedQueue[int] = BoundedQueue(10)
    q.put(1)
    start = time.monotonic()
    assert [e.item for e in q.get_batch(5, timeout=5)] == [1]
    assert time.monotonic() - start < 0.5
    assert q.get_batch(5, timeout=0.05) == []  # empty: gives up after the timeout


def test_a_flood_from_threads_never_blocks_or_grows_past_capacity():
    """The seed's resilience test: producers far faster than the consumer."""
    q: BoundedQueue[int] = BoundedQueue(100)
    taken: list[int] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set() or len(q):
            taken.extend(e.item for e in q.get_batch(10, timeout=0.01))
            time.sleep(0.001)

    consumer = threading.Thread(target=consume)
    consumer.start()
    producers = [
        threading.Thread(target=lambda k=k: [q.put(k * 10_000 + i) for i in range(10_000)])
        for k in range(4)
    ]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    done.set()
    consumer.join(timeout=10)
    stats = q.stats()
    assert stats.enqueued == 40_000
    assert stats.dropped + stats.dequeued == 40_000 and stats.dropped > 0
    assert len(taken) == stats.dequeued and len(set(taken)) == len(taken)
    for k in range(4):  # each producer's surviving items come out in its order
        mine = [x for x in taken if x // 10_000 == k]
        assert mine == sorted(mine)


def test_a_capacity_that_is_not_a_positive_integer_is_refused():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            BoundedQueue(bad)
