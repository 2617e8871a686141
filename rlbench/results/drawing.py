"""A report's figures drawn on every core the process may use.

Each figure is independent and matplotlib holds the GIL while it lays out and rasterises, so
threads would not help: forked processes each draw a share (they inherit the loaded libraries,
the data and the plotting calls: nothing is imported again or pickled but the paths). The 12
figures of the 180-run demo report took 10 s on one core; on two the whole report went from
16.3-17.9 s to 11.5-11.8 s, the files byte for byte the same. Where ``fork`` is unavailable,
in a daemonic process (which may not have children) or with one core, the figures are drawn
here, one after another.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlbench import cli


@dataclass(frozen=True)
class Drawing:
    """One plotting call of :mod:`rlbench.results.plots`: ``fn(*args, **kwargs)`` -> paths."""

    fn: Callable[..., list[Path]]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> list[Path]:
        return self.fn(*self.args, **self.kwargs)


def draw_all(drawings: Sequence[Drawing]) -> list[list[Path]]:
    """Each drawing's paths, in order; an error of any drawing is raised here (the others are
    cancelled). Put the slowest drawings first: they are handed out in order."""
    global _pending
    workers = _workers(len(drawings))
    if workers < 2:
        return [drawing() for drawing in drawings]
    with _one_at_a_time:
        _pending = drawings  # the forked workers find them here: nothing is pickled but paths
        pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_start_worker,
            initargs=(os.getpid(),),
        )
        try:
            futures = [pool.submit(_draw, i) for i in range(len(drawings))]
            return [future.result() for future in futures]
        finally:  # after an error or Ctrl-C: nothing more is started, the running ones end
            pool.shutdown(wait=True, cancel_futures=True)
            _pending = ()


_pending: Sequence[Drawing] = ()
_one_at_a_time = threading.Lock()


def _draw(index: int) -> list[Path]:
    return _pending[index]()


def _workers(tasks: int) -> int:
    if tasks < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if multiprocessing.current_process().daemon:
        return 1
    return min(tasks, cli.usable_cores())


def _start_worker(report_pid: int) -> None:
    """A drawing worker dies with its report (the report's temporary folder and its lock)."""
    cli.start_helper_child(report_pid)
