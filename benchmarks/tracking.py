"""What MLflow tracking adds to a run: the same short PPO run with tracking on and off.

Two ways a run happens, both measured: ``rlbench.run.train.train(cfg)`` called in this process with
a config composed by Hydra's compose API (as a sweep's jobs run: the tracking helper process is
started by the first run and reused by the next ones), and ``rlbench-train`` as a fresh
subprocess (one run per process, as a user types it; wall time of the whole command). The store
is a temporary SQLite MLflow store created (and migrated) before timing starts, as a user's
``outputs/mlflow.db`` exists after the first run. On and off runs alternate, and each figure is
the median of the repeats, so a burst of load from other jobs hits both sides alike.

On a machine whose cores are busy with other jobs the helper process cannot run beside the job,
so on/off differences there include its CPU time; the in-process rows also report the time the
job spent blocked inside tracker calls (start, logging, end), which does not depend on load.
The in-process first run is timed after a warm-up run has imported torch and SB3, so the
helper's start (opening the store) has nothing to overlap with: the worst case of a sweep's
first job, shown for information (a fresh ``rlbench-train`` is the judged case).

Helpers are forked by the user's fork server (:mod:`rlbench.tracking.forkserver`), started by
the first command here; side by side, the same tracked command with ``RLBENCH_HELPER_IDLE=0``
starts its own helper, importing MLflow (~4 s of CPU), as every command did before. Last, a new
store: a fresh process from ``make_tracker`` to a started run on a store that does not exist
yet (it is copied from the installed template), both ways.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Row, judged, median, rlbench_train, time_call
from benchmarks.training import compose
from rlbench.tracking.forkserver import IDLE_ENV

TARGET_S = 1.0


def _overrides(tmp: Path, steps: int, enabled: bool) -> list[str]:
    return [
        "algo=ppo",
        f"train.total_steps={steps}",
        "train.progress=off",
        f"train.checkpoint_dir={tmp / 'checkpoints'}",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
        f"tracking.artifact_location={tmp / 'mlartifacts'}",
        f"tracking.enabled={str(enabled).lower()}",
    ]


def _env(own_helper: bool) -> dict[str, str]:
    """This environment; with ``own_helper``, the command starts its own helper (no server)."""
    return os.environ | ({IDLE_ENV: "0"} if own_helper else {})


def _subprocess_seconds(
    tmp: Path, steps: int, enabled: bool, tag: str, own_helper: bool = False
) -> float:
    args = [*_overrides(tmp, steps, enabled), f"hydra.run.dir={tmp / 'runs' / tag}"]
    return rlbench_train(args, tmp, _env(own_helper))[0]


# a new store, from nothing to a started run, timed inside a fresh process
NEW_STORE = """
import sys, time
t0 = time.perf_counter()
from rlbench.tracking import make_tracker
tracker = make_tracker({"uri": sys.argv[1], "artifact_location": sys.argv[2]})
tracker.start("new-store", {}, {})
t1 = time.perf_counter()
tracker.end()
print(t1 - t0)
"""


def _new_store_seconds(tmp: Path, tag: str, own_helper: bool) -> float:
    uri = f"sqlite:///{tmp / tag / 'mlflow.db'}"
    env = _env(own_helper)
    done = subprocess.run(
        [sys.executable, "-c", NEW_STORE, uri, str(tmp / tag / "mlartifacts")],
        check=True, capture_output=True, text=True, cwd=tmp, env=env,
    )  # fmt: skip
    return float(done.stdout.split()[-1])


@contextlib.contextmanager
def _blocked_time(totals: list[float]):
    """Add the seconds spent inside ``MlflowTracker`` calls to ``totals[0]`` while active."""
    from rlbench.tracking import MlflowTracker

    names = ("start", "log_metrics", "log_artifact", "log_text", "set_tags", "flush", "end")
    originals = {name: getattr(MlflowTracker, name) for name in names}

    def timed(method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                totals[0] += time.perf_counter() - start

        return wrapper

    for name, method in originals.items():
        setattr(MlflowTracker, name, timed(method))
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(MlflowTracker, name, method)


def _in_process_seconds(tmp: Path, steps: int, enabled: bool) -> tuple[float, float]:
    """Wall seconds of one ``train(cfg)`` and the seconds it was blocked in tracker calls."""
    from rlbench.run.train import train

    cfg = compose(_overrides(tmp, steps, enabled))
    blocked = [0.0]
    with _blocked_time(blocked):
        wall, _, _ = time_call(lambda: train(cfg))
    return wall, blocked[0]


def run(quick: bool = False, repeats: int | None = None) -> list[Row]:
    steps = 4096 if quick else 10_000
    repeats = repeats or (1 if quick else 3)
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY")}
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # it would override tracking.uri
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # no network calls in the measurement
    from rlbench import tracking

    try:
        with tempfile.TemporaryDirectory(prefix="rlbench-bench-") as name, contextlib.chdir(name):
            tmp = Path(name)
            _subprocess_seconds(tmp, steps, True, "create-store")  # creates and migrates it
            sub = {True: [], False: []}
            own: list[float] = []  # tracking on, each command starting its own helper
            new_store: dict[bool, list[float]] = {True: [], False: []}  # by own_helper
            for i in range(repeats):
                for enabled in (False, True):
                    sub[enabled].append(_subprocess_seconds(tmp, steps, enabled, f"{enabled}{i}"))
                own.append(_subprocess_seconds(tmp, steps, True, f"own{i}", own_helper=True))
                for alone in (False, True):
                    new_store[alone].append(_new_store_seconds(tmp, f"new{alone}{i}", alone))
            _in_process_seconds(tmp, steps, False)  # warm-up: imports torch, SB3, Hydra
            first_on, first_blocked = _in_process_seconds(tmp, steps, True)  # starts the helper
            inproc = {True: [], False: []}
            blocked = []
            for _ in range(repeats):
                for enabled in (False, True):
                    wall, waited = _in_process_seconds(tmp, steps, enabled)
                    inproc[enabled].append(wall)
                    if enabled:
                        blocked.append(waited)
            tracking.shutdown()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    off_sub, on_sub = median(sub[False]), median(sub[True])
    off_in, on_in = median(inproc[False]), median(inproc[True])
    rows = []
    own_sub = median(own)
    rows.append(
        Row(
            group="tracking",
            case=f"PPO {steps // 1000}k steps: rlbench-train subprocess, its helper forked by the "
            "fork server (rlbench/tracking/forkserver.py): wall",
            value=on_sub,
            unit="s",
            reference=f"each command starting its own helper ({IDLE_ENV}=0): {own_sub:.2f} s",
            reference_value=own_sub,
            ratio=own_sub / on_sub,
            details={"forked_seconds": sub[True], "own_helper_seconds": own},
        )
    )
    for alone in (False, True):
        how = f"own helper ({IDLE_ENV}=0)" if alone else "helper forked by the running server"
        value = median(new_store[alone])
        rows.append(
            Row(
                group="tracking",
                case=f"a new SQLite store, make_tracker() to a started run, {how}",
                value=value,
                unit="s",
                target=f"<= {TARGET_S:.0f} s" if not alone else "",
                status=judged(value <= TARGET_S) if not alone else "-",
                details={"seconds": new_store[alone]},
            )
        )
    cases = (
        ("rlbench-train subprocess, one run per process", on_sub, off_sub, sub, None, True),
        ("train(cfg) in-process, first run after a warm-up (starts the helper)", first_on,
         off_in, None, first_blocked, False),
        ("train(cfg) in-process, later runs (helper reused)", on_in, off_in, inproc,
         median(blocked), True),
    )  # fmt: skip
    for case, on, off, details, waited, judge in cases:
        overhead = on - off
        note = "" if waited is None else f"; blocked in tracker calls {waited:.2f} s"
        rows.append(
            Row(
                group="tracking",
                case=f"PPO {steps // 1000}k steps: {case}: added by MLflow",
                value=overhead,
                unit="s",
                reference=f"tracking on {on:.2f} s vs off {off:.2f} s{note}",
                target=f"<= {TARGET_S:.0f} s per run" if judge else "",
                status=judged(overhead <= TARGET_S) if judge else "-",
                details={
                    "on_seconds": details[True] if details else [on],
                    "off_seconds": details[False] if details else [off],
                    "blocked_seconds": waited,
                    "steps": steps,
                },
            )
        )
    return rows
