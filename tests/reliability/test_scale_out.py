"""Beyond one machine, on real servers: an Optuna study in PostgreSQL, an MLflow tracking server.

One PostgreSQL server (Debian's package, a fresh ``initdb``) and one ``mlflow server --app-name
basic-auth`` on it (artifacts proxied to a local folder) are started per test session, on loopback
ports, and shared by these tests (one xdist worker owns them). The MLflow server boots in the
background (tens of seconds) while the PostgreSQL-only cases run. Worker processes stand for hosts:
each has its own working directory (checkpoints, outputs), and they share only the two servers.
The heavy figures (4 workers x 40 trials, throughput, 8 concurrent writers) are measured by
``python -m benchmarks --only scale_out``, not here. Where PostgreSQL cannot start, the tests
skip and say why.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from reliability_kit import PAUSED_TRAIN, child_env, kill_9, start_paused, wait_for
from scale_out_kit import (
    READER_PASSWORD,
    READER_USER,
    TEAM_PASSWORD,
    WORKER_PASSWORD,
    WORKER_USER,
    MlflowServer,
    Postgres,
    free_port,
    unavailable,
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("scale_out")]
COMMIT = "5ca1e0" + "0" * 34  # a clean checkout for every process: resume=true may reuse runs
FAST = ["debug=fast", "++eval.trajectory_plot=false", "train.progress=off"]


@dataclass
class Servers:
    pg: Postgres
    boot: threading.Thread
    box: dict = field(default_factory=dict)

    def mlflow(self) -> MlflowServer:
        self.boot.join(timeout=400)
        if "server" not in self.box:
            pytest.skip(f"mlflow server could not start: {self.box.get('error', 'timeout')}")
        return self.box["server"]


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    try:
        pg = Postgres.start()
    except (OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"PostgreSQL could not start: {err}")
    root = tmp_path_factory.mktemp("mlflow-server")
    found = Servers(pg, threading.Thread(daemon=True))

    def boot() -> None:
        try:
            found.box["server"] = MlflowServer.start(pg, root, workers=1, timeout=300)
        except Exception as err:
            found.box["error"] = err

    found.boot = threading.Thread(target=boot, name="mlflow-server", daemon=True)
    found.boot.start()
    yield found
    found.boot.join(timeout=400)
    if "server" in found.box:
        found.box["server"].stop()
    pg.stop()


def _secrets_absent(text: str, *secrets: str) -> None:
    from urllib.parse import quote

    for secret in secrets:
        assert secret not in text and quote(secret, safe="") not in text


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unreachable", "is unreachable (connection refused)"),
        ("password", "refused the credentials of user rlbench (password authentication failed)"),
        ("database", "has no database nodb: create it"),
        ("permission", "user reader may not create or write the tables in database locked"),
    ],
)
def test_a_storage_that_cannot_be_used_is_one_line(servers, cli, case, expected):
    pg = servers.pg
    url = {
        "unreachable": pg.url("optuna").replace(f":{pg.port}/", f":{free_port()}/"),
        "password": pg.url("optuna", password="wrong-" + TEAM_PASSWORD),
        "database": pg.url("nodb"),
        "permission": pg.url("locked", user=READER_USER, password=READER_PASSWORD),
    }[case]
    result = cli("-m", "search=threshold", *FAST, "tracking.enabled=false",
                 f"hydra.sweeper.storage={url}")  # fmt: skip
    assert result.code == 2, result.err
    [line] = result.error_lines()
    assert line.startswith("error: cannot open the Optuna storage postgresql+psycopg://"), line
    assert ":***@127.0.0.1:" in line and expected in line, line
    assert "Launching" not in result.out + result.err  # before any trial
    _secrets_absent(result.out + result.err, TEAM_PASSWORD, READER_PASSWORD)


def test_a_tracking_database_with_a_wrong_password_is_one_line(servers, cli):
    url = servers.pg.url("mlflow", password="wrong-" + TEAM_PASSWORD)
    result = cli(*FAST, f"tracking.uri={url}")
    assert result.code == 2, result.err
    [line] = result.error_lines()
    assert "cannot open the MLflow store postgresql+psycopg://rlbench:***@" in line, line
    assert "refused the credentials" in line and "score:" not in result.out


# --------------------------------------------------------------------------- presets


@pytest.mark.parametrize(
    ("preset", "launcher"),
    [("team", "JoblibLauncher"), ("slurm", "SlurmLauncher"), ("slurm_local", "LocalLauncher")],
)
def test_cluster_presets_set_storage_tracking_and_launcher(cli, monkeypatch, preset, launcher):
    monkeypatch.setenv("RLBENCH_OPTUNA_STORAGE", "postgresql://u@db.example/optuna")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    hydra = cli("search=threshold", f"cluster={preset}", "--cfg", "hydra")
    assert hydra.code == 0, hydra.err
    assert f"{launcher}\n" in hydra.out
    assert "storage: ${oc.select:cluster.storage,sqlite:///outputs/optuna.db}" in hydra.out
    job = cli("search=threshold", f"cluster={preset}", "--cfg", "job", "--resolve")
    assert "storage: postgresql://u@db.example/optuna" in job.out
    assert "uri: http://mlflow.example:5000" in job.out and "claim: lease" in job.out
    monkeypatch.delenv("RLBENCH_OPTUNA_STORAGE")
    missing = cli("-m", "search=threshold", f"cluster={preset}")
    assert missing.code == 2
    assert "environment variable RLBENCH_OPTUNA_STORAGE, which is not set" in missing.err


# --------------------------------------------------------------------------- on the servers


def _train(cwd: Path, args: list[str], log: Path, **env: str) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, str(PAUSED_TRAIN), *args], cwd=cwd, stdout=out,
            stderr=subprocess.STDOUT, env=child_env(RLBENCH_TEST_COMMIT=COMMIT) | env,
        )  # fmt: skip


def _client(server: MlflowServer):
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_TRACKING_USERNAME"] = WORKER_USER
    os.environ["MLFLOW_TRACKING_PASSWORD"] = WORKER_PASSWORD
    return MlflowClient(server.uri)


def _runs(server: MlflowServer, experiment: str) -> list:
    client = _client(server)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def test_wrong_credentials_for_the_real_basic_auth_server(servers, cli):
    server = servers.mlflow()
    result = cli(*FAST, f"tracking.uri={server.uri_with(password='wrong-' + WORKER_PASSWORD)}")
    assert result.code == 2, result.err
    [line] = result.error_lines()
    assert f"MLflow tracking server {server.uri} refused the credentials (401" in line, line
    _secrets_absent(result.out + result.err, WORKER_PASSWORD)


def test_workers_share_one_study_and_a_killed_workers_trial_is_retried(servers, tmp_path):
    """Two worker processes (two hosts) run the same sweep command on one PostgreSQL study and
    the MLflow server; one is killed with -9 inside its second trial. The other retries that
    trial (heartbeat gone stale) and the study ends with exactly n_trials complete trials."""
    import optuna

    server, pg, n_trials = servers.mlflow(), servers.pg, 6
    storage = pg.url("optuna")
    args = [
        "-m", "search=threshold", *FAST, f"tracking.uri={server.uri_with()}",
        "tracking.experiment=shared", f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=shared", f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3",
        "tracking.claim_ttl_s=8",  # the victim held the lease on the retried configuration
    ]  # fmt: skip
    (tmp_path / "a").mkdir()
    victim, marker = start_paused(
        tmp_path / "a", args, "trial:2", tmp_path / "a.txt", RLBENCH_TEST_COMMIT=COMMIT
    )
    survivor = _train(tmp_path / "b", args, tmp_path / "b.txt")
    wait_for(marker, victim, tmp_path / "a.txt")
    kill_9(victim, with_helper=False)  # the worker dies; its MLflow helper ends its runs KILLED
    assert survivor.wait(timeout=400) == 0, (tmp_path / "b.txt").read_text()[-3000:]

    study = optuna.load_study(study_name="shared", storage=storage.replace("://", "+psycopg://"))
    states = Counter(t.state.name for t in study.trials)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == n_trials and states["RUNNING"] == 0, states  # 0 lost
    retried = [t for t in complete if "retry_history" in t.system_attrs]
    assert retried, "the killed worker's trial was not retried"
    configs = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(configs)) == n_trials  # 0 duplicates
    run_ids = [t.user_attrs["rlbench.mlflow_run_id"] for t in complete]
    assert len(set(run_ids)) == n_trials
    runs = _runs(server, "shared")
    by_status = Counter(r.info.status for r in runs)
    assert by_status["RUNNING"] == 0, by_status  # 0 runs left RUNNING
    finished = {r.info.run_id for r in runs if r.info.status == "FINISHED"}
    assert set(run_ids) <= finished
    artifacts = list((server.root / "artifacts").rglob("config.yaml"))
    assert len(artifacts) >= n_trials  # proxied to the server's artifact destination


def test_two_resume_grids_on_the_server_train_each_configuration_once(servers, tmp_path):
    """Two hosts run the same grid with resume=true: the lease on the server makes one of them
    train each configuration and the other reuse it (different checkpoint folders: no file
    lock is shared)."""
    server = servers.mlflow()
    args = ["-m", "seed=0,1,2", "algo=threshold", *FAST, "resume=true",
            f"tracking.uri={server.uri_with()}", "tracking.experiment=grids"]  # fmt: skip
    procs = [_train(tmp_path / f"h{i}", args, tmp_path / f"h{i}.txt") for i in range(2)]
    outs = []
    for i, proc in enumerate(procs):
        proc.wait(timeout=300)
        outs.append((tmp_path / f"h{i}.txt").read_text())
    assert [p.returncode for p in procs] == [0, 0], outs
    scores = [line for out in outs for line in out.splitlines() if line.startswith("score:")]
    assert len(scores) == 6 and sum("(finished before)" in s for s in scores) == 3, scores
    runs = [r for r in _runs(server, "grids") if r.info.status == "FINISHED"]
    by_key = Counter(r.data.tags["rlbench.run_key"] for r in runs)
    assert len(by_key) == 3 and set(by_key.values()) == {1}, by_key  # trained once each
    assert all(r.info.status != "RUNNING" for r in _runs(server, "grids"))


def test_a_sweep_through_the_submitit_launcher(servers, tmp_path):
    """cluster=slurm_local: trials as processes of their own through submitit's local
    executor (Slurm's stand-in), on the shared study and the MLflow server."""
    import optuna

    server, storage = servers.mlflow(), servers.pg.url("optuna")
    proc = _train(
        tmp_path / "w",
        ["-m", "search=threshold", "cluster=slurm_local", *FAST, "tracking.experiment=submitit",
         "hydra.sweeper.study_name=submitit", "hydra.sweeper.n_trials=2"],
        tmp_path / "w.txt", RLBENCH_OPTUNA_STORAGE=storage, MLFLOW_TRACKING_URI=server.uri_with(),
    )  # fmt: skip
    assert proc.wait(timeout=300) == 0, (tmp_path / "w.txt").read_text()[-3000:]
    study = optuna.load_study(study_name="submitit", storage=storage.replace("://", "+psycopg://"))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    runs = _runs(server, "submitit")
    children = [r for r in runs if r.data.tags.get("rlbench.sweep.role") != "parent"]
    assert len([r for r in children if r.info.status == "FINISHED"]) == 2, runs
    assert list((tmp_path / "w").rglob(".submitit"))  # the jobs went through submitit
