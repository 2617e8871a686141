"""The first use of a store, interrupted, leaves nothing broken; a broken store is named.

A command stopped while MLflow migrated a new ``mlflow.db`` (its helper killed on a loaded
machine) used to leave a half-migrated store, after which every command failed with "table
_alembic_tmp_... already exists". Stores are now created aside and renamed into place.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reliability_kit import child_env

pytestmark = pytest.mark.slow
# the helper's first open of a store
CREATE_MLFLOW = "import sys; from rlbench.tracking.store import Store; Store(sys.argv[1])"
CREATE_OPTUNA = (
    "import sys; from pathlib import Path; "
    "from hydra_plugins.rlbench_optuna_sweeper._study import open_storage; "
    "open_storage(sys.argv[1], 60, None, 2)"
)


def _kill_while_creating(code: str, uri: str, folder: Path) -> None:
    """Start creating the store, SIGKILL the process while its aside copy is being made.
    No template cache (a file where its folder would be): the store is migrated in place,
    slowly enough to be caught; a copied template is the same aside-then-link path."""
    no_cache = folder / "no-cache"
    no_cache.write_text("")
    env = child_env(XDG_CACHE_HOME=str(no_cache))
    proc = subprocess.Popen([sys.executable, "-c", code, uri], env=env, cwd=folder)
    deadline = time.monotonic() + 120
    while not list(folder.glob(".*.creating-*")):
        assert proc.poll() is None, "finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(0.05)  # in the middle of the migration
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _train(folder: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    return subprocess.run(
        [sys.executable, "-c", "from rlbench.run.main import main; main()", *flags,
         "algo=threshold", "debug=fast", "train.progress=off", *overrides],
        cwd=folder, env=child_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("store", ["mlflow", "optuna"])
def test_a_first_use_killed_mid_migration_leaves_no_store(tmp_path, store):
    db = tmp_path / f"{store}.db"
    code = CREATE_MLFLOW if store == "mlflow" else CREATE_OPTUNA
    _kill_while_creating(code, f"sqlite:///{db}", tmp_path)
    assert not db.exists()  # nothing half-made under the real name
    if store == "mlflow":
        done = _train(tmp_path, f"tracking.uri=sqlite:///{db}")
    else:
        done = _train(
            tmp_path, "-m", "search=threshold", "hydra.sweeper.n_trials=1",
            f"hydra.sweeper.storage=sqlite:///{db}", "tracking.enabled=false",
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert db.exists()
    assert not list(tmp_path.glob(".*.creating-*"))  # the dead process's aside copy is gone


def test_a_half_migrated_store_is_named_with_its_remedy(mlflow_store, tmp_path):
    with sqlite3.connect(mlflow_store.db_path) as con:
        con.execute("CREATE TABLE _alembic_tmp_runs (x INTEGER)")
    done = _train(tmp_path, *mlflow_store.overrides())
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr[-3000:]
    assert "half-migrated" in errors[0] and "_alembic_tmp_runs" in errors[0]
    assert f"rm {mlflow_store.db_path}" in errors[0] and "mlflow db upgrade" in errors[0]


@pytest.mark.parametrize("kind", ["directory", "not sqlite"])
def test_a_store_path_that_cannot_be_a_database_is_one_line(tmp_path, kind):
    path = tmp_path / "store"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_text("these are my notes, not a database\n")
    started = time.monotonic()
    done = _train(tmp_path, f"tracking.uri=sqlite:///{path}")
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr[-3000:]
    assert str(path) in errors[0]
    assert ("directory" if kind == "directory" else "not a SQLite database") in errors[0]
    assert time.monotonic() - started < 60  # no retry loop


HOT_JOURNAL = """
import os, signal, sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
con.execute("UPDATE experiments SET name = name || '-half-written'")
con.execute("CREATE TABLE filler (x BLOB)")
con.execute("INSERT INTO filler VALUES (zeroblob(5000000))")  # spills pages: a hot journal
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_store_a_killed_writer_left_mid_transaction_opens_for_readers_and_writers(
    mlflow_store,
):
    """A process killed mid-write leaves a hot journal; only a writable connection rolls it
    back, so a read-only check called the store "not usable" until some writer came along."""
    proc = subprocess.run([sys.executable, "-c", HOT_JOURNAL, str(mlflow_store.db_path)])
    assert proc.returncode == -signal.SIGKILL
    assert mlflow_store.db_path.with_name("mlflow.db-journal").exists()
    from rlbench.results.stores import check_readable_store
    from rlbench.tracking.store import Store

    check_readable_store(mlflow_store.uri)  # the report's check
    store = Store(mlflow_store.uri)  # the writer's check and open
    names = [e.name for e in store.client.search_experiments()]
    assert "Default" in names and not any("half-written" in n for n in names)  # rolled back
