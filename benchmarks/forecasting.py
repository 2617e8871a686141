"""Forecasting's costs: training the LSTM forecaster, and what a forecast adds to a PPO run.

    python -m benchmarks.forecasting [--quick]
    python -m benchmarks --only forecasting

- Forecaster training: the whole ``rlbench-forecast train`` command (its defaults, tracking
  off) timed as a process. Target: <= 60 s on 2 cores.
- PPO with a forecast: the whole ``rlbench-train env=autoscaling algo=ppo`` command at 100,000
  steps, tracking off, with ``env.forecast=none`` and ``env.forecast=lstm`` (the forecaster just
  trained) run alternately, the same seed; the median of each. Both runs take the same gradient
  updates and environment steps; the LSTM forecasts every copy every step (8 copies in one
  numpy call) and every evaluation episode's step. Target: the forecast adds <= 20 % wall time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from benchmarks.common import Row, judged, median

TRAIN_TARGET_S = 60.0
OVERHEAD_TARGET = 1.20
BIN = Path(sys.executable).parent


def _timed(cmd: list[str]) -> float:
    """Wall seconds of ``cmd`` as a process; its output is shown only if it fails."""
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return wall


def run(quick: bool = False) -> list[Row]:
    steps = 20_000 if quick else 100_000
    repeats = 1 if quick else 2
    with tempfile.TemporaryDirectory(prefix="rlbench-forecast-bench-") as tmp:
        model = Path(tmp) / "forecaster"
        train_cmd = [str(BIN / "rlbench-forecast"), "train", "--no-tracking", "--out", str(model)]
        train_s = _timed(train_cmd)
        rows = [
            Row(
                "forecasting",
                "rlbench-forecast train (defaults), whole command",
                train_s,
                "s",
                target=f"<= {TRAIN_TARGET_S:.0f} s",
                status=judged(train_s <= TRAIN_TARGET_S),
            )
        ]
        base = [
            str(BIN / "rlbench-train"), "env=autoscaling", "algo=ppo", "tracking.enabled=false",
            f"train.total_steps={steps}", "train.progress=off", f"hydra.run.dir={tmp}/run",
        ]  # fmt: skip
        modes = {"none": [], "lstm": ["env.forecast=lstm", f"env.forecast_model={model}"]}
        walls: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(repeats):
            for mode, extra in modes.items():  # alternating, so drift hits both alike
                walls[mode].append(_timed(base + extra))
        none, lstm = median(walls["none"]), median(walls["lstm"])
        ratio = lstm / none
        rows.append(
            Row(
                "forecasting",
                f"PPO {steps // 1000}k, whole rlbench-train, env.forecast=lstm",
                lstm,
                "s",
                reference="env.forecast=none, same seed and budget",
                reference_value=none,
                ratio=none / lstm,
                target=f"forecast adds <= {OVERHEAD_TARGET - 1:.0%} wall",
                status=judged(ratio <= OVERHEAD_TARGET, quick),
                details={"walls": walls, "added": round(ratio - 1.0, 3)},
            )
        )
    return rows


if __name__ == "__main__":
    from benchmarks.common import table

    print(table(run(quick="--quick" in sys.argv)))
