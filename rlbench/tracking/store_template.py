"""A migrated, empty MLflow SQLite store to copy: a new store in milliseconds instead of the
3 to 4 s MLflow's fifty-odd schema migrations take on first use.

One template per installed MLflow version lives in the user's cache folder
(``$XDG_CACHE_HOME/rlbench``, else ``~/.cache/rlbench``); ``make setup`` builds it
(``python -m rlbench.tracking.store_template``), otherwise the first new store does. Before each
use its schema revision is checked against the installed MLflow's head revision: a template that
does not match is rebuilt, never copied. Anything that stops the cache (a read-only home, a full
disk) only means the store is migrated in place, as without a template.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import uuid
from importlib.metadata import version
from pathlib import Path


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "rlbench"


def template_path() -> Path:
    return cache_dir() / f"mlflow-{version('mlflow')}-empty.db"


def head_revision() -> str:
    """The schema revision the installed MLflow migrates a store to."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    return ScriptDirectory.from_config(_get_alembic_config("sqlite://")).get_current_head()


def stored_revision(db: Path) -> str | None:
    """The schema revision ``db`` is at (None if it has none or is unreadable)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else row[0]


def migrate(db: Path) -> None:
    """Create ``db`` as MLflow does on first use: tracking and registry schema, experiment 0."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{db}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments(max_results=1)
    client.search_registered_models(max_results=1)
    for store in (client._tracking_client.store, client._get_registry_client().store):
        with contextlib.suppress(Exception):
            store.engine.dispose()


def template() -> Path | None:
    """A template at the installed MLflow's head revision, built if needed; None if the cache
    cannot hold one."""
    path = template_path()
    head = head_revision()
    if stored_revision(path) == head:
        return path
    try:
        from filelock import FileLock

        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=120):
            if stored_revision(path) == head:  # built meanwhile by another process
                return path
            # a name of its own per build: MLflow caches a store per URI within a process
            tmp = path.with_name(f".{path.name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            tmp.unlink(missing_ok=True)
            try:
                migrate(tmp)
                if stored_revision(tmp) != head:
                    return None
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
    except Exception:  # a template is an optimisation: migrating in place still works
        return None
    return path


def copy_template(db: Path) -> bool:
    """Write an empty store to ``db`` from the template; False (nothing written) if there is
    none. Experiment 0 ("Default") gets the artifact location and times MLflow would give it
    here and now (``./mlruns/0`` of the current folder)."""
    source = template()
    if source is None:
        return False
    now = int(time.time() * 1000)
    location = os.path.join(os.path.abspath("mlruns"), "0")
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(db)) as dst,
    ):
        src.backup(dst)
        dst.execute(
            "UPDATE experiments SET artifact_location = ?, creation_time = ?, "
            "last_update_time = ? WHERE experiment_id = 0",
            (location, now, now),
        )
        dst.commit()
    return True


if __name__ == "__main__":  # make setup: build the template once
    print(template() or "no template: new stores will be migrated in place")
