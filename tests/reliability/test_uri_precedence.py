"""Which MLflow store a command uses: the command line or a preset, then ``MLFLOW_TRACKING_URI``,
then ``sqlite:///outputs/mlflow.db``; and the run records which one it was.

Real processes for every command: ``rlbench-train`` (single run, a preset, an Optuna sweep and its
parent run), ``rlbench-report``, ``rlbench-verify``, ``rlbench-registry``, ``+reproduce``, and the
analysis functions. The environment always names another store than the command line, so a
command that let the environment win would write or read the wrong one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from reliability_kit import child_env

pytestmark = pytest.mark.slow

TRAIN = "from rlbench.run.main import main; main()"
REPORT = "from rlbench.results.cli import main; main()"
FAST = ["debug=fast", "++eval.trajectory_plot=false", "train.checkpoint_every=0"]
SOURCE = "rlbench.tracking_uri_source"


def run(
    code: str, *args: str, cwd: Path, env_uri: str | None = None
) -> subprocess.CompletedProcess:
    env = child_env()
    if env_uri is not None:
        env["MLFLOW_TRACKING_URI"] = env_uri
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip


def runs_in(db: Path) -> list:
    from mlflow.tracking import MlflowClient

    if not db.is_file():
        return []
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def _migrated(template: Path, *dbs: Path) -> None:
    """Copies of the session's migrated store: each new store would cost seconds of migration."""
    for db in dbs:
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, db)


def test_train_uses_cli_then_preset_then_environment_then_default(tmp_path, mlflow_template):
    env_db, cli_db, preset_db = (tmp_path / n / "mlflow.db" for n in ("env", "cli", "preset"))
    _migrated(mlflow_template, env_db, cli_db, preset_db, tmp_path / "outputs" / "mlflow.db")
    env_uri = f"sqlite:///{env_db}"

    proc = run(TRAIN, *FAST, f"tracking.uri=sqlite:///{cli_db}", cwd=tmp_path, env_uri=env_uri)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r.data.tags[SOURCE] for r in runs_in(cli_db)] == ["cli"]
    assert runs_in(env_db) == []  # the environment did not win

    extra = tmp_path / "extra" / "experiment"
    extra.mkdir(parents=True)
    (extra / "mine.yaml").write_text(
        f"# @package _global_\ntracking:\n  uri: sqlite:///{preset_db}\n"
    )
    proc = run(TRAIN, "--config-dir", str(tmp_path / "extra"), "experiment=mine", *FAST,
               cwd=tmp_path, env_uri=env_uri)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r.data.tags[SOURCE] for r in runs_in(preset_db)] == ["preset"]
    assert runs_in(env_db) == []

    proc = run(TRAIN, *FAST, cwd=tmp_path, env_uri=env_uri)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (from_env,) = runs_in(env_db)
    assert from_env.data.tags[SOURCE] == "env"
    assert from_env.data.params["tracking.uri"] == env_uri  # the store it really used

    proc = run(TRAIN, *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (default,) = runs_in(tmp_path / "outputs" / "mlflow.db")
    assert default.data.tags[SOURCE] == "default"


def test_a_sweep_and_its_parent_run_use_the_command_line_store(tmp_path):
    env_db, cli_db = tmp_path / "env" / "mlflow.db", tmp_path / "cli" / "mlflow.db"
    proc = run(
        TRAIN, "-m", "search=threshold", "hydra.sweeper.n_trials=2", *FAST,
        f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db", f"tracking.uri=sqlite:///{cli_db}",
        cwd=tmp_path, env_uri=f"sqlite:///{env_db}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = runs_in(cli_db)
    roles = sorted(r.data.tags.get("rlbench.sweep.role", "trial") for r in runs)
    assert roles == ["parent", "trial", "trial"]
    assert {r.data.tags[SOURCE] for r in runs} == {"cli"}
    assert runs_in(env_db) == [] and not env_db.exists()


def test_readers_use_the_named_store_over_the_environment(
    tmp_path, monkeypatch, console, mlflow_template
):
    """report, verify, registry, +reproduce and the analysis functions read the store they are
    given, with ``MLFLOW_TRACKING_URI`` naming a store that does not exist."""
    from rlbench.results import verify
    from rlbench.serve import registry_cli

    db = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{db}"
    missing = f"sqlite:///{tmp_path}/nowhere/mlflow.db"
    _migrated(mlflow_template, db)
    proc = run(TRAIN, "-m", *FAST, "algo=threshold,static", f"tracking.uri={uri}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = runs_in(db)
    assert len(trained) == 2

    proc = run(REPORT, f"tracking.uri={uri}", "min_seeds=1", cwd=tmp_path, env_uri=missing)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "comparing 2 runs" in proc.stdout
    (report,) = [r for r in runs_in(db) if r.data.tags.get("rlbench.kind") == "report"]
    assert report.data.tags[SOURCE] == "cli"

    missing_env = {"MLFLOW_TRACKING_URI": missing}  # rlbench-verify and -registry in-process
    proc = console(verify.main, "--tracking-uri", uri, env=missing_env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    run_id = trained[0].info.run_id
    register = ("--tracking-uri", uri, "register", run_id, "prec")
    proc = console(registry_cli.main, *register, env=missing_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "prec  version 1" in proc.stdout

    proc = run(TRAIN, f"+reproduce={run_id}", f"tracking.uri={uri}", cwd=tmp_path, env_uri=missing)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    from rlbench.results import analysis

    monkeypatch.setenv("MLFLOW_TRACKING_URI", missing)
    frame = analysis.load_runs(tracking_uri=uri)
    assert len(frame) == 2 and frame.attrs["tracking_uri"] == uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert len(analysis.load_runs()) == 2  # nothing named: the environment
    assert not (tmp_path / "nowhere").exists()
