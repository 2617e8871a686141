"""A report's figures drawn on several cores: the same results, in order, errors raised."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from rlbench.results import drawing
from rlbench.results.drawing import Drawing, draw_all


def _where(tag: str) -> list[Path]:
    time.sleep(0.05)  # long enough that one worker cannot take every drawing
    return [Path(f"{tag}-{os.getpid()}")]


def test_results_come_back_in_order_from_other_processes() -> None:
    found = draw_all([Drawing(_where, (f"figure{i}",)) for i in range(8)])
    tags = [paths[0].name.split("-")[0] for paths in found]
    assert tags == [f"figure{i}" for i in range(8)]
    pids = {int(paths[0].name.split("-")[1]) for paths in found}
    if drawing._workers(8) > 1:
        assert os.getpid() not in pids and len(pids) > 1
    else:  # one core: drawn here
        assert pids == {os.getpid()}


def test_an_unpicklable_drawing_still_runs_and_its_error_is_raised_here() -> None:
    def broken() -> list[Path]:  # a local function: forked workers run it without pickling
        raise RuntimeError("disk full")

    drawings = [Drawing(_where, ("a",)), Drawing(broken), Drawing(_where, ("b",))]
    with pytest.raises(RuntimeError, match="disk full"):
        draw_all(drawings)


def test_one_core_draws_here(monkeypatch) -> None:
    monkeypatch.setattr(drawing, "_workers", lambda tasks: 1)
    found = draw_all([Drawing(_where, (f"figure{i}",)) for i in range(3)])
    assert [p[0].name for p in found] == [f"figure{i}-{os.getpid()}" for i in range(3)]


KILLED_REPORT = """
import os, sys, time
from pathlib import Path
from rlbench.results.drawing import Drawing, draw_all

out = Path(sys.argv[1])

def slow(i):
    (out / f"worker-{os.getpid()}").write_text("")
    time.sleep(60)
    return []

draw_all([Drawing(slow, (i,)) for i in range(6)])
"""


@pytest.mark.skipif(drawing._workers(2) < 2, reason="one core: the figures are drawn in-process")
@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_a_killed_report_takes_its_drawing_workers_with_it(tmp_path: Path) -> None:
    import signal
    import subprocess

    report = subprocess.Popen([sys.executable, "-c", KILLED_REPORT, str(tmp_path)])
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("worker-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = [int(p.name.split("-")[1]) for p in tmp_path.glob("worker-*")]
    assert len(workers) == 2
    report.send_signal(signal.SIGKILL)
    report.wait(10)
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in workers if _running(pid)]
    assert alive == [], f"drawing workers outlived the killed report: {alive}"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:  # a zombie has finished: its parent is gone
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
