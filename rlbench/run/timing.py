"""Where a training command's wall time goes, phase by phase.

``rlbench-train`` is more than ``learn()``: the interpreter and imports, building the env and
the agent (torch's first optimizer imports ``torch._dynamo``), periodic validation and
checkpoints, the final evaluation and its artifacts. :class:`Phases` times each one; the run
gets them as ``time/<phase>_s`` metrics and as ``timing.json`` beside its outputs, which
``benchmarks/whole_command.py`` reads to say where every second outside ``learn()`` went.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rlbench.tracking import schema

#: in the order a command passes through them; ``learn`` excludes the periodic work it calls
PHASES = (
    "startup",  # process start to the first train() of rlbench-train: imports, Hydra (0 after)
    "setup",  # train() to learn(): config checks, store, env copies, agent (torch, optimizer)
    "learn",  # agent.learn() without the periodic work below
    "validation",  # periodic evaluations on validation seeds, with the best-model checkpoint
    # (forked onto the idle core in a single run: only forking and collecting them)
    "checkpoints",  # periodic checkpoints
    "save",  # the final model and the resolved config
    "evaluation",  # the final evaluation on held-out seeds
    "artifacts",  # its CSVs and trajectory figure
)


_startup_pending = False  # set by the console script; the first train() takes the startup


def expect_startup() -> None:
    """Called by ``rlbench-train`` before Hydra starts: the first job of this process counts
    the process's start-up (a notebook's or a grid worker's later jobs do not)."""
    global _startup_pending
    _startup_pending = True


def take_startup() -> float:
    """The process's age for the first job after :func:`expect_startup`, else 0.0."""
    global _startup_pending
    if not _startup_pending:
        return 0.0
    _startup_pending = False
    return process_age()


def process_age() -> float:
    """Seconds since this process started (0.0 where the OS does not say)."""
    try:
        import psutil

        return max(0.0, time.time() - psutil.Process().create_time())
    except Exception:  # a missing number, not a failed run
        return 0.0


class Phases:
    """Accumulated wall seconds per phase of :data:`PHASES`."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._started: dict[str, float] = {}

    def begin(self, name: str) -> None:
        """Start timing ``name`` where a ``with`` block cannot span it (ended by :meth:`end`)."""
        self._started[name] = time.perf_counter()

    def end(self, name: str) -> None:
        if name in self._started:
            self.seconds[name] += time.perf_counter() - self._started.pop(name)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.begin(name)
        try:
            yield
        finally:
            self.end(name)

    def metrics(self) -> dict[str, float]:
        return {schema.time_metric(name): value for name, value in self.seconds.items()}

    def write(self, folder: Path) -> Path:
        """``timing.json`` in ``folder``: the phases' seconds (replaced whole, never partial)."""
        path = folder / schema.TIMING_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.seconds, indent=1) + "\n")
        tmp.replace(path)
        return path
