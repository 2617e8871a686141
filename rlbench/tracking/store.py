"""MLflow operations on one tracking store: where it is, whether it can be used, and the writes.

Every write rlbench makes to MLflow runs goes through :class:`Store` (a training run's tracker,
a sweep's parent run, a report's run, the stale-run cleanup); the Model Registry's writes are
:mod:`rlbench.tracking.registry`'s. It runs wherever the tracker's work
runs: in the helper process (:mod:`rlbench.tracking.helper`) or in the job itself
(``tracking.background=false``). Keeps MLflow's limits, retries SQLite's
"database is locked" with backoff, and serialises opening a new SQLite store across processes.

A new SQLite store is created and migrated aside, then renamed into place, so a command stopped
during its first use never leaves a half-migrated store; one left by an older version is named
with its remedy. A write the machine refuses (full disk, size limit, read-only) is a
:class:`UserError` naming the cause and the path, and a run whose records were lost never ends
FINISHED. Opening a store first ends FAILED the runs of this host whose process died without
ending them (when the store itself was full, say), with the reason if the dying process left it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlbench.cli import store_options
from rlbench.errors import UserError, first_line, storage_message
from rlbench.tracking import schema
from rlbench.tracking.databases import is_postgres, mlflow_pool_env, server_message, with_driver
from rlbench.tracking.provenance import hostname, process_alive
from rlbench.tracking.redaction import display_uri, mask_passwords, remember, split_credentials

log = logging.getLogger(__name__)

DEFAULT_URI = "sqlite:///outputs/mlflow.db"
STATUSES = ("FINISHED", "FAILED", "KILLED")
# MLflow's limits (mlflow.utils.validation): it rejects longer values and larger batches
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
MAX_METRICS_PER_BATCH = 1000
FLUSH_EVERY_S = 10.0
TRUNCATED = "...[truncated]"
# the helper's HTTP client gives up after seconds, not MLflow's default of minutes of retries
HTTP_ENV_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(TRUNCATED)] + TRUNCATED


# --------------------------------------------------------------------------- store checks


def quiet_engine_log() -> None:
    """MLflow logs "Create SQLAlchemy engine with pool options" at INFO for every store it
    opens once pool settings are in the environment (rlbench sets them for PostgreSQL; a team
    may export them): not a line a command's user needs. Quieter levels already set stay."""
    engine_log = logging.getLogger("mlflow.store.db.utils")
    if engine_log.level < logging.WARNING:
        engine_log.setLevel(logging.WARNING)


def resolve_uri(uri: str | None) -> str:
    """The store to use: ``uri`` if given (a value set on the command line, in a preset, or by
    the config's default, which itself reads ``MLFLOW_TRACKING_URI``), else
    ``MLFLOW_TRACKING_URI``, else ``sqlite:///outputs/mlflow.db``; a relative SQLite path made
    absolute; an in-memory SQLite one refused.

    A tracking server's ``user:password@`` moves into ``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD`` (which MLflow reads, here and in child processes such as the
    tracking helper) and out of the URI, so that no message or log line can show it.
    """
    if uri is not None and not isinstance(uri, str):  # tracking.uri=[a] composes a list
        raise UserError(f"tracking.uri must be a URL, got {uri!r}")
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    quiet_engine_log()
    scheme = re.match(r"^sqlite(\+\w+)?:", uri, re.IGNORECASE)
    if scheme:  # SQLITE:, sqlite+pysqlite: (the default driver) read as sqlite:
        uri = "sqlite:" + uri[scheme.end() :]
    if scheme and sqlite_path(uri) is None:
        path = uri.partition(":")[2].lstrip("/").partition("?")[0]
        if path and path != ":memory:":  # sqlite:/x.db, sqlite://x.db: SQLAlchemy reads no file
            raise UserError(
                f"tracking store {uri}: a SQLite URL names its file after three slashes: "
                f"sqlite:///{path} (relative to here) or sqlite:////an/absolute/path.db"
            )
        raise UserError(
            f"tracking store {uri} is an in-memory database: what is recorded would vanish "
            "with the process (and each helper process has a database of its own); give a "
            "file, e.g. sqlite:///outputs/mlflow.db"
        )
    if uri.startswith("sqlite:///"):
        path, sep, query = uri.removeprefix("sqlite:///").partition("?")
        if path and path != ":memory:" and not Path(path).is_absolute():
            uri = "sqlite:///" + str(Path.cwd() / path) + sep + query
    elif uri.startswith(("http://", "https://")):
        bare, user, password = split_credentials(uri)
        if password is not None:
            remember(password)
            os.environ["MLFLOW_TRACKING_USERNAME"] = user or ""
            os.environ["MLFLOW_TRACKING_PASSWORD"] = password
            uri = bare
    elif is_postgres(uri):  # the store in a PostgreSQL database, without a tracking server
        _, _, password = split_credentials(uri)
        if password is not None:
            remember(password)
        uri = with_driver(uri)
        for key, value in mlflow_pool_env().items():
            os.environ.setdefault(key, value)
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and in-memory ones)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").partition("?")[0]
    return Path(path) if path and path != ":memory:" else None


def check_store(uri: str, timeout: float = 3.0) -> None:
    """Fail in a second, with one line saying what to do, if the store cannot be used.

    A tracking server is asked for ``/health`` with the credentials MLflow will send
    (``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` or ``MLFLOW_TRACKING_TOKEN``): any answer means
    it is reachable; a refusal of the credentials (401, 403) is its own error. Messages show
    the URI with its secrets masked and end with the running command's own options
    (:func:`rlbench.cli.store_options`).
    """
    shown = display_uri(uri)
    alternatives = store_options().alternatives()
    db = sqlite_path(uri)
    if db is not None:
        if db.exists():  # a directory, another file: said before any lock file is made
            check_sqlite_store(db, shown)
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(
                f"cannot create {db.parent} for the MLflow store {shown} "
                f"({err.strerror or err}): choose a writable path{alternatives}"
            ) from None
        if not os.access(db if db.exists() else db.parent, os.W_OK):
            raise UserError(
                f"the MLflow store {shown} is not writable: choose a writable path{alternatives}"
            )
    elif is_postgres(uri):
        check_database(uri, "the MLflow store", timeout)
    elif uri.startswith(("http://", "https://")):
        import base64
        import urllib.error
        import urllib.request

        bare, user, password = split_credentials(uri)
        if password is None:
            user = os.environ.get("MLFLOW_TRACKING_USERNAME")
            password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
        headers = {}
        if user is not None and password is not None:
            pair = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {pair}"
        elif os.environ.get("MLFLOW_TRACKING_TOKEN"):
            headers["Authorization"] = f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"
        base = bare.split("?", 1)[0].split("#", 1)[0].rstrip("/")
        # /health: does it answer at all; the API: does it take the credentials (a slow
        # answer there is not "unreachable": the server did answer)
        for path in ("/health", "/api/2.0/mlflow/experiments/search?max_results=1"):
            try:
                request = urllib.request.Request(base + path, headers=headers)
                urllib.request.urlopen(request, timeout=timeout).close()
            except urllib.error.HTTPError as err:  # a server answered
                if err.code in (401, 403):
                    status = f"{err.code} {err.reason}"
                    raise UserError(refused_credentials(shown, status)) from None
            except (OSError, ValueError) as err:
                if path != "/health":
                    return
                reason = mask_passwords(str(getattr(err, "reason", err)))
                raise UserError(
                    f"MLflow tracking server {shown} is unreachable ({reason}): start it "
                    f"(mlflow server --host 127.0.0.1 --port PORT){alternatives}"
                ) from None
    else:
        _check_kind(uri, shown)


#: schemes MLflow opens that rlbench leaves to it (their driver or service says what is wrong)
OTHER_STORES = ("mysql", "mssql", "databricks", "databricks-uc", "uc")
KNOWN_STORES = ("sqlite", "http", "https", "postgresql", "postgres")  # checked above


def _check_kind(uri: str, shown: str) -> None:
    """An unknown scheme, or MLflow's retired folder store, in one line before any work
    (MLflow itself would say so only when a run opens: after training, for some commands)."""
    if uri.strip().lower() in OTHER_STORES:  # "databricks" alone names a profile's workspace
        return
    found = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", uri)
    scheme = found.group(1).lower().split("+")[0] if found and len(found.group(1)) > 1 else ""
    if scheme in ("mysql", "mssql"):  # their driver is an extra: missing, it is said now
        from sqlalchemy import create_engine

        from rlbench.tracking.databases import server_message

        try:
            create_engine(uri).dispose()  # loads the driver, connects to nothing
        except Exception as err:
            said = server_message(err, uri)
            if said is not None:
                raise UserError(f"cannot open the MLflow store {shown}: {said}") from None
        return
    if scheme in OTHER_STORES or scheme in KNOWN_STORES:  # (another spelling: MLflow's to say)
        return
    if scheme in ("", "file"):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("true", "1", "yes"):
            return
        path = uri.removeprefix("file://").removeprefix("file:") or "mlflow"
        raise UserError(
            f"tracking store {shown} is a folder store (MLflow's retired file backend): write "
            f"sqlite:///{path.rstrip('/').removesuffix('.db')}.db for a database file, or set "
            "MLFLOW_ALLOW_FILE_STORE=true to use the folder"
        )
    raise UserError(
        f"tracking store {shown}: MLflow has no {scheme}:// store; use sqlite:///<file>.db, "
        "http(s)://<tracking server> or postgresql://<user>@<host>/<database>"
    )


def refused_credentials(shown: str, status: str) -> str:
    """The line for a tracking server that refused the credentials (``status``: "401 ...")."""
    key = store_options().key
    return (
        f"MLflow tracking server {shown} refused the credentials ({status}): check the user and "
        f"password in {key} (http://USER:PASSWORD@host) or MLFLOW_TRACKING_USERNAME/PASSWORD"
    )


def check_database(url: str, what: str, timeout: float = 3.0) -> None:
    """Connect once to the database server behind ``url``: one line naming the URL (password
    masked) and the reason when it is unreachable or refuses the credentials."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    driven = with_driver(url)
    try:
        engine = create_engine(
            driven, poolclass=NullPool, connect_args={"connect_timeout": int(timeout)}
        )
        with engine.connect():
            pass
        engine.dispose()
    except Exception as err:
        reason = server_message(err, driven) or mask_passwords(first_line(err))
        raise UserError(f"cannot open {what} {display_uri(url)}: {reason}") from None


def artifact_uri(location: str | None, tracking_uri: str) -> str | None:
    """Where a new experiment keeps artifacts: a server decides itself; else a file URI."""
    if not location or tracking_uri.startswith(("http://", "https://", "databricks")):
        return None
    if "://" in location or location.startswith("file:"):
        return location
    path = Path(location).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        off = store_options().off
        raise UserError(
            f"cannot create tracking.artifact_location={location} ({err.strerror or err}): "
            f"choose a writable directory{f', or {off}' if off else ''}"
        ) from None
    return path.as_uri()


# --------------------------------------------------------------------------- MLflow operations


def _retry_locked(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn`` retried with backoff while SQLite says "database is locked" (parallel writers)."""
    delay = 0.05
    for attempt in range(12):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if "database is locked" not in str(err) or attempt == 11:
                raise
            time.sleep(delay * (1.0 + random.random()))
            delay = min(2.0 * delay, 2.0)
    raise AssertionError("unreachable")


class Store:
    """MLflow operations on one tracking URI through one reused ``MlflowClient``.

    Runs in the helper process (or in-process with ``background=false``); remembers the runs it
    opened so that they can be ended if their job dies.
    """

    def __init__(self, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        db = sqlite_path(uri)
        # MLflow logs every failed statement with its traceback; the error that reaches the
        # user is ours, one line (storage_message / first_line)
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        try:
            # Opening a new SQLite store runs MLflow's schema migrations (in the client's
            # constructor, and again for the model registry); two processes doing that at once
            # (joblib workers of one multirun) collide ("_alembic_tmp_experiments already
            # exists"), so opening a SQLite store is serialised by a file lock beside it.
            with _first_open_lock(uri):
                if db is not None:
                    check_sqlite_store(db, uri)
                    if not db.exists():
                        _create_sqlite_store(db)
                self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
                self.client.search_experiments(max_results=1)
                self.client.search_registered_models(max_results=1)
        except UserError:
            raise
        except Exception as err:  # MLflow's errors, a missing database driver, a refused socket
            # the server refused the credentials (check_store's probe may have timed out first)
            code = re.search(r"error code (40[13]) != 200", str(err))
            if code and uri.startswith(("http://", "https://")):
                reason = "401 Unauthorized" if code.group(1) == "401" else "403 Forbidden"
                raise UserError(refused_credentials(display_uri(uri), reason)) from None
            message = (
                server_message(err, uri)
                or storage_message(err, db)
                or mask_passwords(first_line(err))
            )
            raise UserError(f"cannot open the MLflow store {display_uri(uri)}: {message}") from None
        self._experiments: dict[str, str] = {}
        self.open_runs: set[str] = set()
        self.lost: dict[str, str] = {}  # run id -> the first of its records the store refused
        self.end_runs_of_dead_processes()

    def perform(self, op: str, **kwargs: Any) -> Any:
        """Run the operation ``op``; a write the machine refuses (full disk, size limit,
        read-only) becomes a :class:`UserError` naming the cause and the store."""
        try:
            return getattr(self, op)(**kwargs)
        except UserError:
            raise
        except Exception as err:
            message = storage_message(err, sqlite_path(self.uri) or self.uri)
            if message is None:
                raise
            message = f"the MLflow store could not record the run ({op}): {message}"
            run_id = kwargs.get("run_id")
            if run_id:
                self.lost.setdefault(run_id, message)
            raise UserError(message) from None

    def prepare(self, experiment: str, artifact_location: str | None) -> str:
        """The experiment's id, creating it (with its artifact location) if it is new."""
        if experiment in self._experiments:
            return self._experiments[experiment]
        from mlflow.exceptions import MlflowException

        try:
            found = _retry_locked(self.client.get_experiment_by_name, experiment)
            if found is None:
                try:
                    exp_id = _retry_locked(
                        self.client.create_experiment, experiment, artifact_location
                    )
                except MlflowException as err:  # a parallel job created it first
                    if err.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    found = self.client.get_experiment_by_name(experiment)
            if found is not None:
                if found.lifecycle_stage == "deleted":
                    raise UserError(
                        f"MLflow experiment {experiment!r} in {self.uri} is deleted: restore it "
                        "(mlflow experiments restore) or choose tracking.experiment=<new name>"
                    )
                exp_id = found.experiment_id
            if found is None or schema.EXPERIMENT_KIND_TAG not in found.tags:
                # MLflow 3 UIs that read it open the experiment on its runs, not on traces
                _retry_locked(
                    self.client.set_experiment_tag,
                    exp_id, schema.EXPERIMENT_KIND_TAG, schema.TRAINING_KIND,
                )  # fmt: skip
        except UserError:
            raise
        except Exception as err:  # MLflow's errors, a missing database driver, a refused socket
            raise UserError(f"cannot use the MLflow store {self.uri}: {first_line(err)}") from None
        self._experiments[experiment] = exp_id
        return exp_id

    def start_run(
        self,
        experiment: str,
        artifact_location: str | None,
        run_name: str | None,
        params: dict[str, str],
        tags: dict[str, str],
        resume_run_id: str | None = None,
    ) -> str:
        """A new run (or ``resume_run_id`` set RUNNING again) with its params and tags."""
        from mlflow.exceptions import MlflowException

        params = {k: _clip(v, MAX_PARAM_LENGTH) for k, v in params.items()}
        if resume_run_id:
            try:
                run = _retry_locked(self.client.get_run, resume_run_id)
            except MlflowException:
                raise UserError(
                    f"cannot resume MLflow run {resume_run_id}: not found in {self.uri}"
                ) from None
            _retry_locked(self.client.update_run, resume_run_id, "RUNNING")
            if schema.ERROR_TAG in run.data.tags:  # the kill's error is not the resumed run's
                _retry_locked(self.client.delete_tag, resume_run_id, schema.ERROR_TAG)
            run_id, logged = resume_run_id, run.data.params
            # MLflow refuses to change a logged param: keep the first values, name the changes
            changed = sorted(k for k, v in params.items() if k in logged and logged[k] != v)
            params = {k: v for k, v in params.items() if k not in logged}
            tags = {**tags, schema.RESUMED_TAG: "true"}
            if changed:
                tags[schema.PARAMS_CHANGED_ON_RESUME_TAG] = ", ".join(changed)
        else:
            exp_id = self.prepare(experiment, artifact_location)
            try:
                run = _retry_locked(self.client.create_run, exp_id, run_name=run_name)
            except MlflowException:  # the remembered experiment may have been deleted since
                self._experiments.pop(experiment, None)
                exp_id = self.prepare(experiment, artifact_location)
                run = _retry_locked(self.client.create_run, exp_id, run_name=run_name)
            run_id = run.info.run_id
        self.open_runs.add(run_id)
        self.log_batch(run_id, params=params, tags=tags)
        return run_id

    def log_batch(
        self,
        run_id: str,
        metrics: list[list[Any]] | None = None,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Metrics ``[key, value, timestamp_ms, step]``, params and tags in MLflow-sized batches."""
        from mlflow.entities import Metric, Param, RunTag

        p = [Param(k, _clip(v, MAX_PARAM_LENGTH)) for k, v in (params or {}).items()]
        t = [RunTag(k, _clip(v, MAX_TAG_LENGTH)) for k, v in (tags or {}).items()]
        n = MAX_PARAMS_PER_BATCH
        for i in range(0, max(len(p), len(t)), n):
            _retry_locked(self.client.log_batch, run_id, params=p[i : i + n], tags=t[i : i + n])
        m = [Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in metrics or ()]
        for i in range(0, len(m), MAX_METRICS_PER_BATCH):
            _retry_locked(self.client.log_batch, run_id, metrics=m[i : i + MAX_METRICS_PER_BATCH])

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None) -> None:
        if Path(local_path).is_dir():
            self.client.log_artifacts(run_id, local_path, artifact_path)
        else:
            self.client.log_artifact(run_id, local_path, artifact_path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def end_run(
        self, run_id: str, status: str, error: str | None, metrics: list[list[Any]] | None = None
    ) -> None:
        """Write the last metrics and the error tag, then the final status (always attempted).

        A run whose records were lost (a write the store refused) ends FAILED, never FINISHED;
        if even that cannot be written, the reason is left in a note for whichever command
        opens the store next (:meth:`end_runs_of_dead_processes`).
        """
        lost: Exception | None = None
        try:
            self.log_batch(
                run_id, metrics=metrics, tags={schema.ERROR_TAG: error} if error else None
            )
        except Exception as err:
            lost = err
            message = storage_message(err, sqlite_path(self.uri) or self.uri)
            if message is not None:
                self.lost.setdefault(
                    run_id, f"the MLflow store could not record the run (end_run): {message}"
                )
        refused = self.lost.get(run_id)
        if refused is not None and status == "FINISHED":
            status, error = "FAILED", refused
            with contextlib.suppress(Exception):
                self.log_batch(run_id, tags={schema.ERROR_TAG: refused})
        try:
            _retry_locked(self.client.set_terminated, run_id, status)
        except Exception:
            _leave_note(run_id, status, error or refused)
            raise
        finally:
            self.open_runs.discard(run_id)
        if refused is not None:
            raise UserError(refused)
        if lost is not None:
            raise RuntimeError(
                f"run {run_id} ended {status} without its last metrics: {first_line(lost)}"
            )

    def find_runs(self, experiment: str, filter_string: str, status: str) -> list[dict[str, Any]]:
        """``{"run_id", "tags", "metrics"}`` of the experiment's runs in ``status`` that match
        ``filter_string``, newest first."""
        found = _retry_locked(self.client.get_experiment_by_name, experiment)
        if found is None:
            return []
        query = " and ".join(f for f in (filter_string, f"attributes.status = '{status}'") if f)
        runs = _retry_locked(self.client.search_runs, [found.experiment_id], query)
        return [
            {"run_id": r.info.run_id, "tags": dict(r.data.tags), "metrics": dict(r.data.metrics)}
            for r in runs
        ]

    def delete_run(self, run_id: str) -> None:
        """End the run KILLED and move it to MLflow's trash (``mlflow gc`` removes it)."""
        _retry_locked(self.client.set_terminated, run_id, "KILLED")
        _retry_locked(self.client.delete_run, run_id)
        self.open_runs.discard(run_id)

    def end_stale_runs(self, experiment: str, older_than: float | None, error: str) -> list[str]:
        """End FAILED the experiment's RUNNING runs that started over ``older_than`` s ago
        (all of them when None); returns their ids."""
        found = _retry_locked(self.client.get_experiment_by_name, experiment)
        if found is None:
            return []
        runs = _retry_locked(
            self.client.search_runs,
            [found.experiment_id],
            filter_string="attributes.status = 'RUNNING'",
        )
        cutoff = (time.time() - older_than) * 1000 if older_than is not None else float("inf")
        stale = [r.info.run_id for r in runs if r.info.start_time <= cutoff]
        for run_id in stale:
            self.end_run(run_id, "FAILED", error)
        return stale

    # ------------------------------------------------------------ leases (tracking.claim=lease)

    def claim_bid(self, key: str, owner: str) -> str:
        """A bid for the claim on ``key``: a RUNNING run in the claims experiment."""
        exp_id = self.prepare(schema.CLAIMS_EXPERIMENT, None)
        tags = {
            schema.CLAIM_KEY_TAG: key,
            schema.CLAIM_OWNER_TAG: owner,
            schema.CLAIM_BEAT_TAG: f"{time.time():.3f}",
        }
        run = _retry_locked(self.client.create_run, exp_id, run_name=key, tags=tags)
        return run.info.run_id

    def claim_holder(self, key: str, ttl: float) -> dict[str, str] | None:
        """``{"claim_id", "owner"}`` of the oldest live claim (or bid) on ``key``, or None.
        Claims not renewed within ``ttl`` seconds are ended FAILED on the way."""
        exp_id = self.prepare(schema.CLAIMS_EXPERIMENT, None)
        runs = _retry_locked(
            self.client.search_runs,
            [exp_id],
            f"tags.`{schema.CLAIM_KEY_TAG}` = '{key}' and attributes.status = 'RUNNING'",
        )
        now, live, here = time.time(), [], hostname()
        for run in runs:
            try:
                beat = float(run.data.tags.get(schema.CLAIM_BEAT_TAG, "0"))
            except ValueError:
                beat = 0.0
            owner = run.data.tags.get(schema.CLAIM_OWNER_TAG, "?")
            process, _, host = owner.partition("@")
            # a holder on this host is known dead at once; on another host, by its lease
            dead_here = host == here and bool(process) and not process_alive(process)
            if now - beat <= ttl and not dead_here:
                live.append(run)
                continue
            with contextlib.suppress(Exception):  # another process may end it first
                error = (
                    f"claim ended: its holder {owner} died"
                    if dead_here
                    else f"claim expired: {owner} did not renew it for {ttl:g} s (it died)"
                )
                self.client.set_tag(run.info.run_id, schema.ERROR_TAG, error)
                self.client.set_terminated(run.info.run_id, "FAILED")
        if not live:
            return None
        first = min(live, key=lambda r: (r.info.start_time, r.info.run_id))
        return {"claim_id": first.info.run_id, "owner": first.data.tags[schema.CLAIM_OWNER_TAG]}

    def claim_renew(self, claim_id: str) -> None:
        _retry_locked(self.client.set_tag, claim_id, schema.CLAIM_BEAT_TAG, f"{time.time():.3f}")

    def claim_release(self, claim_id: str) -> None:
        """End the claim and move its run to the trash (claims are bookkeeping, not results)."""
        _retry_locked(self.client.set_terminated, claim_id, "FINISHED")
        _retry_locked(self.client.delete_run, claim_id)

    # ------------------------------------------------------------ runs of dead processes

    def end_runs_of_dead_processes(self) -> list[str]:
        """End FAILED the RUNNING runs of this host whose process is gone; returns their ids.

        A process ends its own run, and its helper ends it when the process is killed; when
        neither could write (the store's disk was full, the helper was killed too), the run
        would stay RUNNING for ever. The reason is the note the process left, if it could.
        """
        from mlflow.entities import ViewType

        host = hostname()
        try:
            experiments = _retry_locked(
                self.client.search_experiments, view_type=ViewType.ACTIVE_ONLY, max_results=1000
            )
            if not experiments:
                return []
            runs = _retry_locked(
                self.client.search_runs,
                [e.experiment_id for e in experiments],
                f"attributes.status = 'RUNNING' and tags.`{schema.HOST_TAG}` = '{host}'",
                max_results=5000,
            )
        except Exception as err:  # e.g. a server that refuses the search: not ours to fix here
            log.debug("could not look for runs of dead processes: %s", first_line(err))
            return []
        ended = []
        for run in runs:
            process = run.data.tags.get(schema.PROCESS_TAG)
            if not process or process_alive(process):
                continue
            note = _read_note(run.info.run_id)
            reason = (note or {}).get("error") or (
                f"its process ({process.partition(':')[0]} on {host}) ended without ending "
                "the run; found by the next command that opened the store"
            )
            try:
                self.end_run(run.info.run_id, "FAILED", reason)
            except Exception as err:
                log.warning("could not end run %s FAILED: %s", run.info.run_id, first_line(err))
                continue
            _drop_note(run.info.run_id)
            ended.append(run.info.run_id)
        if ended:
            log.warning(
                "ended %d run(s) FAILED whose process died without ending them: %s",
                len(ended), ", ".join(ended),
            )  # fmt: skip
        return ended

    def end_open_runs(self, status: str, error: str) -> None:
        """End every run this store opened and nobody ended (their job died)."""
        for run_id in list(self.open_runs):
            with contextlib.suppress(Exception):
                self.end_run(run_id, status, error)


_STORES: dict[str, Store] = {}
_NOTES = Path(tempfile.gettempdir()) / "rlbench-unended-runs"  # usually another filesystem
SQLITE_HEADER = b"SQLite format 3\x00"


def _leave_note(run_id: str, status: str, error: str | None) -> None:
    """Why a run could not be ended, for the next command that opens its store."""
    with contextlib.suppress(OSError):
        _NOTES.mkdir(exist_ok=True)
        (_NOTES / f"{run_id}.json").write_text(json.dumps({"status": status, "error": error}))


def _read_note(run_id: str) -> dict[str, Any] | None:
    try:
        return json.loads((_NOTES / f"{run_id}.json").read_text())
    except (OSError, ValueError):
        return None


def _drop_note(run_id: str) -> None:
    with contextlib.suppress(OSError):
        (_NOTES / f"{run_id}.json").unlink()


def check_sqlite_store(db: Path, uri: str) -> None:
    """One line naming the problem when ``db`` cannot be an MLflow store: a directory, a file
    that is not SQLite, or a store an interrupted migration left behind."""
    options = store_options()
    if db.is_dir():
        inside = options.set_to(f"sqlite:///{db / 'mlflow.db'}")
        raise UserError(
            f"the MLflow store {uri} names a directory, not a database file: use {inside}, "
            "or another path"
        )
    try:
        with db.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as err:
        raise UserError(f"cannot read the MLflow store {db}: {err.strerror or err}") from None
    if header and header != SQLITE_HEADER:
        raise UserError(
            f"{db} is not a SQLite database, so it cannot be the MLflow store: move it away "
            f"or choose another {options.key}"
        )
    leftovers = _alembic_leftovers(db)
    if leftovers:
        raise UserError(
            f"the MLflow store {db} is half-migrated (an interrupted first use or upgrade left "
            f"{leftovers[0]}): if it holds no runs, delete it (rm {db}); otherwise run "
            f"sqlite3 {db} 'DROP TABLE {leftovers[0]}' and then mlflow db upgrade sqlite:///{db}"
        )


def tables_of(db: Path) -> tuple[set[str], str]:
    """The tables of SQLite file ``db``, read without creating any, and why there are none
    when there are none (an empty file, not SQLite, no tables yet): for readers that must not
    let MLflow or Optuna create their schema in whatever file they were pointed at."""
    try:
        if not db.stat().st_size:
            return set(), "an empty file"
        tables = sqlite_tables(db)
    except (OSError, sqlite3.DatabaseError) as err:
        return set(), first_line(err)
    return tables, "" if tables else "no tables in it"


def sqlite_tables(db: Path) -> set[str]:
    """The tables of SQLite file ``db`` (sqlite3 errors propagate). Opened read-write where the
    file and its folder allow it: a process killed mid-write leaves a hot journal that only a
    writable connection rolls back ("attempt to write a readonly database" otherwise); opening
    never creates, migrates or changes the store beyond that rollback."""
    writable = os.access(db, os.W_OK) and os.access(db.parent, os.W_OK)
    mode = "rw" if writable else "ro"
    with contextlib.closing(
        sqlite3.connect(f"{db.resolve().as_uri()}?mode={mode}", uri=True, timeout=30)
    ) as con:
        rows = con.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    return {name for (name,) in rows}


def _alembic_leftovers(db: Path) -> list[str]:
    """The ``_alembic_tmp_*`` tables an interrupted MLflow migration left in ``db``."""
    try:
        tables = sqlite_tables(db)
    except sqlite3.DatabaseError as err:
        if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
            return []  # a long write holds it: busy, not broken
        raise UserError(
            f"{db} is not a usable SQLite database ({err}): move it away or choose another "
            f"{store_options().key}"
        ) from None
    return sorted(name for name in tables if name.startswith("_alembic_tmp_"))


def _create_sqlite_store(db: Path) -> None:
    """Create a new SQLite store aside (a copy of the migrated template, or migrated there),
    then link it into place (atomic): a command stopped during its first use leaves no
    half-migrated ``db``."""
    from rlbench.tracking import store_template

    for stale in db.parent.glob(f".{db.name}.creating-*"):  # left by a stopped first use
        pid = stale.name.removeprefix(f".{db.name}.creating-").partition("-")[0]
        if pid.isdigit() and not process_alive(pid):  # with its -journal, -wal, -shm
            stale.unlink(missing_ok=True)
    tmp = db.with_name(f".{db.name}.creating-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        if not store_template.copy_template(tmp):  # milliseconds instead of 3-4 s
            store_template.migrate(tmp)
        with contextlib.suppress(FileExistsError):  # never replace a store made meanwhile
            os.link(tmp, db)
    finally:
        tmp.unlink(missing_ok=True)


def _first_open_lock(uri: str) -> contextlib.AbstractContextManager[Any]:
    """A lock file beside a SQLite store (``<db>.lock``); nothing for other stores."""
    path = sqlite_path(uri)
    if path is None:
        return contextlib.nullcontext()
    from filelock import FileLock

    return FileLock(str(path) + ".lock", timeout=120)


def store_for(uri: str) -> Store:
    """One store (client, engine, experiment ids) per URI and process, reused across jobs."""
    if uri not in _STORES:
        _STORES[uri] = Store(uri)
    return _STORES[uri]


def end_all_open_runs(status: str, error: str) -> None:
    """End every run this process's stores opened and nobody ended (the helper, at its end)."""
    for store in _STORES.values():
        store.end_open_runs(status, error)
