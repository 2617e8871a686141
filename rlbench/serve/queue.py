"""A bounded real-time queue between a producer and a consumer, as the ML-Scope seed has it.

Capacity ``N``; when full, a new item pushes out the OLDEST waiting one (a real-time consumer
wants the freshest work; the dropped item is handed back so its producer can answer it, and
counted). Every item carries its enqueue and dequeue times, and the queue keeps delay statistics
(waiting time from enqueue to dequeue). Thread-safe: producers and consumers may be threads
(the decision server's batcher, the live loop, a forecaster feeding an agent).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")
DELAY_WINDOW = 10_000  # delays kept for percentiles: the most recent ones


@dataclass
class Entry(Generic[T]):
    """One queued item with its timestamps (``time.monotonic`` seconds)."""

    item: T
    enqueued_at: float
    dequeued_at: float | None = None

    @property
    def delay(self) -> float:
        """Seconds the item waited (until now, while it still waits)."""
        end = self.dequeued_at if self.dequeued_at is not None else time.monotonic()
        return end - self.enqueued_at


@dataclass
class QueueStats:
    """A snapshot of the queue's counters and of its recent delays (seconds)."""

    capacity: int
    depth: int
    enqueued: int
    dequeued: int
    dropped: int
    delay_mean: float
    delay_p50: float
    delay_p99: float
    delay_max: float


class BoundedQueue(Generic[T]):
    """FIFO of at most ``capacity`` items; drop-oldest when full; delays measured."""

    def __init__(self, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"queue capacity must be a positive integer, got {capacity!r}")
        self.capacity = capacity
        self._clock = clock
        self._items: collections.deque[Entry[T]] = collections.deque()
        self._ready = threading.Condition()
        self._delays: collections.deque[float] = collections.deque(maxlen=DELAY_WINDOW)
        self.enqueued = self.dequeued = self.dropped = 0
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> Entry[T] | None:
        """Add ``item``; returns the oldest entry it pushed out when the queue was full."""
        with self._ready:
            if self._closed:
                raise RuntimeError("the queue is closed")
            dropped = None
            if len(self._items) >= self.capacity:
                dropped = self._items.popleft()
                dropped.dequeued_at = self._clock()
                self.dropped += 1
            self._items.append(Entry(item, self._clock()))
            self.enqueued += 1
            self._ready.notify()
            return dropped

    def get(self, timeout: float | None = None) -> Entry[T] | None:
        """The oldest entry, waiting up to ``timeout`` s (None: forever); None if none came."""
        batch = self.get_batch(1, timeout)
        return batch[0] if batch else None

    def get_batch(self, max_items: int, timeout: float | None = None) -> list[Entry[T]]:
        """Up to ``max_items`` oldest entries: waits for the first (up to ``timeout``), then
        takes what is waiting without waiting more (a batch never delays its first item)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ready:
            while not self._items and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return []
                self._ready.wait(left)
            now = self._clock()
            batch = []
            while self._items and len(batch) < max_items:
                entry = self._items.popleft()
                entry.dequeued_at = now
                self._delays.append(now - entry.enqueued_at)
                batch.append(entry)
            self.dequeued += len(batch)
            return batch

    def drain(self) -> list[Entry[T]]:
        """Every waiting entry, without waiting (to answer them when shutting down)."""
        with self._ready:
            items, self._items = list(self._items), collections.deque()
            return items

    def close(self) -> None:
        """Wake every waiting consumer; later ``put`` calls raise."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def stats(self) -> QueueStats:
        with self._ready:
            delays = np.asarray(self._delays, dtype=np.float64)
            depth = len(self._items)
        if delays.size:
            mean, p50, p99, worst = (
                float(delays.mean()),
                float(np.percentile(delays, 50)),
                float(np.percentile(delays, 99)),
                float(delays.max()),
            )
        else:
            mean = p50 = p99 = worst = 0.0
        return QueueStats(
            capacity=self.capacity,
            depth=depth,
            enqueued=self.enqueued,
            dequeued=self.dequeued,
            dropped=self.dropped,
            delay_mean=mean,
            delay_p50=p50,
            delay_p99=p99,
            delay_max=worst,
        )
