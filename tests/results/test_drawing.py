"""A report's figures drawn on several cores: the same results, in order, errors raised."""

from __future__ import annotations

import os
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
