"""What a job will need, checked before it is built: memory for one rollout, and a line for
any phase that runs long.

A ``train.num_envs`` in the millions makes numpy ask for tens of GB in the batched env and the
rollout (or replay) buffer; the machine then swaps for minutes or the kernel kills the job
without a word. :func:`check_memory` refuses such a job up front with its estimate.
:func:`slow_phase` says what a job is doing when a phase (building envs, allocating buffers,
opening a store) has run for 10 s, so a long silence never looks like a hang.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlbench.errors import UserError

log = logging.getLogger("rlbench")
SLOW_S = 10.0
FLOAT = 4  # bytes: SB3's buffers and our batched envs hold float32 (numpy float64 in places: x2)


def available_memory() -> int | None:
    """Bytes this process may still use: MemAvailable, capped by a cgroup limit; None if
    unknown (not Linux)."""
    found: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            found.append(int(limit) - used)
    return min(found) if found else None


def job_bytes(algo: Any, num_envs: int, obs_size: int, act_size: int = 1) -> tuple[int, str]:
    """Rough bytes a job allocates up front, and which settings drive it (for the message)."""
    per_step = obs_size + act_size + 6  # obs, action, reward, done, value, log-prob, ...
    env = 2 * 8 * num_envs * (2 * obs_size + 4)  # float64 state, obs and next obs, flags
    name = str(algo.get("name", ""))
    if name == "ppo" or "n_steps" in algo:
        n_steps = int(algo.get("n_steps", 2048))
        return env + FLOAT * n_steps * num_envs * per_step * 2, (
            f"train.num_envs={num_envs} x algo.n_steps={n_steps}"
        )
    if "buffer_size" in algo:
        size = int(algo.get("buffer_size", 1_000_000))
        return env + FLOAT * size * (2 * obs_size + act_size + 2), (
            f"algo.buffer_size={size} (and train.num_envs={num_envs})"
        )
    return env, f"train.num_envs={num_envs}"


def check_memory(algo: Any, num_envs: int, obs_shape: tuple[int, ...]) -> None:
    """Refuse a job whose envs and buffers cannot fit in the memory left on this machine."""
    need, driver = job_bytes(algo, num_envs, max(1, math.prod(obs_shape)))
    have = available_memory()
    if have is not None and need > have:
        raise UserError(
            f"{driver} needs about {_gib(need)} for the environments and one rollout or "
            f"buffer, more than the {_gib(have)} of memory available: lower it"
        )


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


@contextlib.contextmanager
def slow_phase(what: str, after_s: float = SLOW_S) -> Iterator[None]:
    """Log ``"still <what> (10 s)"`` if the block runs longer than ``after_s``, then every
    minute, so that a long phase says what it is doing."""
    done = threading.Event()
    start = time.monotonic()

    def watch() -> None:
        wait = after_s
        while not done.wait(wait):
            log.info("still %s (%.0f s so far)", what, time.monotonic() - start)
            wait = 60.0

    watcher = threading.Thread(target=watch, name="rlbench-slow-phase", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
