"""Jobs that cannot fit are refused up front; long phases say what they are doing."""

from __future__ import annotations

import logging
import os
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


@pytest.mark.parametrize(
    ("files", "cpus"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2: a container granted 1.5 CPUs
        ({"cpu.max": "max 100000\n"}, None),  # unlimited
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu.max": "garbage\n"}, None),
        ({}, None),  # no cgroup files (not Linux, or not mounted)
    ],
)
def test_a_cgroup_cpu_quota_is_read_in_both_cgroup_versions(tmp_path, files, cpus):
    from rlbench import cli

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cli._cgroup_cpu_quota(str(tmp_path)) == cpus


def test_helper_children_never_outnumber_the_cores_a_quota_grants(monkeypatch):
    """A report's drawing workers and a run's forked validation count the same cores: with
    one CPU granted, neither forks (the child would only take turns with its parent)."""
    from rlbench import cli
    from rlbench.results import drawing
    from rlbench.run import forked_validation

    monkeypatch.setattr(cli, "_cgroup_cpu_quota", lambda: 1.0)
    assert cli.usable_cores() == 1
    assert drawing._workers(8) == 1
    assert not forked_validation.available("cpu")
    monkeypatch.setattr(cli, "_cgroup_cpu_quota", lambda: 0.5)
    assert cli.usable_cores() == 1
    monkeypatch.setattr(cli, "_cgroup_cpu_quota", lambda: None)
    assert cli.usable_cores() == len(os.sched_getaffinity(0))
