"""Jobs that cannot fit are refused up front; long phases say what they are doing."""

from __future__ import annotations

import logging
import time

import pytest


@pytest.mark.parametrize(
    "args",
    [
        ["algo=ppo", "train.num_envs=200000000"],  # the batched env and the rollout
        ["algo=dqn", "algo.buffer_size=100000000000"],  # the replay buffer
        ["algo=threshold", "train.num_envs=3000000000"],  # the batched env alone
    ],
)
def test_a_job_larger_than_memory_is_refused_with_its_estimate(cli, args):
    started = time.monotonic()
    result = cli(*args, "tracking.enabled=false")
    assert result.code == 2, result.err
    [line] = result.error_lines()
    assert "needs about" in line and "GiB" in line and "available" in line, line
    assert args[1].partition("=")[0] in line  # names the setting to lower
    assert time.monotonic() - started < 30  # refused before anything was allocated


def test_a_long_phase_says_what_it_is_doing(caplog):
    from rlbench.run.resources import slow_phase

    with caplog.at_level(logging.INFO, logger="rlbench"), slow_phase("building 9 envs", 0.1):
        time.sleep(0.35)
    assert any("still building 9 envs" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rlbench"), slow_phase("quick", 0.5):
        pass
    time.sleep(0.6)
    assert not any("quick" in r.getMessage() for r in caplog.records)  # short phases are quiet
