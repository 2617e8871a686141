"""Readers never change the database they are pointed at, on a PostgreSQL server too.

MLflow creates its 65 tables in any database it opens, and Optuna its 12: ``rlbench-report``,
``rlbench-verify``, ``rlbench-registry list``, ``rlbench-forecast evaluate``, ``rlbench-serve``
and the analysis functions used to turn an empty database (or the other program's) into a
store, then say "no MLflow experiment". Each is run here against a database of its own on one
real PostgreSQL server (started once for this module; skipped where PostgreSQL is missing),
and the database's tables are counted afterwards. Writers (the tracker's store) still create.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from scale_out_kit import (
    PSYCOPG,
    READER_PASSWORD,
    READER_USER,
    SUPERUSER_PASSWORD,
    TEAM_PASSWORD,
    TEAM_USER,
    Postgres,
    start_or_skip,
)

from rlbench.errors import UserError

BIN = Path(sys.executable).parent
MODEL = "models:/fc@prod"
COMMANDS = {
    "report": ["rlbench-report", "tracking.uri={url}"],
    "verify": ["rlbench-verify", "--tracking-uri", "{url}"],
    "registry list": ["rlbench-registry", "--tracking-uri", "{url}", "list"],
    "forecast evaluate": ["rlbench-forecast", "evaluate", MODEL, "--tracking-uri", "{url}"],
    "serve": ["rlbench-serve", "models:/policy@champion", "--tracking-uri", "{url}"],
}


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    server = start_or_skip()
    yield server
    server.stop()


def fresh(pg: Postgres, name: str) -> str:
    """A new empty database owned by the team's user; its URL (with the password)."""
    pg.sql(f"CREATE DATABASE {name} OWNER {TEAM_USER}")
    return pg.url(name)


def tables(pg: Postgres, db: str) -> int:
    return pg.sql(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'", db=db
    )[0][0]


def no_secret(text: str) -> None:
    from urllib.parse import quote

    for secret in (TEAM_PASSWORD, READER_PASSWORD, SUPERUSER_PASSWORD):
        assert secret not in text and quote(secret, safe="") not in text


@pytest.mark.slow
def test_every_reader_command_leaves_an_empty_database_empty(pg, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR",)}
    env |= {"OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    started = {}
    for i, (case, args) in enumerate(COMMANDS.items()):
        db = f"reader{i}"
        url = fresh(pg, db)
        line = [a.format(url=url) for a in args]
        started[case] = db, subprocess.Popen(
            [str(BIN / line[0]), *line[1:]], cwd=tmp_path, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
    for case, (db, process) in started.items():
        _, err = process.communicate(timeout=300)
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert process.returncode == 2 and len(errors) == 1, f"{case}: {err}"
        assert errors[0].startswith(
            f"error: no MLflow store at postgresql+psycopg://{TEAM_USER}:***@127.0.0.1:"
            f"{pg.port}/{db} (an empty database): "
        ), errors[0]
        assert errors[0].endswith("(it was left untouched)"), errors[0]
        option = "tracking.uri" if case == "report" else "--tracking-uri"
        assert f"point {option} / MLFLOW_TRACKING_URI at " in errors[0], errors[0]
        no_secret(err)
        assert tables(pg, db) == 0, f"{case} created tables in {db}"


def test_the_analysis_functions_leave_an_empty_database_empty(pg):
    from rlbench.results import analysis
    from rlbench.tracking import registry

    calls = {
        "load_runs": lambda url: analysis.load_runs(tracking_uri=url),
        "load_curves": lambda url: analysis.load_curves(["0" * 32], tracking_uri=url),
        "versions": lambda url: registry.versions(tracking_uri=url),
        "load_study": lambda url: analysis.load_study(storage=url),
    }
    for case, call in calls.items():
        db = f"lib_{case}"
        url = fresh(pg, db)
        kind = "Optuna storage" if case == "load_study" else "MLflow store"
        with pytest.raises(UserError, match=rf"^no {kind} at postgresql\S*:\*\*\*@\S+/{db} ") as e:
            call(url)
        no_secret(str(e.value))
        assert tables(pg, db) == 0, f"{case} created tables in {db}"


@pytest.fixture(scope="module")
def stores(pg) -> dict[str, str]:
    """An MLflow store made by the writer rlbench-train uses, and an Optuna storage."""
    import optuna

    from rlbench.tracking.store import Store, resolve_uri

    mlflow_url, optuna_url = fresh(pg, "team_mlflow"), fresh(pg, "team_optuna")
    Store(resolve_uri(mlflow_url)).prepare("rlbench", None)  # writers still create stores
    assert tables(pg, "team_mlflow") > 40
    optuna.create_study(study_name="s", storage=pg.url("team_optuna", driver=PSYCOPG))
    return {"mlflow": mlflow_url, "optuna": optuna_url}


def test_one_programs_database_is_not_taken_for_the_others(pg, stores):
    from rlbench.results import analysis

    before = {db: tables(pg, db) for db in ("team_mlflow", "team_optuna")}
    not_optuna = r"/team_mlflow is not an Optuna storage \(its tables: .*; it was left untouched\)"
    with pytest.raises(UserError, match=not_optuna):
        analysis.load_study(storage=stores["mlflow"])
    not_mlflow = r"/team_optuna is not an MLflow store \(its tables: .*studies.*\): point "
    with pytest.raises(UserError, match=not_mlflow + r".* \(it was left untouched\)$"):
        analysis.load_runs(tracking_uri=stores["optuna"])
    assert {db: tables(pg, db) for db in before} == before
    assert analysis.load_runs(tracking_uri=stores["mlflow"]).empty  # the right one still reads
    assert analysis.load_study(storage=stores["optuna"])[0].study_name == "s"


def test_a_user_without_rights_is_told_once_what_to_do(pg, stores):
    from rlbench.results import analysis

    with pytest.raises(UserError) as caught:
        analysis.load_runs(tracking_uri=pg.url("team_mlflow", READER_USER, READER_PASSWORD))
    said = str(caught.value)
    assert "(permission denied for table alembic_version): make reader the database's " in said
    assert said.count("make reader the database's owner") == 1, said  # it used to repeat
    no_secret(said)
