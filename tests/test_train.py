"""``rlbench-train`` end to end: real subprocesses against a temporary MLflow store."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SCORE_LINE = re.compile(r"^score: (\S+)\s+steps: (\d+)\s+mlflow run: (\w+)", re.M)
ALGOS = ["random", "static", "threshold", "qlearning", "ppo", "dqn"]


def rlbench_train(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [str(BIN / "rlbench-train"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def artifact_paths(client, run_id: str, path: str = "") -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path or None):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


@pytest.mark.slow
def test_each_algorithm_trains_evaluates_and_tracks_one_finished_run(mlflow_store, tmp_path):
    proc = rlbench_train(
        "-m", f"algo={','.join(ALGOS)}", "debug=fast", "eval.trajectory_plot=true",
        "env.load=spike", "seed=3",
        *mlflow_store.overrides(), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = {m[2]: (float(m[0]), int(m[1])) for m in SCORE_LINE.findall(proc.stdout)}
    assert len(printed) == len(ALGOS), proc.stdout
    client = mlflow_store.client()
    runs = mlflow_store.runs()
    assert sorted(r.data.params["algo.name"] for r in runs) == sorted(ALGOS)
    for run in runs:
        algo = run.data.params["algo.name"]
        assert run.info.status == "FINISHED", algo
        assert run.data.params["env.load"] == "spike"
        assert run.data.params["seed"] == "3"
        score, steps = printed[run.info.run_id]
        assert math.isclose(run.data.metrics["test/mean_return"], score, rel_tol=1e-5), algo
        assert run.data.metrics["train/total_steps"] == steps >= 2048
        for key in ("test/std_return", "test/cost", "test/sla_violation", "test/utilisation"):
            assert key in run.data.metrics, (algo, key)
        # the learning curve is validation only: no point of it is the test score
        curve = client.get_metric_history(run.info.run_id, "val/mean_return")
        assert max((m.step for m in curve), default=0) < steps, algo
        assert curve or algo in ("random", "static", "threshold"), algo  # rules do not learn
        assert not any(k.startswith("eval/") for k in run.data.metrics), algo
        tags = run.data.tags
        assert tags["seed"] == "3" and tags["device"] == "cpu", tags
        assert re.fullmatch(r"[0-9a-f]{40}", tags["git.commit"]), tags
        assert tags["git.dirty"] in ("true", "false")
        assert tags["version.torch"].startswith("2.13") and "version.sb3" in tags
        assert "algo=" in tags["hydra.overrides"], tags
        files = artifact_paths(client, run.info.run_id)
        suffix = {"qlearning": ".npz"}.get(algo)
        models = [f for f in files if f.startswith("model/model.")]
        assert len(models) == 1, (algo, files)
        if suffix:
            assert models[0].endswith(suffix)
        for expected in ("config.yaml", "eval/eval_episodes.csv", "eval/trajectory.png"):
            assert expected in files, (algo, expected, files)
        # where the command's time went (benchmarks/whole_command.py reads the same numbers)
        assert run.data.metrics["time/learn_s"] > 0 and run.data.metrics["time/startup_s"] >= 0
        assert run.data.metrics["time/validation_s"] > 0 or algo not in ("ppo", "dqn"), algo
    # the process's start-up is counted once, by the grid's first job
    assert sum(r.data.metrics["time/startup_s"] > 0 for r in runs) == 1


def test_an_untracked_run_says_where_its_time_went_and_skips_the_picture(tmp_path):
    """tracking off: timing.json beside the outputs, every phase timed; the trajectory CSV but
    not its picture (eval.trajectory_plot=auto draws it for the run's page only)."""
    from rlbench.run.timing import PHASES

    out = tmp_path / "run"
    proc = rlbench_train(
        "algo=qlearning", "train.total_steps=2048", "train.eval_every=1024", "eval.episodes=2",
        "eval.periodic_episodes=1", "train.progress=off", "tracking.enabled=false",
        f"hydra.run.dir={out}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    timing = json.loads((out / "timing.json").read_text())
    assert list(timing) == list(PHASES) and all(v >= 0 for v in timing.values()), timing
    assert timing["startup"] > 0 and timing["learn"] > 0 and timing["validation"] > 0, timing
    assert (out / "trajectory.csv").is_file() and not (out / "trajectory.png").exists()


@pytest.mark.slow
def test_grid_multirun_makes_one_run_per_combination(mlflow_store, tmp_path):
    proc = rlbench_train(
        "-m", "algo=threshold,qlearning", "seed=0,1", "debug=fast", *mlflow_store.overrides(),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = mlflow_store.runs()
    combos = sorted((r.data.params["algo.name"], r.data.params["seed"]) for r in runs)
    assert combos == [
        ("qlearning", "0"),
        ("qlearning", "1"),
        ("threshold", "0"),
        ("threshold", "1"),
    ]
    assert {r.info.status for r in runs} == {"FINISHED"}


BAD_INPUTS = {
    "unknown algorithm": (["algo=sarsa"], "unknown algo option 'sarsa'"),
    "misspelt algorithm": (["algo=thresold"], "did you mean 'threshold'"),
    "unknown env": (["env=k8s"], "unknown env option 'k8s'"),
    "unknown load pattern": (["env.load=tsunami"], "load must be one of"),
    "negative total_steps": (["train.total_steps=-5"], "train.total_steps must be a positive"),
    "misspelt key": (["train.totl_steps=5"], "did you mean 'train.total_steps'"),
    "dqn on a continuous action space": (
        ["env=gym", "env.id=Pendulum-v1", "algo=dqn"],
        "dqn needs a discrete action space",
    ),
    "trajectory_plot not a choice": (
        ["eval.trajectory_plot=maybe"],
        "eval.trajectory_plot must be auto, true or false, got 'maybe'",
    ),
    "unreachable tracking server": (
        ["tracking.uri=http://127.0.0.1:9"],
        "http://127.0.0.1:9 is unreachable",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_line_and_nonzero_exit(case, mlflow_store, tmp_path):
    overrides, message = BAD_INPUTS[case]
    proc = rlbench_train(*mlflow_store.overrides(), *overrides, "debug=fast", cwd=tmp_path)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert all(r.info.status != "RUNNING" for r in mlflow_store.runs())


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(mlflow_store, tmp_path):
    args = [
        "algo=ppo", "algo.n_steps=128", "train.total_steps=20000", "train.checkpoint_every=4096",
        "train.eval_every=0", "eval.episodes=2", "env.horizon=64", *mlflow_store.overrides(),
    ]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(
        [str(BIN / "rlbench-train"), *args], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    checkpoints = tmp_path / "outputs" / "checkpoints"
    deadline = time.monotonic() + 120
    while not list(checkpoints.glob("*/state.json")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    state_files = list(checkpoints.glob("*/state.json"))
    assert state_files, "no checkpoint was written before the deadline"
    saved_steps = json.loads(state_files[0].read_text())["steps"]

    resumed = rlbench_train(*args, "resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    match = re.search(r"resuming from .* at step (\d+)", resumed.stderr + resumed.stdout)
    assert match and int(match[1]) == saved_steps, resumed.stderr[-2000:]  # the last checkpoint
    assert 0 < saved_steps < 20000
    runs = mlflow_store.runs()
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert "error" not in runs[0].data.tags  # the kill's error went with the kill
    # PPO learns in rollouts of n_steps 128 x 8 copies = 1024 steps: 20 of them pass 20000,
    # the same total as an uninterrupted run (steps before the kill are not counted twice)
    assert runs[0].data.metrics["train/total_steps"] == 20 * 1024
    assert runs[0].data.tags["rlbench.resumed_from_step"] == match[1]
    assert not state_files[0].parent.exists(), "a finished run keeps no checkpoint behind"


def test_progress_past_the_budget_ends_at_the_steps_reached(caplog):
    """PPO collects whole rollouts: a 20000-step budget reaches 20480. The bar's total and the
    log's must be the steps reached (tqdm dropped a bar past its total; "102%" was shown)."""
    import logging

    from rlbench.run.progress import Progress

    bar = Progress(20000, "ppo", "bar")
    for done in (2048, 18432, 20480):
        bar.update(done, episode_return=-1.0)
    assert (bar._bar.n, bar._bar.total) == (20480, 20480)
    assert bar._bar.postfix.endswith("asked=20000")
    bar.close()

    caplog.set_level(logging.INFO, logger="rlbench")
    lines = Progress(2000, "cql", "log")
    lines.update(1024)
    lines.update(2048)
    assert "cql: 1024/2000 steps (51%" in caplog.messages[0]
    assert "cql: 2048/2048 steps (100%" in caplog.messages[-1]
    assert "2000 asked, rounded up to whole rollouts/batches" in caplog.messages[-1]


def test_a_run_past_its_budget_logs_no_share_above_100(tmp_path):
    proc = rlbench_train(
        "debug=fast", "algo=ppo", "train.total_steps=3000", "train.progress=log",
        "tracking.enabled=false", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = int(re.search(r"^score: \S+\s+steps: (\d+)", proc.stdout, re.M).group(1))
    assert steps > 3000  # whole rollouts of 4 copies x algo.n_steps
    shares = [int(s) for s in re.findall(r"steps \((\d+)%", proc.stdout + proc.stderr)]
    assert shares and max(shares) == 100, proc.stdout + proc.stderr
    assert f"{steps}/{steps} steps (100%" in proc.stdout + proc.stderr
