"""Shared fixtures.

``mlflow_store`` gives each test its own MLflow SQLite store in ``tmp_path`` without paying for
MLflow's schema migrations (~2.5 s) every time: one migrated store is built per test session,
shared by all pytest-xdist workers (built once under a file lock in the session's common temp
directory), and copied for each test. Use it in-process::

    tracker = make_tracker(mlflow_store.tracking_cfg())
    run = mlflow_store.client().get_run(run_id)

or for a subprocess (``rlbench-train``)::

    subprocess.run(["rlbench-train", *mlflow_store.overrides(), "algo=threshold"], ...)
    runs = mlflow_store.runs()          # the runs of experiment "rlbench", newest first

The fixture removes ``MLFLOW_TRACKING_URI`` from the environment (it would override the store)
and turns MLflow's telemetry off for the test and its subprocesses.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# the suite's tracking fork servers (rlbench/tracking/forkserver.py) end soon after it does
os.environ.setdefault("RLBENCH_HELPER_IDLE", "30")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--dist loadgroup`` groups again under pytest 9.2: xdist 3.8 marks a test's group by
    appending ``@<group>`` to ``item._nodeid``, which pytest 9.2 no longer reads (node ids are
    structured, ``item._id``), so every ``xdist_group`` was silently ignored and a group's
    expensive fixtures were built on both workers (pytest-dev/pytest-xdist#1386). Drop this once
    a fixed xdist is pinned (the suffix is then already there)."""
    if not getattr(config.option, "loadgroup", False):  # set in xdist workers of loadgroup
        return
    from _pytest.nodeid import NodeId

    for item in items:
        marks = item.iter_markers("xdist_group")
        groups = sorted(
            {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in marks}
        )
        if groups and "@" not in item.nodeid.rsplit("]", 1)[-1]:
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")


# bump when the template must be rebuilt for another reason than the MLflow version
_TEMPLATE_FORMAT = 1


@dataclass(frozen=True)
class MlflowStore:
    """A fresh, migrated MLflow store: ``uri`` (``sqlite:////abs/mlflow.db``) and artifacts."""

    uri: str
    db_path: Path
    artifact_dir: Path

    def tracking_cfg(self, **extra: Any) -> dict[str, Any]:
        """A ``cfg.tracking`` mapping pointing at this store (extra keys override)."""
        cfg = {
            "enabled": True,
            "uri": self.uri,
            "artifact_location": str(self.artifact_dir),
            "experiment": "rlbench",
            "run_name": None,
        }
        return cfg | extra

    def overrides(self) -> list[str]:
        """Hydra overrides that point ``rlbench-train`` at this store."""
        return [f"tracking.uri={self.uri}", f"tracking.artifact_location={self.artifact_dir}"]

    def client(self) -> Any:
        """An ``MlflowClient`` on this store (imports MLflow, ~1 s the first time)."""
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def runs(self, experiment: str = "rlbench") -> list[Any]:
        """Every run of ``experiment``, newest first ([] if the experiment does not exist)."""
        client = self.client()
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return []
        return list(
            client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"])
        )


def _build_template(path: Path) -> None:
    """Create and migrate an MLflow SQLite store at ``path`` (atomically: build, then rename)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    partial = path.with_suffix(f".partial{os.getpid()}")
    store = SqlAlchemyStore(f"sqlite:///{partial}", (path.parent / "template-artifacts").as_uri())
    store.engine.dispose()
    partial.replace(path)


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated MLflow store per test session, shared by all xdist workers."""
    from importlib.metadata import version

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    template = shared / f"mlflow-template-{version('mlflow')}-{_TEMPLATE_FORMAT}.db"
    with FileLock(str(template) + ".lock"):
        if not template.exists():
            _build_template(template)
    return template


@pytest.fixture
def mlflow_store(
    mlflow_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> MlflowStore:
    """A copy of the migrated store in ``tmp_path``: ``uri``, ``db_path``, ``artifact_dir``."""
    db = tmp_path / "mlflow" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(mlflow_template, db)
    artifacts = tmp_path / "mlflow" / "mlartifacts"
    artifacts.mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return MlflowStore(uri=f"sqlite:///{db}", db_path=db, artifact_dir=artifacts)


@pytest.fixture
def console(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., subprocess.CompletedProcess]:
    """``console(main, *args, env={...})``: a console script's ``main(argv)`` run in this
    process with ``env`` set for the call, as its own process would run (a process costs seconds
    of imports): the exit code and what it printed. The MLflow and alembic log levels the
    scripts set are put back."""
    import logging

    def run(
        main: Callable[[list[str]], int], *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        levels = {name: logging.getLogger(name).level for name in ("mlflow", "alembic")}
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        try:
            code = main(list(args))
        finally:
            for key in env or {}:
                monkeypatch.delenv(key)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


@pytest.fixture(autouse=True)
def _no_store_options_left_behind():
    """A command called in-process (``collect_command([...])``, not its console script) leaves
    its parser's store options declared; the next test's messages would name its flags."""
    yield
    from rlbench import cli

    cli.set_store_options(None)


@pytest.fixture(autouse=True)
def _ctrl_c_as_from_a_terminal():
    """Every test starts with Ctrl-C handled as Python's default: some earlier test can leave
    the xdist worker with SIGINT ignored, every child a test starts then inherits that, and
    tests that send SIGINT to a job saw it run to its end (exit 0, not 130)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    yield
