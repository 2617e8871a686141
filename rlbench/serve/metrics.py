"""What the decision server counts, and its ``/metrics`` page in Prometheus' text format."""

from __future__ import annotations

import bisect
import threading
from collections import Counter

from rlbench.serve.queue import QueueStats

#: request latency buckets (seconds), Prometheus' ``le`` bounds
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServerMetrics:
    """Counters the handlers and the batcher update (under one lock: two threads write)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.responses: Counter[int] = Counter()  # HTTP status -> count
        self.decisions: Counter[str] = Counter()  # policy version -> observations decided
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.latency_sum = 0.0
        self.shed = 0  # answered 503 at once while the server was overloaded
        self.refused = 0  # versions that failed to load

    def answered(self, status: int, seconds: float) -> None:
        with self._lock:
            self.responses[status] += 1
            self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self.latency_sum += seconds

    def decided(self, version: str, n: int) -> None:
        with self._lock:
            self.decisions[version] += n

    def prometheus(self, queue: QueueStats) -> str:
        """The exposition text: queue depth and drops, latency histogram, decisions by version."""
        with self._lock:
            lines = [
                "# HELP rlbench_serve_queue_depth Requests waiting for the batcher.",
                "# TYPE rlbench_serve_queue_depth gauge",
                f"rlbench_serve_queue_depth {queue.depth}",
                "# HELP rlbench_serve_queue_capacity Requests the queue holds before dropping.",
                "# TYPE rlbench_serve_queue_capacity gauge",
                f"rlbench_serve_queue_capacity {queue.capacity}",
                "# HELP rlbench_serve_dropped_total Oldest waiting requests answered 503.",
                "# TYPE rlbench_serve_dropped_total counter",
                f"rlbench_serve_dropped_total {queue.dropped}",
                "# HELP rlbench_serve_shed_total Requests answered 503 at once while overloaded.",
                "# TYPE rlbench_serve_shed_total counter",
                f"rlbench_serve_shed_total {self.shed}",
                "# HELP rlbench_serve_queue_delay_seconds Recent waits in the queue.",
                "# TYPE rlbench_serve_queue_delay_seconds summary",
                f'rlbench_serve_queue_delay_seconds{{quantile="0.5"}} {queue.delay_p50:.6f}',
                f'rlbench_serve_queue_delay_seconds{{quantile="0.99"}} {queue.delay_p99:.6f}',
                "# HELP rlbench_serve_responses_total Answers by HTTP status.",
                "# TYPE rlbench_serve_responses_total counter",
                *(
                    f'rlbench_serve_responses_total{{code="{code}"}} {n}'
                    for code, n in sorted(self.responses.items())
                ),
                "# HELP rlbench_serve_decisions_total Observations decided, by policy version.",
                "# TYPE rlbench_serve_decisions_total counter",
                *(
                    f'rlbench_serve_decisions_total{{version="{v}"}} {n}'
                    for v, n in sorted(self.decisions.items())
                ),
                "# HELP rlbench_serve_refused_versions_total Versions that failed to load.",
                "# TYPE rlbench_serve_refused_versions_total counter",
                f"rlbench_serve_refused_versions_total {self.refused}",
                "# HELP rlbench_serve_request_seconds Time from arrival to answer.",
                "# TYPE rlbench_serve_request_seconds histogram",
            ]
            cumulative = 0
            for bound, count in zip((*LATENCY_BUCKETS, "+Inf"), self.latency_counts, strict=True):
                cumulative += count
                lines.append(f'rlbench_serve_request_seconds_bucket{{le="{bound}"}} {cumulative}')
            lines += [
                f"rlbench_serve_request_seconds_sum {self.latency_sum:.6f}",
                f"rlbench_serve_request_seconds_count {cumulative}",
            ]
        return "\n".join(lines) + "\n"
