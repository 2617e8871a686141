"""Time to build a report over 500 finished runs.

Makes a temporary MLflow SQLite store holding 500 synthetic finished training runs (5
algorithms x 5 load patterns x 20 seeds), each written through ``MlflowClient.log_batch`` as
rlbench-train would leave it: the params ``algo.name``, ``env.name``, ``env.load``, ``seed``, a
run-key tag, a ``val/mean_return`` learning curve (10 points), the score ``test/mean_return``,
final ``test/cost`` and ``test/sla_violation``, and an ``eval/trajectory.csv`` artifact. Then times
``rlbench.results.report.build_report`` with ``rlbench-report``'s defaults (2000 bootstrap
resamples, the report logged back to MLflow). Building the store is not timed: its database is
written on a RAM disk (``/dev/shm``, where there is one; SQLite's per-commit syncs make 2,000
writes take over a minute on an ordinary disk) and copied next to the artifacts before timing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import Row, judged, time_call

ALGOS = {"ppo": -200.0, "dqn": -215.0, "qlearning": -240.0, "threshold": -241.0, "random": -1871.0}
LOADS = ("steady", "sine_curve", "sinusoidal", "spike", "poisson")
CURVE_STEPS = tuple(range(10_000, 100_001, 10_000))
TARGET_S = 15.0


def _trajectory(path: Path) -> Path:
    t = np.arange(1, 289)
    influx = 2000 + 1500 * np.sin(2 * np.pi * t / 288)
    lines = ["step,action,reward,influx,capacity,instances,queue"]
    lines += [
        f"{s},1,-0.1,{x:.1f},2000,20,{max(0.0, x - 2000):.1f}"
        for s, x in zip(t, influx, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_store(uri: str, artifacts: Path, seeds: int, tmp: Path) -> int:
    """Fill a new store with ``len(ALGOS) * len(LOADS) * seeds`` finished runs."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from rlbench.tracking import schema

    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("rlbench", artifact_location=artifacts.as_uri())
    rng = np.random.default_rng(0)
    trajectory = _trajectory(tmp / "trajectory.csv")
    count = 0
    for algo, centre in ALGOS.items():
        for load in LOADS:
            for seed in range(seeds):
                run = client.create_run(exp_id, run_name=f"{algo}-autoscaling-{load}-s{seed}")
                run_id = run.info.run_id
                score = centre + 20.0 * rng.standard_normal()
                curve = score * (1.0 + 0.5 * np.linspace(1.0, 0.0, len(CURVE_STEPS)))
                metrics = [Metric(schema.CURVE_METRIC, float(v), 0, s)
                           for v, s in zip(curve, CURVE_STEPS, strict=True)]  # fmt: skip
                final = {schema.SCORE_METRIC: score, schema.held_out_metric("cost"): -score / 3.0,
                         schema.held_out_metric("sla_violation"): 0.1}  # fmt: skip
                metrics += [Metric(k, float(v), 0, CURVE_STEPS[-1]) for k, v in final.items()]
                params = {"algo.name": algo, "env.name": "autoscaling", "env.load": load,
                          "seed": seed, "env.id": "rlbench/Autoscaling-v0"}  # fmt: skip
                tags = [RunTag(schema.RUN_KEY_TAG, f"{algo}-{load}-{seed}")]
                client.log_batch(
                    run_id,
                    metrics=metrics,
                    params=[Param(k, str(v)) for k, v in params.items()],
                    tags=tags,
                )
                client.log_artifact(run_id, str(trajectory), schema.EVAL_DIR)
                client.set_terminated(run_id, "FINISHED")
                count += 1
    return count


def run(quick: bool = False) -> list[Row]:
    from rlbench.results.report import ReportSettings, build_report

    seeds = 4 if quick else 20
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        with tempfile.TemporaryDirectory(prefix="rlbench-bench-report-") as name:
            tmp = Path(name)
            uri = f"sqlite:///{tmp / 'mlflow.db'}"
            shm = Path("/dev/shm")
            with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as fast:
                db = Path(fast) / "mlflow.db"
                setup_s, _, runs = time_call(
                    lambda: make_store(f"sqlite:///{db}", tmp / "mlartifacts", seeds, tmp)
                )
                shutil.copyfile(db, tmp / "mlflow.db")
            settings = ReportSettings(
                experiment="rlbench", tracking_uri=uri, output_dir=tmp / "report", reps=2000
            )
            wall, cpu, path = time_call(lambda: build_report(settings))
            assert path.is_file()
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    return [
        Row(
            group="report",
            case=f"build_report over {runs} finished runs",
            value=wall,
            unit="s",
            cpu_seconds=cpu,
            reference=f"store of {runs} runs built in {setup_s:.0f} s (not timed)",
            target=f"<= {TARGET_S:.0f} s (500 runs)",
            status=judged(wall <= TARGET_S, quick),
            details={"runs": runs, "setup_seconds": setup_s},
        )
    ]
