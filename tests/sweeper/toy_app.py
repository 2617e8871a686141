"""A seconds-long Hydra app for the sweeper tests: a known objective with intermediate values.

score(x, y) = -((x - 1)^2 + (y - 2)^2) + seed, so the optimum is (1, 2). At evaluation k of
``train.total_steps`` the job reports score - (total_steps - k): each trial improves as it
trains, and a bad region stays bad at every step, which is what pruners look for.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from rlbench.errors import UserError
from rlbench.run.trial import TrialContext
from rlbench.tracking import make_tracker


def score(x: float, y: float, seed: int) -> float:
    return -((x - 1.0) ** 2 + (y - 2.0) ** 2) + seed


@hydra.main(version_base="1.3", config_path="conf", config_name="toy")
def main(cfg: DictConfig) -> float | tuple[float, float]:
    if cfg.x > cfg.fail_above:
        raise (
            UserError(f"x={cfg.x} is above fail_above") if cfg.user_error else RuntimeError("boom")
        )
    trial = TrialContext.from_cfg(cfg)
    tracker = make_tracker(cfg.tracking)  # a child run of the sweep's parent, as train.py does
    name = f"toy-{cfg.x:.3f}-{cfg.y:.3f}"
    run_id = tracker.start(
        run_name=trial.run_name(name) if trial else name,
        params={"x": cfg.x, "y": cfg.y, "seed": cfg.seed},
        tags=trial.mlflow_tags() if trial else {},
        parent_run_id=trial.parent_run_id if trial else None,
    )
    if trial is not None:  # as train.py does: the trial knows its run, the study its objective
        trial.record_run(run_id, ["score", "x"] if cfg.multi else ["score"])
    total = int(cfg.train.total_steps)
    final = score(float(cfg.x), float(cfg.y), int(cfg.seed))
    value = final
    for k in range(1, total + 1):
        time.sleep(float(cfg.sleep))
        value = final - (total - k)
        tracker.log_metrics({"score": value}, step=k)
        if trial is not None and trial.report(k, value):
            trial.mark_pruned()
            tracker.set_tags({"pruned": "true"})
            break
    tracker.end("FINISHED")
    if cfg.pid_dir and trial is not None:  # which process ran which trial
        Path(cfg.pid_dir, f"{trial.number}-{trial.seed_index}.pid").write_text(str(os.getpid()))
    return (value, float(cfg.x)) if cfg.multi else value


if __name__ == "__main__":
    main()
