"""Beyond one machine, on real servers: an Optuna study in PostgreSQL, an MLflow tracking server.

One PostgreSQL server (Debian's package, a fresh ``initdb``) and one ``mlflow server --app-name
basic-auth`` on it (artifacts proxied to a local folder) are started per test session, on loopback
ports, and shared by these tests (one xdist worker owns them: group ``scale_out``). The MLflow
server boots in the background (~9 CPU-s) while the PostgreSQL-only cases run in this process.
Worker processes stand for hosts: each has its own working directory (checkpoints, outputs), and
they share only the two servers. One test per behaviour, as small as shows it (rule runs of
``debug=fast``, a few trials); the heavy figures (4 workers x 40 trials with a kill, throughput,
8 concurrent writers, a submitit sweep with tracking on the server) are measured by ``python -m
benchmarks --only scale_out``, not here. Where PostgreSQL cannot start, the tests skip and say why.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
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
    start_or_skip,
)

pytestmark = pytest.mark.slow
# the tests on the servers run on one xdist worker, which starts the servers once
ON_SERVERS = pytest.mark.xdist_group("scale_out")
COMMIT = "5ca1e0" + "0" * 34  # a clean checkout for every process: resume=true may reuse runs
FAST = [
    "debug=fast", "++eval.trajectory_plot=false", "train.progress=off", "train.checkpoint_every=0",
]  # fmt: skip


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
    pg = start_or_skip()
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
    ("case", "store", "expected"),
    [
        ("unreachable", "Optuna storage", "is unreachable (connection refused)"),
        ("password", "Optuna storage",
         "refused the credentials of user rlbench (password authentication failed)"),
        ("database", "Optuna storage", "has no database nodb: create it"),
        ("permission", "Optuna storage",
         "user reader may not create or write the tables in database locked"),
        ("tracking", "MLflow store", "refused the credentials of user rlbench"),
    ],
)  # fmt: skip
@ON_SERVERS
def test_a_store_that_cannot_be_used_is_one_line(servers, cli, case, store, expected):
    """In this process, against the one PostgreSQL server: before any trial or job trains."""
    pg = servers.pg
    wrong = "wrong-" + TEAM_PASSWORD
    if case == "tracking":  # MLflow's store on PostgreSQL, without a tracking server
        result = cli(*FAST, "algo=threshold", f"tracking.uri={pg.url('mlflow', password=wrong)}")
    else:
        url = {
            "unreachable": pg.url("optuna").replace(f":{pg.port}/", f":{free_port()}/"),
            "password": pg.url("optuna", password=wrong),
            "database": pg.url("nodb"),
            "permission": pg.url("locked", user=READER_USER, password=READER_PASSWORD),
        }[case]
        result = cli("-m", "search=threshold", *FAST, "tracking.enabled=false",
                     f"hydra.sweeper.storage={url}")  # fmt: skip
    assert result.code == 2, result.err
    [line] = result.error_lines()
    assert line.startswith(f"error: cannot open the {store} postgresql+psycopg://"), line
    assert ":***@127.0.0.1:" in line and expected in line, line
    assert "Launching" not in result.out + result.err and "score:" not in result.out
    _secrets_absent(result.out + result.err, TEAM_PASSWORD, wrong, READER_PASSWORD)


# --------------------------------------------------------------------------- presets


@pytest.mark.parametrize(
    ("preset", "launcher"),
    [("team", "JoblibLauncher"), ("slurm", "SlurmLauncher"), ("slurm_local", "LocalLauncher")],
)
def test_cluster_presets_set_storage_tracking_and_launcher(cli, monkeypatch, preset, launcher):
    monkeypatch.setenv("RLBENCH_OPTUNA_STORAGE", "postgresql://u@db.example/optuna")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    both = cli("search=threshold", f"cluster={preset}", "--cfg", "all", "--resolve")
    assert both.code == 0, both.err
    assert f"{launcher}\n" in both.out  # hydra.launcher._target_
    # hydra.sweeper.storage (from cluster.storage) and the job's own copy of it
    assert both.out.count("storage: postgresql://u@db.example/optuna") == 2, both.out
    assert "uri: http://mlflow.example:5000" in both.out and "claim: lease" in both.out
    if preset == "team":  # the same interpolation in every preset: one missing variable is enough
        monkeypatch.delenv("RLBENCH_OPTUNA_STORAGE")
        missing = cli("-m", "search=threshold", f"cluster={preset}")
        assert missing.code == 2
        assert "environment variable RLBENCH_OPTUNA_STORAGE, which is not set" in missing.err


@pytest.mark.parametrize(
    ("preset", "launcher", "fix"),
    [
        ("team", "submitit_local", "or for submitit_local use cluster=slurm_local"),
        ("slurm", "joblib", "or for joblib use cluster=team"),
        ("team", "basic", "but no cluster= preset uses basic (presets and their launchers: "),
    ],
)
def test_a_cluster_preset_beside_another_launcher_names_the_preset_that_fits(
    cli, monkeypatch, preset, launcher, fix
):
    """It used to be Hydra's "ConfigKeyError ... Key 'n_jobs' not in 'LocalQueueConf'"."""
    monkeypatch.setenv("RLBENCH_OPTUNA_STORAGE", "postgresql://u@db.example/optuna")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    done = cli("-m", "search=threshold", f"cluster={preset}", f"hydra/launcher={launcher}")
    errors = [line for line in done.err.splitlines() if line.startswith("error: ")]
    assert done.code == 2 and len(errors) == 1, done.err
    assert errors[0].startswith(f"error: cluster={preset} runs its jobs through the "), errors
    assert (
        f"drop hydra/launcher={launcher} (the preset sets the launcher itself), {fix}"
        in (errors[0])
    )


@pytest.mark.parametrize(
    ("variable", "key", "args"),
    [
        ("RLBENCH_OPTUNA_STORAGE", "cluster.storage", ["-m", "search=threshold"]),
        ("MLFLOW_TRACKING_URI", "tracking.uri", ["debug=fast", "train.progress=off"]),
    ],
)
def test_a_cluster_preset_refuses_a_store_variable_set_but_empty(
    cli, monkeypatch, tmp_path, variable, key, args
):
    """An empty RLBENCH_OPTUNA_STORAGE was "not a database URL: ''" without naming it; an
    empty MLFLOW_TRACKING_URI sent a team's runs to the local sqlite:///outputs/mlflow.db."""
    monkeypatch.setenv("RLBENCH_OPTUNA_STORAGE", "postgresql://u@db.example/optuna")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    monkeypatch.setenv(variable, "")
    done = cli(*args, "cluster=team")
    assert done.code == 2, done.err
    assert (
        f"error: {key} reads the environment variable {variable}, which is set but empty: "
        f"give it the team's store URL (export {variable}=...)"
    ) in done.err
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


# --------------------------------------------------------------------------- on the servers


def _train(cwd: Path, args: list[str], log: Path, **env: str) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, str(PAUSED_TRAIN), *args], cwd=cwd, stdout=out,
            stderr=subprocess.STDOUT, env=child_env(RLBENCH_TEST_COMMIT=COMMIT) | env,
        )  # fmt: skip


def _wait_for_trials(
    pg: Postgres, study: str, state: str, proc: subprocess.Popen, log: Path
) -> None:
    """Until the study has a trial in ``state`` (the process must not end first)."""
    import psycopg

    query = ("SELECT count(*) FROM trials JOIN studies USING (study_id) "
             f"WHERE study_name = '{study}' AND state = '{state}'")  # fmt: skip
    deadline = time.monotonic() + 180
    while True:
        with contextlib.suppress(psycopg.errors.UndefinedTable):  # before the first study
            if pg.sql(query, db="optuna")[0][0]:
                return
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {state} trial in 180 s: {log.read_text()[-3000:]}"
        time.sleep(0.1)


def _client(server: MlflowServer):
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_TRACKING_USERNAME"] = WORKER_USER
    os.environ["MLFLOW_TRACKING_PASSWORD"] = WORKER_PASSWORD
    return MlflowClient(server.uri)


def _runs(server: MlflowServer, experiment: str) -> list:
    client = _client(server)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


@ON_SERVERS
def test_wrong_credentials_for_the_real_basic_auth_server(servers, cli):
    server = servers.mlflow()
    result = cli(*FAST, f"tracking.uri={server.uri_with(password='wrong-' + WORKER_PASSWORD)}")
    assert result.code == 2, result.err
    [line] = result.error_lines()
    assert f"MLflow tracking server {server.uri} refused the credentials (401" in line, line
    _secrets_absent(result.out + result.err, WORKER_PASSWORD)


@ON_SERVERS
def test_workers_share_one_study_and_a_killed_workers_trial_is_retried(servers, tmp_path):
    """Two worker processes (two hosts) run the same sweep command on one PostgreSQL study and
    the MLflow server. One is killed with -9 inside a trial while the other works; the other
    retries that trial (heartbeat gone stale) and the study ends with exactly n_trials complete
    trials. The survivor starts once the victim holds its trial, so that on a busy machine it
    cannot take every trial first."""
    import optuna

    server, pg, n_trials = servers.mlflow(), servers.pg, 3
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
        tmp_path / "a", args, "trial:1", tmp_path / "a.txt", RLBENCH_TEST_COMMIT=COMMIT
    )
    survivor = None
    try:
        _wait_for_trials(pg, "shared", "RUNNING", victim, tmp_path / "a.txt")  # it holds one
        survivor = _train(tmp_path / "b", args, tmp_path / "b.txt")
        wait_for(marker, victim, tmp_path / "a.txt")
        _wait_for_trials(pg, "shared", "COMPLETE", survivor, tmp_path / "b.txt")  # both at work
        kill_9(victim, with_helper=False)  # it dies; its MLflow helper ends its runs KILLED
        assert survivor.wait(timeout=300) == 0, (tmp_path / "b.txt").read_text()[-3000:]
    finally:  # a failed test leaves no worker behind
        for proc in (victim, survivor):
            if proc is not None and proc.poll() is None:
                proc.kill()

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


@ON_SERVERS
def test_two_resume_grids_on_the_server_train_each_configuration_once(servers, tmp_path):
    """Two hosts run the same grid with resume=true at once: the lease on the server makes one
    of them train each configuration and the other reuse it (different checkpoint folders: no
    file lock is shared)."""
    server = servers.mlflow()
    args = ["-m", "seed=0,1", "algo=threshold", *FAST, "resume=true",
            f"tracking.uri={server.uri_with()}", "tracking.experiment=grids"]  # fmt: skip
    procs = [_train(tmp_path / f"h{i}", args, tmp_path / f"h{i}.txt") for i in range(2)]
    outs = []
    for i, proc in enumerate(procs):
        proc.wait(timeout=300)
        outs.append((tmp_path / f"h{i}.txt").read_text())
    assert [p.returncode for p in procs] == [0, 0], outs
    scores = [line for out in outs for line in out.splitlines() if line.startswith("score:")]
    assert len(scores) == 4 and sum("(finished before)" in s for s in scores) == 2, scores
    runs = _runs(server, "grids")
    assert all(r.info.status != "RUNNING" for r in runs)
    by_key = Counter(r.data.tags["rlbench.run_key"] for r in runs if r.info.status == "FINISHED")
    assert len(by_key) == 2 and set(by_key.values()) == {1}, by_key  # trained once each


@ON_SERVERS
def test_a_sweep_through_the_submitit_launcher(servers, tmp_path):
    """cluster=slurm_local: a trial as a process of its own through submitit's local executor
    (Slurm's stand-in), on the shared study. Tracking off: each process would start an MLflow
    helper (seconds); the benchmark runs it with tracking on the server."""
    storage = servers.pg.url("optuna")
    proc = _train(
        tmp_path / "w",
        ["-m", "search=threshold", "cluster=slurm_local", *FAST, "tracking.enabled=false",
         "hydra.sweeper.study_name=submitit", "hydra.sweeper.n_trials=1"],
        tmp_path / "w.txt", RLBENCH_OPTUNA_STORAGE=storage, MLFLOW_TRACKING_URI="http://unused:1",
    )  # fmt: skip
    assert proc.wait(timeout=300) == 0, (tmp_path / "w.txt").read_text()[-3000:]
    states = servers.pg.sql(
        "SELECT t.state FROM trials t JOIN studies s USING (study_id) "
        "WHERE s.study_name = 'submitit'", db="optuna",
    )  # fmt: skip
    assert states == [("COMPLETE",)], states
    [job_log] = (tmp_path / "w").rglob(".submitit/*/*_0_log.out")  # the job went through submitit
    assert "score:" in job_log.read_text()
