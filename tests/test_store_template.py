"""A new MLflow store is a copy of a migrated template: the same schema as MLflow's own first
use, rebuilt (never copied) when it does not match the installed MLflow."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path

import pytest

from rlbench.tracking import store_template
from rlbench.tracking.store import Store


def schema(db: Path) -> set[str]:
    """Every table, index and trigger with its definition. The clauses of a definition are
    compared as a set: MLflow's batch migrations emit a table's CHECK constraints in set order,
    which differs between two processes (string hashing), for one and the same schema."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
    return {f"{kind} {name}: {_clauses(sql)}" for kind, name, sql in rows}


def _clauses(sql: str | None) -> list[str]:
    return sorted(line.strip().rstrip(",").strip() for line in (sql or "").splitlines())


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "cache" / "rlbench"


def test_a_copied_store_has_mlflows_own_schema_and_default_experiment(cache, tmp_path):
    migrated = tmp_path / "migrated.db"
    store_template.migrate(migrated)
    copied = tmp_path / "copied.db"
    before = int(time.time() * 1000)
    assert store_template.copy_template(copied)
    assert sorted(schema(copied) ^ schema(migrated)) == []
    assert store_template.stored_revision(copied) == store_template.head_revision()
    with contextlib.closing(sqlite3.connect(copied)) as conn:
        (location, created) = conn.execute(
            "SELECT artifact_location, creation_time FROM experiments WHERE experiment_id = 0"
        ).fetchone()
    assert location == os.path.join(str(tmp_path), "mlruns", "0")  # as MLflow sets it here
    assert created >= before
    store = Store(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")  # opens, and MLflow agrees
    assert store.prepare("rlbench", None)


def test_a_template_of_another_schema_is_rebuilt_not_copied(cache, tmp_path):
    path = store_template.template()
    assert path is not None and path.parent == cache
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'an-older-revision'")
        conn.commit()
    assert store_template.template() == path
    assert store_template.stored_revision(path) == store_template.head_revision()


def test_without_a_cache_a_new_store_is_migrated_in_place(tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    assert store_template.template() is None
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert store.prepare("rlbench", None)
    assert store_template.stored_revision(tmp_path / "mlflow.db") is not None
