"""Helpers for the reliability tests: ``rlbench-train`` in-process, or as a process to kill."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAUSED_TRAIN = HERE / "paused_train.py"
BIN = Path(sys.executable).parent


def child_env(**extra: str) -> dict[str, str]:
    """The environment of an ``rlbench-train`` subprocess: one thread, no full tracebacks."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"} | extra
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error: ")]


def optuna_states(db: Path) -> list[tuple[int, str]]:
    """``(number, state)`` of every trial in a SQLite Optuna storage (read without Optuna)."""
    try:
        with sqlite3.connect(db) as con:
            return con.execute("select number, state from trials order by number").fetchall()
    except sqlite3.Error:
        return []


def helpers_of(pid: int) -> list[int]:
    """The MLflow helper processes of ``pid`` (Linux): the processes whose stdin is a pipe
    ``pid`` writes to (its own helper is its child; a forked one is the fork server's)."""
    pipes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if int(fd.name) > 2 and (target := os.readlink(fd)).startswith("pipe:"):
                pipes.add(target)  # not its stdin/stdout/stderr: those its parent shares
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != pid:
            with contextlib.suppress(OSError):
                if os.readlink(proc / "fd" / "0") in pipes:
                    found.append(int(proc.name))
    return found


def start_paused(
    cwd: Path, args: list[str], moment: str, logs: Path, **env_extra: str
) -> tuple[subprocess.Popen, Path]:
    """``rlbench-train *args`` that stops at ``moment`` (see ``paused_train.py``); its marker."""
    marker = cwd / f"paused-{moment.replace(':', '-')}"
    marker.unlink(missing_ok=True)
    env = child_env(RLBENCH_TEST_PAUSE=moment, RLBENCH_TEST_PAUSE_MARKER=str(marker), **env_extra)
    with open(logs, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(PAUSED_TRAIN), *args],
            cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return proc, marker


def wait_for(marker: Path, proc: subprocess.Popen, logs: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before pausing:\n{logs.read_text()}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"never reached the pause:\n{logs.read_text()[-3000:]}")
        time.sleep(0.05)


def kill_9(proc: subprocess.Popen, *, with_helper: bool) -> None:
    """``kill -9`` the process group; with ``with_helper`` its MLflow helper too (which runs
    in a session of its own, so that otherwise it survives to end the open runs KILLED)."""
    helpers = helpers_of(proc.pid) if with_helper else []
    for pid in helpers:
        os.kill(pid, signal.SIGKILL)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for pid in helpers:  # gone, or a zombie waiting for init to reap it
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False
