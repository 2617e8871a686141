"""The interaction log: a killed writer loses only its unflushed batch; bad logs are one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from logfakes import DAY, write_episodes

from rlbench.errors import UserError
from rlbench.offline.log import LogWriter, read_log

HERE = Path(__file__).resolve().parent


def record(i: int, **changes):
    rec = {
        "ts": DAY + i, "episode": "e0", "step": i, "obs": [0.5], "action": 1,
        "propensity": 0.5, "reward": 1.0, "next_obs": [0.5], "done": False, "terminal": False,
        "policy": "p", "policy_version": "1", "context": {},
    }  # fmt: skip
    return rec | changes


@pytest.mark.slow
def test_a_killed_writer_keeps_every_flushed_record(tmp_path):
    """SIGKILL in the middle of a batch: every record reported flushed reads back intact, and
    nothing of the unflushed batch appears half-written."""
    root = tmp_path / "log"
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "slow_writer.py"), str(root), "100"],
        stdout=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": str(HERE)},
    )  # fmt: skip
    reported = 0
    deadline = time.monotonic() + 30
    while reported < 700 and time.monotonic() < deadline:
        reported = int(proc.stdout.readline())
    time.sleep(0.013)  # some records into the next batch (0.2 ms each)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log = read_log(root)
    assert len(log) >= reported >= 700
    assert len(log) % 100 == 0 and log.torn == 0  # whole batches only
    i = np.arange(len(log))
    order = np.argsort(log.ts)
    assert np.array_equal(log.reward[order], i.astype(float))  # every record, in order, intact
    assert np.array_equal(log.obs[order], np.stack([i, -i], axis=1))
    assert np.array_equal(log.action[order], i % 3)


def test_days_are_partitions_and_batches_are_configurable(tmp_path):
    with LogWriter(tmp_path, env_id="x", obs_shape=(1,), n_actions=2, batch_size=3) as w:
        for i in range(5):
            w.append(record(i, ts=DAY - 1.5 + i))  # 2 decisions on Dec 31, 3 on Jan 1
            if i == 3:
                assert w.flushed == 2  # the day change flushed the first day's batch
    assert sorted(p.parent.name for p in w.files) == ["date=2025-12-31", "date=2026-01-01"]
    assert all(p.name.startswith(f"part-{os.getpid()}-") for p in w.files)
    assert len(read_log(tmp_path)) == 5
    assert len(read_log(tmp_path, start=DAY, end=DAY + 10)) == 3  # a window


def test_records_read_back_as_the_values_appended(tmp_path):
    """Numpy arrays and scalars, non-ASCII text and nested context survive the round trip, a
    float32 as the same float32; one compact JSON line per record."""
    recs = [
        record(0, obs=np.array([0.1, 1e-300]), next_obs=np.float32([0.3, 2.5]), action=np.int64(1)),
        record(
            1,
            obs=[0, 1],
            next_obs=[1, 0],
            reward=np.float64(-1.5),
            action=0,
            context={"user_id": "ü", "n": [1, 2.5, None]},
        ),
    ]
    with LogWriter(tmp_path, env_id="x", obs_shape=(2,), n_actions=2, batch_size=1) as w:
        w.append_many(recs)
    (part,) = w.files
    lines = part.read_text(encoding="utf-8").splitlines()[1:]
    assert len(lines) == 2 and all(" " not in line for line in lines)
    log = read_log(tmp_path)
    assert log.obs[0].tolist() == [0.1, 1e-300]
    assert np.float32(log.next_obs[0]).tolist() == np.float32([0.3, 2.5]).tolist()
    assert log.action.tolist() == [1, 0] and log.reward[1] == -1.5
    assert log.context[1] == {"user_id": "ü", "n": [1, 2.5, None]}


def test_a_non_finite_value_is_written_as_null_and_named_on_reading(tmp_path):
    """orjson writes strict JSON (NaN as null); the reader names the file, line and column."""
    with LogWriter(tmp_path, env_id="x", obs_shape=(2,), n_actions=2) as w:
        w.append(record(0, obs=[0, 0], next_obs=[0, 0], reward=float("nan")))
    with pytest.raises(UserError, match=r"line 2: reward is not finite"):
        read_log(tmp_path)


def test_logs_written_with_nan_tokens_still_read(tmp_path):
    """Logs from before orjson hold the standard library's text, NaN tokens included."""
    with LogWriter(tmp_path, env_id="x", obs_shape=(2,), n_actions=2) as w:
        w.append(record(0, obs=[0, 0], next_obs=[0, 0]))
    (part,) = w.files
    rec = record(1, obs=[0, 0], next_obs=[0, 0], context={"score": float("nan")})
    with part.open("a") as f:
        f.write(json.dumps(rec, separators=(",", ":")) + "\n")
    log = read_log(tmp_path)
    assert len(log) == 2 and np.isnan(log.context[1]["score"])


def test_a_failed_fsync_is_raised_not_lost(tmp_path, monkeypatch):
    """A full batch's fsync runs on a helper thread; its error surfaces in the writer's next
    call, and flushed counts only what was fsynced."""
    import rlbench.offline.log as log_module

    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 3:  # the header's file and folder, then the first batch
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(log_module.os, "fsync", fsync)
    w = LogWriter(tmp_path, env_id="x", obs_shape=(1,), n_actions=2, batch_size=2)
    w.append_many([record(0), record(1)])  # a full batch: written, its fsync in flight
    assert w.written == 2
    with pytest.raises(OSError, match="Input/output error"):
        w.close()
    assert w.flushed == 0


def test_a_slow_disk_is_synced_in_groups_and_never_too_far_behind(tmp_path, monkeypatch):
    """With a 20 ms fsync, batches are written at once and one fsync covers several of them;
    the unsynced records never exceed the lag bound, and close returns with all of them synced."""
    import rlbench.offline.log as log_module

    real = os.fsync
    lags, synced_calls = [], []
    w = LogWriter(tmp_path, env_id="x", obs_shape=(1,), n_actions=2, batch_size=10)

    def slow_fsync(fd):
        lags.append(w.written - w.flushed)
        synced_calls.append(fd)
        time.sleep(0.02)
        real(fd)

    monkeypatch.setattr(log_module.os, "fsync", slow_fsync)
    t0 = time.perf_counter()
    w.append_many(record(i) for i in range(400))  # 40 batches: 0.8 s if synced one by one
    w.close()
    assert time.perf_counter() - t0 < 0.6
    assert len(synced_calls) < 30 and max(lags) <= log_module.MAX_LAG_BATCHES * 10
    assert w.flushed == w.written == 400
    assert len(read_log(tmp_path)) == 400


def test_a_torn_last_line_is_skipped_and_counted(tmp_path):
    log = write_episodes(tmp_path, [[(0, 1, 0.5, 1.0, 0)] * 3])
    (part,) = log.files
    with part.open("ab") as f:
        f.write(json.dumps(record(9)).encode()[:40])  # a write cut short: no newline
    again = read_log(tmp_path)
    assert len(again) == 3 and again.torn == 1


BAD = {
    "missing column": (
        lambda r: {k: v for k, v in r.items() if k != "propensity"},
        r"log/date=2026-01-01/part-\d+-1\.jsonl: line 2 lacks column\(s\) propensity$",
    ),
    "zero propensity": (
        lambda r: r | {"propensity": 0.0},
        r"line 2: propensity 0\.0 is not in \(0, 1\]: the behaviour policy's probability",
    ),
    "negative propensity": (lambda r: r | {"propensity": -0.2}, r"propensity -0\.2 is not in"),
    "propensity above one": (lambda r: r | {"propensity": 1.5}, r"propensity 1\.5 is not in"),
    "action outside": (
        lambda r: r | {"action": 2},
        r"line 2: action 2 is outside the action space 0\.\.1$",
    ),
    "obs of another shape": (
        lambda r: r | {"obs": [0.1, 0.2]},
        r"line 2: obs has shape \[2\], the header says \[1\] \(a schema from another env",
    ),
    "not json": (None, r"line 2 is not valid JSON \(a corrupt log\)$"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_logs_are_one_line_naming_the_file(tmp_path, case):
    change, message = BAD[case]
    root = tmp_path / "log"
    with LogWriter(root, env_id="x", obs_shape=(1,), n_actions=2) as w:
        w.append(record(0) if change is None else change(record(0)))
        w.append(record(1))
    if change is None:
        (part,) = w.files
        lines = part.read_text().splitlines()
        part.write_text("\n".join([lines[0], lines[1][:-5] + "###", lines[2]]) + "\n")
    with pytest.raises(UserError, match=message) as err:
        read_log(root)
    assert "\n" not in str(err.value) and str(root) in str(err.value)


def test_a_log_of_another_env_and_an_empty_window_are_refused(tmp_path):
    write_episodes(tmp_path / "log", [[(0, 1, 0.5, 1.0, 0)]])
    with pytest.raises(UserError, match=r"the log is from test/Tiny-v0 \(obs_shape \[1\], 2 "
                       r"actions\), not env_id='rlbench/Autoscaling-v0'"):  # fmt: skip
        read_log(tmp_path / "log", env_id="rlbench/Autoscaling-v0")
    with pytest.raises(UserError, match=r"no decisions in \[1\.0, 2\.0\): the log or its window "
                       "is empty"):  # fmt: skip
        read_log(tmp_path / "log", start=1.0, end=2.0)
    with pytest.raises(UserError, match=r"nowhere: no such log"):
        read_log(tmp_path / "nowhere")
    with LogWriter(tmp_path / "log", env_id="other", obs_shape=(1,), n_actions=2) as w:
        w.append(record(0, ts=DAY + 86400))
    with pytest.raises(UserError, match=r"env_id 'other' differs from 'test/Tiny-v0'"):
        read_log(tmp_path / "log")


def test_a_log_written_back_reads_equal(tmp_path):
    """write_log (a training subset, say) writes records read_log gives back unchanged."""
    from rlbench.offline.log import write_log

    first = write_episodes(tmp_path / "a", [[(0, 1, 0.5, 1.0, 0)] * 3, [(1, 0, 0.25, -2.0, 1)] * 2])
    again = read_log(write_log(first, tmp_path / "b"))
    for name in ("ts", "step", "obs", "action", "propensity", "reward", "next_obs", "done"):
        assert np.array_equal(getattr(first, name), getattr(again, name)), name
    assert again.policy == first.policy and again.episode_ids == first.episode_ids
