"""The whole ``rlbench-train`` command against its own ``learn()``: where every second goes.

``rlbench-train env=autoscaling algo=ppo|dqn train.total_steps=100000 tracking.enabled=false``
runs as a fresh process (as a user types it), timed from outside; the run's ``timing.json``
(:mod:`rlbench.run.timing`) says how long each phase took inside it. The judged ratio is the
whole command's wall time over its ``learn`` phase (learning proper, without the periodic
validation and checkpoints it calls), target <= 1.5 (issue 21). "exit and the rest" is what no
phase covers: the Python process's start before ``train()`` is measured, its tear-down after.
With tracking off the trajectory picture is not drawn (``eval.trajectory_plot=auto``); the
same command with tracking on (a SQLite store in a temporary folder, made by the first tracked
run) is shown beside it, not judged. "learn() alone" is benchmarks/training.py's path in a
process of its own (``make_vec`` + ``build_agent`` + ``learn``, timed after torch and its
optimizer's imports): learning without the command's wrappers (finite-value checks, metrics,
progress), the stricter denominator, judged against the same target. Runs alternate between
the algorithms and tracking off and on, ``REPEATS`` of each; the figures are medians.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ONE_THREAD, Row, judged, median, rlbench_train
from rlbench.run.timing import PHASES
from rlbench.tracking.schema import TIMING_FILE

RATIO_TARGET = 1.5
REPEATS = 2
OUTSIDE_LEARN = tuple(p for p in PHASES if p != "learn")


def _one(algo: str, steps: int, tmp: Path, tag: str, tracked: bool) -> dict[str, float]:
    """One whole command: its wall seconds and the phases it recorded."""
    run_dir = tmp / tag
    tracking = (
        [f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
         f"tracking.artifact_location={tmp / 'mlartifacts'}"]
        if tracked
        else ["tracking.enabled=false"]
    )  # fmt: skip
    wall, _ = rlbench_train(
        ["env=autoscaling", f"algo={algo}", f"train.total_steps={steps}", *tracking,
         "train.progress=off", f"hydra.run.dir={run_dir}",
         f"train.checkpoint_dir={tmp / 'checkpoints'}"],
        tmp,
    )  # fmt: skip
    return {"whole": wall, **json.loads((run_dir / TIMING_FILE).read_text())}


def _learn_alone(algo: str, steps: int) -> float:
    """Seconds of benchmarks/training.py's build + learn in a fresh process, imports excluded."""
    code = (
        "import torch; torch.set_num_threads(1); "
        "torch.optim.Adam([torch.zeros(1, requires_grad=True)]); "  # imports torch._dynamo
        "from benchmarks.training import train_ours; "
        f"print(train_ours({algo!r}, 0, {steps})[0])"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, cwd=root, env=os.environ | ONE_THREAD)  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[Row]:
    steps = 20_000 if quick else 100_000
    repeats = 1 if quick else REPEATS
    found: dict[tuple[str, bool], list[dict[str, float]]] = {
        (algo, tracked): [] for algo in ("ppo", "dqn") for tracked in (False, True)
    }
    alone: dict[str, list[float]] = {"ppo": [], "dqn": []}
    with tempfile.TemporaryDirectory(prefix="rlbench-whole-") as name:
        tmp = Path(name)
        for i in range(repeats):
            for algo, seconds in alone.items():
                seconds.append(_learn_alone(algo, steps))
                print(f"  {algo} learn() alone {i}: {seconds[-1]:.1f} s", flush=True)
            for (algo, tracked), runs in found.items():
                runs.append(_one(algo, steps, tmp, f"{algo}-{tracked}-{i}", tracked))
                said = "on" if tracked else "off"
                print(f"  {algo} tracking {said} {i}: whole {runs[-1]['whole']:.1f} s, "
                      f"learn {runs[-1]['learn']:.1f} s", flush=True)  # fmt: skip
    on_rows, off_rows = [], []
    for algo in ("ppo", "dqn"):
        name = f"{algo.upper()} {steps // 1000}k"
        on, off = found[algo, True], found[algo, False]
        on_rows.append(
            _ratio_row(
                f"{name}, tracking on: whole / its learn()",
                median(r["whole"] / r["learn"] for r in on),
                f"whole {median(r['whole'] for r in on):.1f} s, learn "
                f"{median(r['learn'] for r in on):.1f} s (picture drawn, run recorded)",
                {"runs": on},
            )
        )
        label = f"{name}, tracking off"
        whole = median(r["whole"] for r in off)
        off_rows += [
            _ratio_row(
                f"{label}: whole rlbench-train / learn() alone",
                whole / median(alone[algo]),
                f"whole {whole:.1f} s, learn() alone {median(alone[algo]):.1f} s",
                {"alone": alone[algo]},
                quick,
            ),
            _ratio_row(
                f"{label}: whole rlbench-train / its learn()",
                median(r["whole"] / r["learn"] for r in off),
                f"whole {whole:.1f} s, learn {median(r['learn'] for r in off):.1f} s",
                {"runs": off},
                quick,
            ),
        ]
        for phase in OUTSIDE_LEARN:
            off_rows.append(_share_row(f"{label}: {phase}", median(r[phase] for r in off), whole))
        rest = median(r["whole"] - sum(r[p] for p in PHASES) for r in off)
        off_rows.append(_share_row(f"{label}: exit and the rest", rest, whole))
    return on_rows + off_rows


def _ratio_row(
    case: str, ratio: float, reference: str, details: dict, quick: bool | None = None
) -> Row:
    """A whole/learn ratio; judged against the target unless ``quick`` is None (shown only)."""
    judge = {} if quick is None else {
        "target": f"<= {RATIO_TARGET}x", "status": judged(ratio <= RATIO_TARGET, quick)
    }  # fmt: skip
    return Row("whole-command", case, ratio, "x", reference=reference, details=details, **judge)


def _share_row(case: str, seconds: float, whole: float) -> Row:
    return Row("whole-command", case, seconds, "s", reference=f"{seconds / whole:.0%} of the whole")


if __name__ == "__main__":
    from benchmarks.common import table

    print(table(run(quick="--quick" in sys.argv)))
