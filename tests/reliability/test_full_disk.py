"""A full disk ends a command with one ``error:`` line naming the cause and the path, exit 2.

Never a score, and no run left RUNNING: where the store itself could not be written, the next
command that opens it ends the dead process's run FAILED with the reason. The file system is a
small tmpfs mounted for the test; where mounting is not permitted, the same commands run as
processes with a file size limit (``RLIMIT_FSIZE``), which fails writes the same way (EFBIG).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_kit import child_env, optuna_states

pytestmark = pytest.mark.slow
FS_BYTES = 6 * 2**20
CAUSES = ("no space left on device", "database or disk is full", "file too large")
PPO = ["algo=ppo", "debug=fast", "++eval.trajectory_plot=false", "train.progress=off"]


class SmallDisk:
    """A folder on a nearly full file system: a tmpfs, or (fallback) a file size limit."""

    def __init__(self, root: Path) -> None:
        self.path = root / "disk"
        self.path.mkdir()
        probe = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(self.path)],
            capture_output=True,
        )
        self.mounted = probe.returncode == 0
        self.limit: int | None = None
        self.filler = self.path / "filler"

    def fill(self, free_bytes: int) -> None:
        """Leave ``free_bytes`` free (tmpfs), or limit every file to that size (fallback)."""
        if not self.mounted:
            self.limit = max(free_bytes, 4096)
            return
        self.filler.unlink(missing_ok=True)
        st = os.statvfs(self.path)
        size = st.f_bavail * st.f_frsize - free_bytes
        if size > 0:
            with open(self.filler, "wb") as out:
                os.posix_fallocate(out.fileno(), 0, size)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)
        self.limit = None

    def run(self, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
        """``rlbench-train *args`` as a process (with the size limit, in the fallback)."""
        limit = self.limit

        def limited() -> None:
            if limit is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        return subprocess.run(
            [sys.executable, "-c", "from rlbench.run.main import main; main()", *args],
            cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=300,
            preexec_fn=limited,
        )  # fmt: skip

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    small = SmallDisk(tmp_path)
    try:
        yield small
    finally:
        small.unmount()


def _check_refused(done: subprocess.CompletedProcess, place: Path) -> None:
    """Exit 2, one ``error:`` line naming the cause and a path, no score, no traceback."""
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert len(errors) == 1, done.stderr[-3000:]
    assert any(cause in errors[0] for cause in CAUSES), errors[0]
    assert str(place) in errors[0] or "MLflow store" in errors[0], errors[0]
    assert "score:" not in done.stdout
    assert "Traceback" not in done.stderr


def _statuses(store) -> dict[str, str]:
    return {r.info.run_id: r.info.status for r in store.runs()}


@pytest.mark.parametrize("free_kb", [96])
def test_outputs_on_a_full_disk(mlflow_store, tmp_path, disk, free_kb):
    """Checkpoints, the model and artifacts on the full disk; the store elsewhere: the run
    ends FAILED with the reason, the command exits 2."""
    place = disk.path
    args = [
        *PPO, f"hydra.run.dir={place}/run", f"train.checkpoint_dir={place}/ckpt",
        f"tracking.uri={mlflow_store.uri}", f"tracking.artifact_location={place}/art",
    ]  # fmt: skip
    (place / "run").mkdir()
    disk.fill(free_kb * 1024)
    done = disk.run(args, tmp_path)
    _check_refused(done, place)
    runs = mlflow_store.runs()
    for run in runs:  # (none, if Hydra could not even write its own files)
        assert run.info.status == "FAILED", run.info.status
        assert any(c in run.data.tags.get("error", "").lower() for c in CAUSES), run.data.tags


@pytest.mark.parametrize("free_kb", [24])
def test_store_on_a_full_disk(mlflow_store, tmp_path, disk, free_kb):
    """The MLflow store itself on the full disk: exit 2; once there is space again, the next
    command that opens the store ends the dead process's run FAILED with the reason."""
    db = disk.path / "mlflow.db"
    db.write_bytes(mlflow_store.db_path.read_bytes())
    uri = f"sqlite:///{db}"
    args = [*PPO, f"tracking.uri={uri}", f"tracking.artifact_location={tmp_path}/art"]
    disk.fill(free_kb * 1024)
    done = disk.run(args, tmp_path)
    _check_refused(done, disk.path)
    disk.free()
    after = disk.run(["algo=threshold", "debug=fast", "train.progress=off", *args[4:]], tmp_path)
    assert after.returncode == 0, after.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("rlbench").experiment_id])
    assert all(r.info.status in ("FINISHED", "FAILED") for r in runs), [r.info for r in runs]
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert all(r.data.tags.get("error") for r in failed)
    assert sum(r.info.status == "FINISHED" for r in runs) == 1  # only the later threshold run


def test_sweep_on_a_full_disk(mlflow_store, tmp_path, disk):
    """A sweep whose study and outputs sit on the full disk stops with one line (exit 2); the
    next sweep leaves no trial and no run RUNNING."""
    db = disk.path / "optuna.db"
    args = [
        "-m", "search=threshold", "hydra.sweeper.n_trials=1", "debug=fast",
        "train.progress=off", "++eval.trajectory_plot=false", f"hydra.sweeper.storage=sqlite:///{db}",
        f"hydra.sweep.dir={disk.path}/multirun", f"train.checkpoint_dir={disk.path}/ckpt",
        *mlflow_store.overrides(),
    ]  # fmt: skip
    first = disk.run(args, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]  # the study exists, with a trial
    more = [*args[:2], "hydra.sweeper.n_trials=3", *args[3:]]
    disk.fill(0)
    done = disk.run(more, tmp_path)
    _check_refused(done, disk.path)
    disk.free()
    again = disk.run(more, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    states = {state for _, state in optuna_states(db)}
    assert "RUNNING" not in states, states
    assert all(s != "RUNNING" for s in _statuses(mlflow_store).values())
    assert sorted(states) == ["COMPLETE"], states
