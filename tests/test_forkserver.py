"""The fork server: helpers forked with MLflow imported act exactly as helpers a job starts.

Each test points ``XDG_RUNTIME_DIR`` at its own short folder (``runtime``; a socket's path has
at most 107 bytes, more than pytest's ``tmp_path`` leaves), so it starts its own server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def runtime() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="rb-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# a job: one tracked run; prints its run id, its helper's pid and whether that is its own child
JOB = textwrap.dedent(
    """
    import os, sys
    from rlbench.tracking import helper, make_tracker
    uri, experiment = sys.argv[1:]
    tracker = make_tracker({"uri": uri, "experiment": experiment})
    with tracker:
        run_id = tracker.start("job", {"seed": 1}, {})
        tracker.log_metrics({"train/loss": 0.5}, step=1)
    proc = helper._HELPER.proc
    proc.poll()  # a forked helper's pid arrives when the server has forked it
    own = f"/proc/{os.getpid()}/task/{os.getpid()}/children"
    children = open(own).read().split()
    print(run_id, proc.pid, str(proc.pid) in children, type(proc).__name__)
    """
)


def _env(folder: Path, **extra: str) -> dict[str, str]:
    env = os.environ | {"XDG_RUNTIME_DIR": str(folder), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env | extra


def _job(store, cwd: Path, env: dict[str, str], experiment: str = "forked") -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", JOB, store.uri, experiment],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


def _servers(folder: Path) -> list[Path]:
    return sorted((folder / "rlbench").glob("helper-*.sock"))


def _server_pid(sock: Path) -> int:
    """The process listening on ``sock`` (it holds the lock file beside it)."""
    lock = f"{sock}.lock"
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            for fd in (proc / "fd").glob("*"):
                try:
                    if os.readlink(fd) == lock:
                        return int(proc.name)
                except OSError:
                    continue
    raise AssertionError(f"no process holds {lock}")


def test_jobs_share_one_server_and_their_runs_are_recorded(mlflow_store, tmp_path, runtime):
    env = _env(runtime, RLBENCH_HELPER_IDLE="10")
    first = _job(mlflow_store, tmp_path, env)  # starts the server
    (sock,) = _servers(runtime)
    server = _server_pid(sock)
    second = _job(mlflow_store, tmp_path, env)
    third = _job(mlflow_store, tmp_path, env)
    assert _servers(runtime) == [sock] and _server_pid(sock) == server  # reused
    for run_id, *_ in (first, second, third):
        run = mlflow_store.client().get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.metrics == {"train/loss": 0.5}
    for _, helper_pid, own_child, kind in (first, second, third):
        assert kind == "ForkedHelper" and own_child == "False"  # the server's, not the job's
        assert int(helper_pid) != server
    assert len({first[1], second[1], third[1]}) == 3  # one helper per job
    # MLflow's environment is read by the server's imports: another one, another server
    _job(mlflow_store, tmp_path, env | {"MLFLOW_HTTP_REQUEST_TIMEOUT": "7"})
    assert len(_servers(runtime)) == 2 and sock in _servers(runtime)
    # with nothing to do, a server ends after its idle time and removes its socket
    deadline = time.monotonic() + 30
    while sock.exists() or Path(f"/proc/{server}").exists():
        assert time.monotonic() < deadline, "the idle server did not end"
        time.sleep(0.1)


def test_the_helper_works_in_the_jobs_folder_and_environment(mlflow_store, tmp_path, runtime):
    """A relative artifact folder and a variable MLflow reads per call come from the job."""
    env = _env(runtime, RLBENCH_HELPER_IDLE="5")
    here = tmp_path / "project"
    here.mkdir()
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from rlbench.tracking import helper, make_tracker
        Path("model.txt").write_text("weights")
        tracker = make_tracker({{"uri": {mlflow_store.uri!r}, "experiment": "cwd",
                                 "artifact_location": "relative-artifacts"}})
        with tracker:
            print(tracker.start("job", {{}}, {{}}))
            tracker.log_artifact(Path("model.txt"), "model")
        print(type(helper._HELPER.proc).__name__)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=here, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "ForkedHelper"
    assert list((here / "relative-artifacts").rglob("model.txt")), "artifacts went elsewhere"


def test_off_or_unsafe_folder_means_the_job_starts_its_own_helper(mlflow_store, tmp_path, runtime):
    off = _job(mlflow_store, tmp_path, _env(runtime, RLBENCH_HELPER_IDLE="0"))
    assert off[2:] == ["True", "Popen"]
    time.sleep(0.5)
    assert not _servers(runtime)  # and none was started
    shared = runtime / "shared"
    (shared / "rlbench").mkdir(parents=True)
    (shared / "rlbench").chmod(0o777)  # another user could listen there: never used
    unsafe = _job(mlflow_store, tmp_path, _env(shared))
    assert unsafe[2:] == ["True", "Popen"]
    time.sleep(0.5)
    assert not _servers(shared)
    run = mlflow_store.client().get_run(unsafe[0])
    assert run.info.status == "FINISHED"


def test_a_server_that_died_is_replaced(mlflow_store, tmp_path, runtime):
    env = _env(runtime, RLBENCH_HELPER_IDLE="5")
    _job(mlflow_store, tmp_path, env)
    (sock,) = _servers(runtime)
    os.kill(_server_pid(sock), 9)  # its socket file stays behind
    run_id, _, own_child, kind = _job(mlflow_store, tmp_path, env)
    assert kind == "ForkedHelper" and own_child == "False"  # by a new server
    assert mlflow_store.client().get_run(run_id).info.status == "FINISHED"


def test_a_server_that_cannot_import_mlflow_leaves_the_job_its_own_helper(
    mlflow_store, tmp_path, runtime
):
    """A broken install: the server dies in its imports; the job that waited on it goes on."""
    broken = tmp_path / "broken"
    (broken / "mlflow").mkdir(parents=True)
    (broken / "mlflow" / "__init__.py").write_text("raise ImportError('a broken install')\n")
    # a Python that shadows MLflow for the fork server only (the job starts it as
    # sys.executable -m rlbench.tracking.helper --fork-server ...)
    python = tmp_path / "python"
    python.write_text(
        "#!/bin/sh\n"
        f'[ "$3" = --fork-server ] && export PYTHONPATH="{broken}:$PYTHONPATH"\n'
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    code = JOB.replace("import os, sys", f"import os, sys; sys.executable = {str(python)!r}")
    done = subprocess.run(
        [sys.executable, "-c", code, mlflow_store.uri, "broken"],
        cwd=tmp_path, env=_env(runtime, RLBENCH_HELPER_IDLE="5"), capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run_id, _, own_child, kind = done.stdout.split()
    assert kind == "Popen" and own_child == "True"
    assert mlflow_store.client().get_run(run_id).info.status == "FINISHED"
    assert not _servers(runtime)  # the dead server removed its socket, and said why
    (log,) = (runtime / "rlbench").glob("helper-*.sock.log")
    assert "a broken install" in log.read_text()
