"""MLflow tracking: what a user finds in the store after a job, however the job ended."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from rlbench import tracking
from rlbench.errors import UserError
from rlbench.tracking import flatten_config, make_tracker, mark_stale_runs_failed, run_tags
from rlbench.tracking import helper as tracking_helper
from rlbench.tracking.provenance import git_state

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


def local(store, **extra):
    """In-process tracking (no helper process): fast, and the writes are synchronous."""
    return store.tracking_cfg(background=False, **extra)


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_a_run_records_params_metrics_tags_and_artifacts(mlflow_store, tmp_path):
    params = {f"group.key{i:03d}": i for i in range(150)}  # more than one batch of 100
    params |= {"algo.name": "ppo", "long": "x" * 7000}  # longer than MLflow's 6000
    tracker = make_tracker(local(mlflow_store))
    run_id = tracker.start("ppo-spike-s3", params, run_tags({"seed": 3}, "cpu"))
    tracker.log_metrics({"eval/mean_return": -10.0, "train/loss": 0.5}, step=100)
    tracker.log_metrics({"eval/mean_return": -4.5}, step=200)
    tracker.log_metrics({"eval/mean_return": np.float32(-2.25)}, step=300)
    returns = tmp_path / "returns.csv"
    returns.write_text("episode,return\n0,-2.25\n")
    tracker.log_artifact(returns, "eval")
    tracker.log_text("seed: 3\n", "config.yaml")
    tracker.set_tags({"pruned": "false"})
    tracker.end()

    client = mlflow_store.client()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "ppo-spike-s3"
    assert len(run.data.params) == 152
    assert run.data.params["group.key149"] == "149"
    assert run.data.params["algo.name"] == "ppo"
    long = run.data.params["long"]
    assert len(long) == 6000
    assert long == "x" * (6000 - len("...[truncated]")) + "...[truncated]"
    assert history(client, run_id, "eval/mean_return") == [(100, -10.0), (200, -4.5), (300, -2.25)]
    assert history(client, run_id, "train/loss") == [(100, 0.5)]

    tags = run.data.tags
    assert tags["seed"] == "3" and tags["device"] == "cpu" and tags["pruned"] == "false"
    assert tags["version.numpy"] == np.__version__
    assert tags["version.python"] == ".".join(map(str, sys.version_info[:3]))
    assert tags["git.commit"] == "unknown" or len(tags["git.commit"]) == 40
    assert tags["git.dirty"] in ("true", "false", "unknown")
    assert tags["host"] == socket.gethostname()

    assert sorted(a.path for a in client.list_artifacts(run_id)) == ["config.yaml", "eval"]
    assert [a.path for a in client.list_artifacts(run_id, "eval")] == ["eval/returns.csv"]
    # artifacts live under tracking.artifact_location, not in the working directory
    stored = mlflow_store.artifact_dir / run_id / "artifacts"
    assert run.info.artifact_uri == stored.as_uri()
    assert (stored / "eval" / "returns.csv").read_text() == "episode,return\n0,-2.25\n"
    assert (stored / "config.yaml").read_text() == "seed: 3\n"


def test_metrics_are_buffered_until_a_flush_or_a_full_batch(mlflow_store):
    tracker = make_tracker(local(mlflow_store))
    run_id = tracker.start("buffered", {}, {})
    client = mlflow_store.client()
    for step in range(999):
        tracker.log_metrics({"loss": step / 2}, step=step)
    assert client.get_metric_history(run_id, "loss") == []  # nothing written yet
    tracker.log_metrics({"loss": 499.5}, step=999)  # the 1000th value fills a batch
    assert len(client.get_metric_history(run_id, "loss")) == 1000
    tracker.log_metrics({"loss": 7.0}, step=1000)
    tracker.flush()
    assert history(client, run_id, "loss")[-2:] == [(999, 499.5), (1000, 7.0)]
    tracker.end()


def test_a_bad_metric_name_fails_at_once_and_loses_nothing(mlflow_store):
    tracker = make_tracker(local(mlflow_store))
    run_id = tracker.start("names", {}, {})
    tracker.log_metrics({"eval/mean_return": 1.0}, step=1)
    with pytest.raises(ValueError, match="not a valid MLflow metric/param name"):
        tracker.log_metrics({"eval/mean_return": 2.0, "return (mean)": 2.0}, step=2)
    tracker.end()
    run = mlflow_store.client().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {"eval/mean_return": 1.0}


def test_an_exception_ends_the_run_failed_with_the_error_as_a_tag(mlflow_store):
    with pytest.raises(ValueError), make_tracker(local(mlflow_store)) as tracker:
        run_id = tracker.start("diverges", {"seed": 0}, {})
        tracker.log_metrics({"train/loss": 1.5}, step=10)
        raise ValueError("NaN loss at step 10")
    run = mlflow_store.client().get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "ValueError: NaN loss at step 10"
    assert run.data.metrics == {"train/loss": 1.5}  # buffered values are not lost


def test_ctrl_c_ends_the_run_killed_and_end_is_idempotent(mlflow_store):
    with pytest.raises(KeyboardInterrupt), make_tracker(local(mlflow_store)) as tracker:
        run_id = tracker.start("interrupted", {}, {})
        raise KeyboardInterrupt
    tracker.end("FINISHED")  # a second end changes nothing
    run = mlflow_store.client().get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["error"] == "interrupted (Ctrl-C)"
    with pytest.raises(ValueError, match="status must be one of"):
        tracker.end("DONE")


def test_a_child_run_points_at_its_parent(mlflow_store):
    parent = make_tracker(local(mlflow_store))
    parent_id = parent.start("sweep", {"search": "ppo"}, {})
    child = make_tracker(local(mlflow_store))
    child_id = child.start("trial-0", {"seed": 0}, {}, parent_run_id=parent_id)
    child.end()
    parent.end()
    client = mlflow_store.client()
    assert client.get_run(child_id).data.tags["mlflow.parentRunId"] == parent_id
    assert "mlflow.parentRunId" not in client.get_run(parent_id).data.tags


def test_resume_reopens_the_same_run(mlflow_store):
    first = make_tracker(local(mlflow_store))
    run_id = first.start("resumable", {"seed": 3, "resume": False}, {})
    first.log_metrics({"eval/mean_return": -8.0}, step=1000)
    first.end("KILLED", "interrupted (Ctrl-C)")

    second = make_tracker(local(mlflow_store))
    params = {"seed": 3, "resume": True, "train.extra": 1}
    assert second.start("resumable", params, {}, resume_run_id=run_id) == run_id
    client = mlflow_store.client()
    assert client.get_run(run_id).info.status == "RUNNING"
    second.log_metrics({"eval/mean_return": -3.0}, step=2000)
    second.end()

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert history(client, run_id, "eval/mean_return") == [(1000, -8.0), (2000, -3.0)]
    # a logged param cannot change: the first value stays, the change is named in a tag
    assert run.data.params == {"seed": "3", "resume": "false", "train.extra": "1"}
    assert run.data.tags["rlbench.params_changed_on_resume"] == "resume"
    assert len(mlflow_store.runs()) == 1


def test_resuming_an_unknown_run_is_a_user_error(mlflow_store):
    tracker = make_tracker(local(mlflow_store))
    with pytest.raises(UserError, match="cannot resume MLflow run 0123abc: not found"):
        tracker.start("x", {}, {}, resume_run_id="0123abc")


def test_disabled_tracking_records_nothing_and_never_imports_mlflow(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        from rlbench.tracking import make_tracker
        t = make_tracker({"enabled": False, "uri": "sqlite:///store/mlflow.db"})
        with t:
            run_id = t.start("r", {"seed": 1}, {"x": "y"})
            t.log_metrics({"m": 1.0}, step=1)
            t.log_artifact("does-not-exist.txt")
            t.log_text("a", "a.txt")
            t.set_tags({"a": "b"})
        print(repr(run_id), t.run_id, "mlflow" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["''", "None", "False"]
    assert list(tmp_path.iterdir()) == []  # no store, no outputs/


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def as_train():
    """Store hints as rlbench-train gives them (its app declares its options)."""
    from rlbench import cli
    from rlbench.run.main import STORE_OPTIONS

    cli.set_store_options(STORE_OPTIONS)
    yield
    cli.set_store_options(None)


def test_an_unreachable_server_is_one_quick_user_error(as_train):
    uri = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(UserError) as err:
        make_tracker({"uri": uri})
    assert time.monotonic() - started < 5
    message = str(err.value)
    assert uri in message and "\n" not in message
    assert "mlflow server" in message and "tracking.enabled=false" in message


def test_outside_a_command_the_hint_names_the_environment_variable():
    """A notebook or script has no command-line options: the environment names the store."""
    with pytest.raises(UserError) as err:
        tracking.check_store(f"http://127.0.0.1:{_closed_port()}")
    assert str(err.value).endswith(", or MLFLOW_TRACKING_URI=sqlite:///outputs/mlflow.db")


def test_an_explicit_uri_beats_mlflow_tracking_uri(mlflow_store, tmp_path, monkeypatch):
    """A store named explicitly (command line, preset, a caller's argument) wins over
    ``MLFLOW_TRACKING_URI``; the environment is used only where nothing names a store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/from-env/mlflow.db")
    tracker = make_tracker(local(mlflow_store))
    run_id = tracker.start("explicit", {}, {})
    tracker.end()
    assert [r.info.run_id for r in mlflow_store.runs()] == [run_id]
    assert not (tmp_path / "from-env").exists()

    cfg = local(mlflow_store, uri=None)
    tracker = make_tracker(cfg)
    tracker.start("from-env", {}, {})
    tracker.end()
    assert (tmp_path / "from-env" / "mlflow.db").is_file()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(UserError, match="unreachable"):
        make_tracker(cfg)


def test_a_relative_sqlite_uri_is_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.resolve_uri("sqlite:///outputs/mlflow.db") == (
        f"sqlite:///{tmp_path}/outputs/mlflow.db"
    )
    assert tracking.resolve_uri(None) == f"sqlite:///{tmp_path}/outputs/mlflow.db"
    tracking.check_store(tracking.resolve_uri(None))
    assert (tmp_path / "outputs").is_dir()  # the store's directory is created


def test_an_unwritable_sqlite_path_is_a_user_error(tmp_path, as_train):
    blocker = tmp_path / "outputs"
    blocker.write_text("a file where the store's directory should be")
    uri = f"sqlite:///{blocker}/mlflow.db"
    with pytest.raises(UserError, match=r"cannot create .* for the MLflow store") as err:
        make_tracker({"uri": uri})
    assert uri in str(err.value) and "tracking.enabled=false" in str(err.value)


def test_stale_running_runs_can_be_marked_failed(mlflow_store):
    tracker = make_tracker(local(mlflow_store))
    run_id = tracker.start("orphan", {}, {})
    cfg = local(mlflow_store)
    assert mark_stale_runs_failed(cfg, older_than=3600) == []  # started just now
    assert mark_stale_runs_failed(cfg) == [run_id]
    run = mlflow_store.client().get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("stale")
    tracker.end("FAILED")


def test_flatten_config_gives_dotted_resolved_strings():
    cfg = OmegaConf.create(
        {
            "seed": 3,
            "algo": {"name": "ppo", "learning_rate": 3e-4, "net_arch": [64, 64], "sde": False},
            "env": {"name": "autoscaling", "id": "rlbench/${env.name}", "kwargs": {}},
            "train": {"total_steps": 50000, "target_kl": None},
        }
    )
    expected = {
        "seed": "3",
        "algo.name": "ppo",
        "algo.learning_rate": "0.0003",
        "algo.net_arch": "[64, 64]",
        "algo.sde": "false",
        "env.name": "autoscaling",
        "env.id": "rlbench/autoscaling",
        "env.kwargs": "{}",
        "train.total_steps": "50000",
        "train.target_kl": "null",
    }
    assert flatten_config(cfg) == expected
    assert flatten_config(OmegaConf.to_container(cfg, resolve=True)) == expected


def test_run_tags_record_the_hydra_overrides(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    (tmp_path / "app.yaml").write_text("seed: 0\nalgo:\n  name: threshold\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        cfg = compose("app", overrides=["seed=7", "algo.name=ppo"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        tags = run_tags(cfg, "cpu")
    finally:
        HydraConfig.instance().cfg = None
    assert tags["hydra.overrides"] == "seed=7 algo.name=ppo"
    assert tags["seed"] == "7"
    assert "hydra.overrides" not in run_tags({"seed": 7}, "cpu")


def test_git_state_reports_commit_and_dirty_flag(tmp_path):
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    git("init", "-q")
    assert git_state(tmp_path) == ("unknown", "unknown")  # no commit yet
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("commit", "-q", "-m", "first")
    commit = git("rev-parse", "HEAD")
    assert git_state(tmp_path) == (commit, "false")
    (tmp_path / "untracked.txt").write_text("outputs are not code\n")
    assert git_state(tmp_path) == (commit, "false")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path) == (commit, "true")


def test_code_outside_its_own_checkout_is_named_by_its_source_not_the_cwd(tmp_path, monkeypatch):
    """An installed rlbench run from a user's own repository used to be recorded as that
    repository's commit, so resume=true reused runs of edited code. Outside its own checkout
    the code is named by rlbench's version and a digest of its sources."""
    from rlbench.tracking import provenance

    for cached in (provenance._own_git_state, provenance.source_digest):
        cached.cache_clear()
    monkeypatch.setattr(provenance, "SOURCE_ROOT", tmp_path / "site-packages")
    (tmp_path / "site-packages" / "rlbench").mkdir(parents=True)
    module = tmp_path / "site-packages" / "rlbench" / "agents.py"
    module.write_text("x = 1\n")
    monkeypatch.chdir(Path(__file__).parent)  # a git checkout, but not rlbench's source root
    try:
        assert provenance.git_state() == ("unknown", "unknown")
        first = provenance.code_version()
        assert first is not None and first.startswith("rlbench==")
        module.write_text("x = 2\n")
        provenance.source_digest.cache_clear()
        assert provenance.code_version() != first  # an edited copy is other code
    finally:
        for cached in (provenance._own_git_state, provenance.source_digest):
            cached.cache_clear()


def test_every_tracked_run_records_its_provenance(mlflow_store):
    """Sweep parents, live sessions, forecasts and reports start their runs through the
    tracker: each records the code, its versions and git state, not only training runs."""
    from rlbench.tracking import schema

    tracker = make_tracker(local(mlflow_store))
    run_id = tracker.start("some-run", {}, {schema.KIND_TAG: "report"})
    tracker.end()
    tags = mlflow_store.client().get_run(run_id).data.tags
    assert tags[schema.KIND_TAG] == "report"  # the caller's own tags kept
    for key in (schema.GIT_COMMIT_TAG, schema.GIT_DIRTY_TAG, "version.rlbench", "version.torch",
                "version.hydra", schema.HOST_TAG, schema.SOURCE_NAME_TAG):  # fmt: skip
        assert tags.get(key), key


# ---------------------------------------------------------------- the helper process (default)


def test_the_background_helper_records_a_run(mlflow_store, tmp_path):
    tracker = make_tracker(mlflow_store.tracking_cfg())  # background: the default
    helper = tracking_helper._HELPER
    try:
        run_id = tracker.start("bg", {"seed": 5}, {"device": "cpu"})
        for step in (10, 20, 30):
            tracker.log_metrics({"eval/mean_return": step / 10}, step=step)
        model = tmp_path / "model.zip"
        model.write_bytes(b"PK\x05\x06" + bytes(18))
        tracker.log_artifact(model, "model")
        tracker.end()
    finally:
        tracking.shutdown()
    assert helper is not None and helper.proc.returncode == 0  # the helper has exited
    client = mlflow_store.client()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"seed": "5"}
    assert history(client, run_id, "eval/mean_return") == [(10, 1.0), (20, 2.0), (30, 3.0)]
    assert [a.path for a in client.list_artifacts(run_id, "model")] == ["model/model.zip"]


JOB = """
import os, signal, sys, time
from rlbench.tracking import make_tracker
mode, uri, artifacts = sys.argv[1:]
tracker = make_tracker({"uri": uri, "artifact_location": artifacts})
with tracker:
    run_id = tracker.start("job", {"seed": 1}, {})
    tracker.log_metrics({"train/loss": 0.25}, step=64)
    tracker.flush()
    print(run_id, flush=True)
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # until Ctrl-C
"""


@pytest.mark.parametrize(
    ("mode", "status", "error"),
    [
        ("kill", "KILLED", "the job process died before ending the run"),
        ("ctrl-c", "KILLED", "interrupted (Ctrl-C)"),
    ],
)
def test_a_job_that_dies_leaves_no_run_running(mlflow_store, tmp_path, mode, status, error):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    job = subprocess.Popen(
        [sys.executable, str(script), mode, mlflow_store.uri, str(mlflow_store.artifact_dir)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal job has
    )
    try:
        run_id = job.stdout.readline().strip()
        assert run_id, job.stderr.read()
        if mode == "ctrl-c":
            os.killpg(job.pid, signal.SIGINT)  # a terminal sends Ctrl-C to the whole group
        job.wait(timeout=20)
        client = mlflow_store.client()
        deadline = time.monotonic() + 15  # after kill -9 the helper ends the run on its own
        while (run := client.get_run(run_id)).info.status == "RUNNING":
            assert time.monotonic() < deadline, "the run was left RUNNING"
            time.sleep(0.1)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert run.info.status == status
    assert run.data.tags["error"] == error
    assert run.data.metrics == {"train/loss": 0.25}


def test_a_job_that_exits_without_ending_its_run_marks_it_failed(mlflow_store, tmp_path):
    code = textwrap.dedent(
        f"""
        from rlbench.tracking import make_tracker
        tracker = make_tracker({{"uri": {mlflow_store.uri!r}}})
        print(tracker.start("forgotten", {{}}, {{}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    run = mlflow_store.client().get_run(done.stdout.strip())
    assert run.info.status == "FAILED"  # ended by the exit handler, before the process exited
    assert run.data.tags["error"] == "the process exited without ending the run"


def test_conftest_store_is_a_copy_of_one_migrated_template(mlflow_store, mlflow_template):
    assert Path(mlflow_store.db_path).read_bytes() == Path(mlflow_template).read_bytes()
    assert mlflow_store.runs() == []


def test_a_directory_or_a_foreign_file_as_the_store_is_refused_before_anything_is_written(
    tmp_path,
):
    """Every command opens its tracker first: these are said there, with no lock file left
    beside the user's path (rlbench-ope and rlbench-forecast used to find them after working)."""
    (tmp_path / "D").mkdir()
    (tmp_path / "notes.txt").write_text("mine\n")
    for name, message in (("D", "names a directory"), ("notes.txt", "is not a SQLite database")):
        with pytest.raises(UserError, match=message):
            make_tracker({"uri": f"sqlite:///{tmp_path / name}"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["D", "notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine\n"
