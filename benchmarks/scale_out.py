"""Beyond one machine: workers sharing one PostgreSQL study and one MLflow tracking server.

Starts a PostgreSQL server (Debian's package, fsync on) and ``mlflow server --app-name basic-auth``
(PostgreSQL backend, artifacts proxied to a local folder, 2 worker processes) on loopback ports,
with the test kit (``tests/reliability/scale_out_kit.py``), then measures, side by side in one run:

- throughput: the same study of CPU-bound trials (Q-learning, ~5 s of CPU each, tracking on) run
  by 1 worker process, then by 2 at once; trials per minute and their ratio (target >= 1.6x on 2
  cores). The servers run on the same machine: their CPU share of the 2-worker run is reported.
- shared study: 4 worker processes run the same sweep command (``search=threshold``, 40 trials in
  total); one is killed with -9 inside a trial. Targets: 40 complete, 0 lost (claimed but not
  complete), 0 duplicates, 0 runs left RUNNING, the killed trial retried by heartbeat.
- submitit: a sweep of 2 trials through submitit's local executor (``cluster=slurm_local``, each
  trial a process of its own) with tracking on the server; target 2 complete, 2 runs FINISHED.
- writers: 8 processes log runs to the MLflow server at once (params, 20 metric batches, an
  artifact, end); target 0 errors.

``python -m benchmarks --only scale_out`` (``--quick``: 2 workers x 8 trials, 4 writers).
Skips (no rows) where PostgreSQL cannot start.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from benchmarks.common import Row, judged

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "tests" / "reliability"
COMMIT = "5ca1e0" + "0" * 34
WRITER = r"""
import os, sys, time
from mlflow.tracking import MlflowClient
from mlflow.entities import Metric, Param
client, errors, n = MlflowClient(sys.argv[1]), 0, int(sys.argv[2])
exp = client.get_experiment_by_name("writers")
exp_id = exp.experiment_id if exp else None
if exp_id is None:
    try:
        exp_id = client.create_experiment("writers")
    except Exception:
        exp_id = client.get_experiment_by_name("writers").experiment_id
t0, requests = time.perf_counter(), 0
for i in range(n):
    try:
        run = client.create_run(exp_id).info.run_id
        client.log_batch(run, params=[Param(f"p{k}", str(k)) for k in range(30)]); requests += 2
        for step in range(20):
            now = int(time.time() * 1000)
            batch = [Metric(f"m{k}", float(step), now, step) for k in range(5)]
            client.log_batch(run, metrics=batch)
            requests += 1
        client.log_text(run, "x" * 2000, "notes.txt"); client.set_terminated(run); requests += 2
    except Exception as err:
        errors += 1
        print("error:", str(err).splitlines()[0], file=sys.stderr)
print(errors, requests, time.perf_counter() - t0)
"""


def _kit():
    if str(KIT) not in sys.path:
        sys.path.insert(0, str(KIT))
    import reliability_kit
    import scale_out_kit

    return scale_out_kit, reliability_kit


def _env(**extra: str) -> dict[str, str]:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"} | extra
    for key in ("HYDRA_FULL_ERROR", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    return env | {"RLBENCH_TEST_COMMIT": COMMIT}


def _worker(cwd: Path, args: list[str], log: Path) -> subprocess.Popen:
    _, rk = _kit()
    cwd.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, str(rk.PAUSED_TRAIN), *args], cwd=cwd, env=_env(),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _postgres_cpu(pg) -> float:
    """CPU seconds of this PostgreSQL server so far (the postmaster and its backends)."""
    import psutil

    total = 0.0
    with contextlib.suppress(OSError, ValueError, psutil.Error):
        pid = int((pg.root / "data" / "postmaster.pid").read_text().split()[0])
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        ended = root.cpu_times()  # backends of connections already closed
        total += ended.children_user + ended.children_system
    return total


def _throughput(tmp: Path, pg, server, workers: int, trials: int, tag: str) -> dict:
    args = [
        "-m", "search=qlearning", "debug=fast", "train.total_steps=180000", "train.eval_every=0",
        "train.checkpoint_every=0", "train.progress=off", "++eval.trajectory_plot=false",
        "hydra.sweeper.pruner.name=none", f"hydra.sweeper.n_trials={trials}",
        f"hydra.sweeper.study_name=throughput-{tag}", f"hydra.sweeper.storage={pg.url('optuna')}",
        f"tracking.uri={server.uri_with()}", "tracking.experiment=throughput",
    ]  # fmt: skip
    cpu0, pg0 = server.cpu_seconds(), _postgres_cpu(pg)
    t0 = time.perf_counter()
    procs = [_worker(tmp / f"{tag}-{i}", args, tmp / f"{tag}-{i}.txt") for i in range(workers)]
    codes = [p.wait(timeout=1800) for p in procs]
    wall = time.perf_counter() - t0
    servers_cpu = server.cpu_seconds() - cpu0 + _postgres_cpu(pg) - pg0
    return {
        "wall_s": wall, "codes": codes, "trials_per_min": 60.0 * trials / wall,
        "servers_cpu_s": servers_cpu, "servers_share": servers_cpu / (wall * (os.cpu_count() or 1)),
    }  # fmt: skip


def _shared_study(tmp: Path, pg, server, workers: int, trials: int) -> dict:
    import optuna
    from mlflow.tracking import MlflowClient

    kit, rk = _kit()
    args = [
        "-m", "search=threshold", "debug=fast", "++eval.trajectory_plot=false",
        "train.progress=off", f"hydra.sweeper.n_trials={trials}", "hydra.sweeper.study_name=four",
        f"hydra.sweeper.storage={pg.url('optuna')}", "hydra.sweeper.heartbeat_interval=2",
        "hydra.sweeper.grace_period=6", f"tracking.uri={server.uri_with()}",
        "tracking.experiment=four",
    ]  # fmt: skip
    peak, stop = [0], threading.Event()

    def sample() -> None:  # the most connections PostgreSQL saw at once
        while not stop.wait(0.5):
            with contextlib.suppress(Exception):
                peak[0] = max(peak[0], pg.connections())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    (tmp / "four-0").mkdir(parents=True)
    victim, marker = rk.start_paused(
        tmp / "four-0", args, "trial:3", tmp / "four-0.txt", RLBENCH_TEST_COMMIT=COMMIT
    )
    others = [_worker(tmp / f"four-{i}", args, tmp / f"four-{i}.txt") for i in range(1, workers)]
    rk.wait_for(marker, victim, tmp / "four-0.txt", timeout=900)
    rk.kill_9(victim, with_helper=False)
    codes = [p.wait(timeout=1800) for p in others]
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    study = optuna.load_study(study_name="four", storage=pg.url("optuna", driver=kit.PSYCOPG))
    states = Counter(t.state.name for t in study.trials)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    configs = Counter(tuple(sorted(t.params.items())) for t in complete)
    os.environ["MLFLOW_TRACKING_USERNAME"] = kit.WORKER_USER
    os.environ["MLFLOW_TRACKING_PASSWORD"] = kit.WORKER_PASSWORD
    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name("four")
    runs = client.search_runs([exp.experiment_id], max_results=5000) if exp else []
    return {
        "wall_s": wall, "codes": codes, "complete": len(complete),
        "lost": states["RUNNING"] + states["WAITING"],
        "duplicates": sum(n - 1 for n in configs.values()),
        "retried": sum("retry_history" in t.system_attrs for t in complete),
        "states": dict(states), "runs_running": sum(r.info.status == "RUNNING" for r in runs),
        "run_statuses": dict(Counter(r.info.status for r in runs)),
        "peak_connections": peak[0],
    }  # fmt: skip


def _submitit(tmp: Path, pg, server, trials: int) -> dict:
    """``cluster=slurm_local``: each trial a process of its own through submitit's local
    executor, on the shared study, tracked on the server (the test runs one, tracking off)."""
    import optuna
    from mlflow.tracking import MlflowClient

    kit, rk = _kit()
    cwd = tmp / "submitit"
    cwd.mkdir(parents=True)
    args = [
        "-m", "search=threshold", "cluster=slurm_local", "debug=fast", "train.progress=off",
        "++eval.trajectory_plot=false", "train.checkpoint_every=0",
        "tracking.experiment=submitit", "hydra.sweeper.study_name=submitit",
        f"hydra.sweeper.n_trials={trials}",
    ]  # fmt: skip
    env = _env(RLBENCH_OPTUNA_STORAGE=pg.url("optuna"))  # _env drops MLFLOW_TRACKING_URI
    env["MLFLOW_TRACKING_URI"] = server.uri_with()
    t0 = time.perf_counter()
    with open(tmp / "submitit.txt", "w") as out:
        code = subprocess.run(
            [sys.executable, str(rk.PAUSED_TRAIN), *args], cwd=cwd, env=env, stdout=out,
            stderr=subprocess.STDOUT, timeout=1800,
        ).returncode  # fmt: skip
    wall = time.perf_counter() - t0
    study = optuna.load_study(study_name="submitit", storage=pg.url("optuna", driver=kit.PSYCOPG))
    os.environ["MLFLOW_TRACKING_USERNAME"] = kit.WORKER_USER
    os.environ["MLFLOW_TRACKING_PASSWORD"] = kit.WORKER_PASSWORD
    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name("submitit")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    children = [r for r in runs if r.data.tags.get("rlbench.sweep.role") != "parent"]
    return {
        "wall_s": wall, "code": code,
        "complete": sum(t.state.name == "COMPLETE" for t in study.trials),
        "children_finished": sum(r.info.status == "FINISHED" for r in children),
        "jobs": len(list(cwd.rglob(".submitit/*/*_log.out"))),
    }  # fmt: skip


def _writers(tmp: Path, server, n: int, runs_each: int) -> dict:
    kit, _ = _kit()
    env = _env(
        MLFLOW_TRACKING_USERNAME=kit.WORKER_USER, MLFLOW_TRACKING_PASSWORD=kit.WORKER_PASSWORD
    )
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, server.uri, str(runs_each)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(n)
    ]  # fmt: skip
    outs = [p.communicate(timeout=1800) for p in procs]
    wall = time.perf_counter() - t0
    errors, requests = 0, 0
    for (out, err), proc in zip(outs, procs, strict=True):
        lines = out.strip().splitlines()  # MLflow prints "View run ..." lines before ours
        fields = lines[-1].split() if lines else []
        if proc.returncode != 0 or len(fields) != 3:
            errors += runs_each
            print(err[-500:], file=sys.stderr)
            continue
        errors += int(fields[0])
        requests += int(fields[1])
    return {"wall_s": wall, "errors": errors, "requests": requests, "req_per_s": requests / wall}


def run(quick: bool = False) -> list[Row]:
    kit, _ = _kit()
    reason = kit.unavailable()
    if reason:
        print(f"   scale_out skipped: {reason}")
        return []
    tmp = Path(tempfile.mkdtemp(prefix="rlbench-scale-out-"))
    pg = kit.Postgres.start(durable=True)
    server = None
    try:
        server = kit.MlflowServer.start(pg, tmp / "mlflow", workers=2, timeout=400)
        rows = []
        trials = 4 if quick else 8
        one = _throughput(tmp, pg, server, 1, trials, "one")
        two = _throughput(tmp, pg, server, 2, trials, "two")
        ratio = two["trials_per_min"] / one["trials_per_min"]
        rows.append(Row(
            "scale_out", f"trials/min, 2 workers ({trials} Q-learning trials of ~5 s CPU)",
            two["trials_per_min"], "trials/min", reference="1 worker",
            reference_value=one["trials_per_min"], ratio=ratio, target=">= 1.6x on 2 cores",
            status=judged(ratio >= 1.6 and set(one["codes"] + two["codes"]) == {0}, quick),
            details={"one": one, "two": two, "cores": os.cpu_count()},
        ))  # fmt: skip
        workers, total = (2, 8) if quick else (4, 40)
        shared = _shared_study(tmp, pg, server, workers, total)
        ok = (
            shared["complete"] == total and shared["lost"] == 0 and shared["duplicates"] == 0
            and shared["runs_running"] == 0 and shared["retried"] >= 1
            and set(shared["codes"]) == {0}
        )  # fmt: skip
        rows.append(Row(
            "scale_out", f"{workers} workers, one study of {total} trials, one killed -9",
            shared["complete"], "trials complete",
            target=f"{total} complete, 0 lost, 0 duplicates, 0 RUNNING, kill retried",
            status=judged(ok, quick), details=shared,
        ))  # fmt: skip
        sub = _submitit(tmp, pg, server, 2)
        ok = sub["code"] == 0 and sub["complete"] == sub["children_finished"] == 2
        rows.append(Row(
            "scale_out", "sweep through submitit's local executor (cluster=slurm_local), 2 trials",
            sub["complete"], "trials complete",
            target="2 complete, 2 child runs FINISHED on the server", status=judged(ok, quick),
            details=sub,
        ))  # fmt: skip
        n = 4 if quick else 8
        writers = _writers(tmp, server, n, 5 if quick else 10)
        rows.append(Row(
            "scale_out", f"{n} concurrent writers on the MLflow server", writers["errors"],
            "errors", target="0 errors", status=judged(writers["errors"] == 0, quick),
            details=writers,
        ))  # fmt: skip
        rows.append(Row(
            "scale_out", f"peak PostgreSQL connections, {workers} workers + MLflow server",
            shared["peak_connections"], "connections",
            details={"max_connections": pg.sql("SHOW max_connections")[0][0]},
        ))  # fmt: skip
        return rows
    finally:
        if server is not None:
            server.stop()
        pg.stop()
