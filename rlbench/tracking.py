"""MLflow tracking: one run per job, written by a helper process so that it costs the job ~nothing.

Why a helper process: ``import mlflow`` and opening a SQLite store take ~1.6 s of CPU, more than
a short training job. :func:`make_tracker` starts ``python -m rlbench.tracking`` at once; it
imports MLflow and opens the store on the second core while the job imports torch and builds its
agent, so :meth:`Tracker.start` rarely waits. The helper is reused by every later job of the same
process (a sequential sweep, a joblib worker), and it ends a run KILLED if the job process dies
before ending it (``kill -9``), so runs are not left RUNNING. ``tracking.background=false`` does
the same work in-process instead (no helper; a killed job leaves its run RUNNING).

Metrics are buffered and written with ``log_batch`` (one call per 1000 values or 10 s);
params are chunked to MLflow's 100 per batch and values truncated to its 6000 characters.
Errors of the writes the job does not wait for (metrics, tags, texts) are logged as warnings
instead of interrupting training; an unreachable or unwritable store is a :class:`UserError`
before the job starts.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import posixpath
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rlbench.errors import UserError
from rlbench.provenance import run_tags

log = logging.getLogger(__name__)

DEFAULT_URI = "sqlite:///outputs/mlflow.db"
DEFAULT_EXPERIMENT = "rlbench"
DEFAULT_ARTIFACTS = "outputs/mlartifacts"
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
HELP = "or tracking.uri=sqlite:///outputs/mlflow.db, or tracking.enabled=false"


# --------------------------------------------------------------------------- config → params

__all__ = [
    "Tracker",
    "end_status",
    "flatten_config",
    "make_tracker",
    "mark_stale_runs_failed",
    "run_tags",
    "shutdown",
]


def format_value(value: Any) -> str:
    """A config value as a param string, spelled as one would type it in an override."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool | list | tuple | dict):
        return json.dumps(value, default=str)  # null, true, [64, 64]
    return str(value)


def flatten_config(cfg: Any) -> dict[str, str]:
    """The resolved config as dotted keys: ``{"algo.name": "ppo", "seed": "3", ...}``.

    Lists stay one value (``"[64, 64]"``); an empty mapping is kept as ``"{}"``.
    """
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
    flat: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping) and (node or not prefix):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = format_value(node)

    walk(container, "")
    return flat


_NAME = re.compile(r"^[/\w.\- :]*$")  # what MLflow accepts as a metric or param name


def check_name(name: str) -> str:
    """``name`` if MLflow accepts it as a metric/param name, else ``ValueError`` (not later)."""
    if not name or not _NAME.match(name) or posixpath.normpath(name) != name:
        raise ValueError(
            f"{name!r} is not a valid MLflow metric/param name: use letters, digits and _ - . "
            "space : /, without empty, '.' or '..' path parts"
        )
    return name


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(TRUNCATED)] + TRUNCATED


def end_status(exc: BaseException | None) -> tuple[str, str | None]:
    """The run status and error tag for a job that ended with ``exc`` (None: success)."""
    if exc is None:
        return "FINISHED", None
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED", "interrupted (Ctrl-C)"
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        return "FINISHED", None
    return "FAILED", f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- store checks


def resolve_uri(uri: str | None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``uri``; a relative SQLite path made absolute."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or uri or DEFAULT_URI
    if uri.startswith("sqlite:///"):
        path, sep, query = uri.removeprefix("sqlite:///").partition("?")
        if path and path != ":memory:" and not Path(path).is_absolute():
            uri = "sqlite:///" + str(Path.cwd() / path) + sep + query
    return uri


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").partition("?")[0]
    return Path(path) if path and path != ":memory:" else None


def check_store(uri: str, timeout: float = 3.0) -> None:
    """Fail in a second, with one line saying what to do, if the store cannot be used."""
    db = _sqlite_path(uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(
                f"cannot create {db.parent} for the MLflow store tracking.uri={uri} "
                f"({err.strerror or err}): choose a writable path, {HELP}"
            ) from None
        if not os.access(db if db.exists() else db.parent, os.W_OK):
            raise UserError(f"the MLflow store tracking.uri={uri} is not writable: {HELP}")
    elif uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
        except urllib.error.HTTPError:
            return  # a server answered
        except (OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise UserError(
                f"MLflow tracking server {uri} is unreachable ({reason}): start it "
                f"(mlflow server --host 127.0.0.1 --port PORT), {HELP}"
            ) from None


def _artifact_uri(location: str | None, tracking_uri: str) -> str | None:
    """Where a new experiment keeps artifacts: a server decides itself; else a file URI."""
    if not location or tracking_uri.startswith(("http://", "https://", "databricks")):
        return None
    if "://" in location or location.startswith("file:"):
        return location
    path = Path(location).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"cannot create tracking.artifact_location={location} ({err.strerror or err}): "
            "choose a writable directory, or tracking.enabled=false"
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


class _Store:
    """MLflow operations on one tracking URI through one reused ``MlflowClient``.

    Runs in the helper process (or in-process with ``background=false``); remembers the runs it
    opened so that they can be ended if their job dies.
    """

    def __init__(self, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        try:
            # Opening a new SQLite store runs MLflow's schema migrations (in the client's
            # constructor, and again for the model registry); two processes doing that at once
            # (joblib workers of one multirun) collide ("_alembic_tmp_experiments already
            # exists"), so opening a SQLite store is serialised by a file lock beside it.
            with _first_open_lock(uri):
                self.client = MlflowClient(tracking_uri=uri)
                self.client.search_experiments(max_results=1)
                self.client.search_registered_models(max_results=1)
        except Exception as err:  # MLflow's errors, a missing database driver, a refused socket
            raise UserError(f"cannot open the MLflow store {uri}: {_first_line(err)}") from None
        self._experiments: dict[str, str] = {}
        self.open_runs: set[str] = set()

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
        except UserError:
            raise
        except Exception as err:  # MLflow's errors, a missing database driver, a refused socket
            raise UserError(f"cannot use the MLflow store {self.uri}: {_first_line(err)}") from None
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
            run_id, logged = resume_run_id, run.data.params
            # MLflow refuses to change a logged param: keep the first values, name the changes
            changed = sorted(k for k, v in params.items() if k in logged and logged[k] != v)
            params = {k: v for k, v in params.items() if k not in logged}
            tags = {**tags, "rlbench.resumed": "true"}
            if changed:
                tags["rlbench.params_changed_on_resume"] = ", ".join(changed)
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
        """Write the last metrics and the error tag, then the final status (always attempted)."""
        lost: Exception | None = None
        try:
            self.log_batch(run_id, metrics=metrics, tags={"error": error} if error else None)
        except Exception as err:
            lost = err
        _retry_locked(self.client.set_terminated, run_id, status)
        self.open_runs.discard(run_id)
        if lost is not None:
            raise RuntimeError(
                f"run {run_id} ended {status} without its last metrics: {_first_line(lost)}"
            )

    def running_runs(self, experiment: str, filter_string: str) -> list[dict[str, Any]]:
        """``{"run_id", "tags"}`` of the experiment's RUNNING runs that match ``filter_string``."""
        found = _retry_locked(self.client.get_experiment_by_name, experiment)
        if found is None:
            return []
        query = " and ".join(f for f in (filter_string, "attributes.status = 'RUNNING'") if f)
        runs = _retry_locked(self.client.search_runs, [found.experiment_id], query)
        return [{"run_id": r.info.run_id, "tags": dict(r.data.tags)} for r in runs]

    def delete_run(self, run_id: str) -> None:
        """End the run KILLED and move it to MLflow's trash (``mlflow gc`` removes it)."""
        _retry_locked(self.client.set_terminated, run_id, "KILLED")
        _retry_locked(self.client.delete_run, run_id)
        self.open_runs.discard(run_id)

    def end_open_runs(self, status: str, error: str) -> None:
        """End every run this store opened and nobody ended (their job died)."""
        for run_id in list(self.open_runs):
            with contextlib.suppress(Exception):
                self.end_run(run_id, status, error)


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "message", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


_STORES: dict[str, _Store] = {}


def _first_open_lock(uri: str) -> contextlib.AbstractContextManager[Any]:
    """A lock file beside a SQLite store (``<db>.lock``); nothing for other stores."""
    path = _sqlite_path(uri)
    if path is None:
        return contextlib.nullcontext()
    from filelock import FileLock

    return FileLock(str(path) + ".lock", timeout=120)


def _store_for(uri: str) -> _Store:
    """One store (client, engine, experiment ids) per URI and process, reused across jobs."""
    if uri not in _STORES:
        _STORES[uri] = _Store(uri)
    return _STORES[uri]


# --------------------------------------------------------------------------- transports

# operations a tracker sends; the helper runs nothing else
_OPS = (
    "prepare", "start_run", "log_batch", "log_artifact", "log_text", "end_run", "running_runs",
    "delete_run",
)  # fmt: skip


class _LocalTransport:
    """Runs the operations in this process (``tracking.background=false``)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def call(self, op: str, **kwargs: Any) -> Any:
        return getattr(_store_for(self.uri), op)(**kwargs)

    def cast(self, op: str, **kwargs: Any) -> None:
        try:
            self.call(op, **kwargs)
        except Exception as err:  # the job goes on; the loss is reported
            log.warning("MLflow %s failed: %s", op, _first_line(err))


class _Helper:
    """The helper process (``python -m rlbench.tracking``): JSON lines in, replies out."""

    def __init__(self) -> None:
        env = os.environ.copy()
        for key, value in HTTP_ENV_DEFAULTS.items():
            env.setdefault(key, value)
        root = str(Path(__file__).resolve().parents[1])  # rlbench importable as in this process
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rlbench.tracking"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,  # no terminal signals: it lives exactly as long as its stdin
        )
        self.owner_pid = os.getpid()
        self._next_id = 0
        self._lock = threading.Lock()

    def alive(self) -> bool:
        return self.owner_pid == os.getpid() and self.proc.poll() is None

    def _send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message) + "\n").encode()
        main = threading.current_thread() is threading.main_thread()
        if main:  # a Ctrl-C must not cut a request in half
            old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise RuntimeError(self._died()) from None
        finally:
            if main:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def _died(self) -> str:
        code = self.proc.poll()
        return f"the MLflow helper process exited (code {code}); see its messages above"

    def cast(self, uri: str, op: str, **kwargs: Any) -> None:
        with self._lock:
            self._send({"op": op, "uri": uri, "args": kwargs})

    def call(self, uri: str, op: str, **kwargs: Any) -> Any:
        with self._lock:
            self._next_id += 1
            rid = self._next_id
            self._send({"id": rid, "op": op, "uri": uri, "args": kwargs})
            assert self.proc.stdout is not None
            while True:  # replies to calls a Ctrl-C abandoned are skipped
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(self._died())
                reply = json.loads(line)
                for warning in reply.get("warnings", ()):
                    log.warning("%s", warning)
                if reply["id"] == rid:
                    break
        if reply["ok"]:
            return reply["result"]
        if reply["kind"] == "user":
            raise UserError(reply["error"])
        raise RuntimeError(f"MLflow {op} failed: {reply['error']}")

    def close(self, timeout: float = 10.0) -> None:
        """End the helper after it has written everything it was sent."""
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_HELPER: _Helper | None = None
_HELPER_LOCK = threading.Lock()


def _helper() -> _Helper:
    """This process's helper, started on first use and restarted if it died."""
    global _HELPER
    with _HELPER_LOCK:
        if _HELPER is None or not _HELPER.alive():
            _HELPER = _Helper()
        return _HELPER


def shutdown() -> None:
    """Stop this process's helper (at exit; tests call it too). Unended runs end FAILED first."""
    global _HELPER
    for tracker in list(_LIVE):
        tracker.end("FAILED", "the process exited without ending the run")
    with _HELPER_LOCK:
        if _HELPER is not None and _HELPER.owner_pid == os.getpid():
            _HELPER.close()
        _HELPER = None


_FORKED_AWAY: list[_Helper] = []  # the parent's helper, kept (unused) so its pipes stay shut


def _after_fork_in_child() -> None:
    """A forked child (multiprocessing) must not write into its parent's helper or runs."""
    global _HELPER, _HELPER_LOCK
    if _HELPER is not None:
        for stream in (_HELPER.proc.stdin, _HELPER.proc.stdout):
            with contextlib.suppress(Exception):
                os.close(stream.fileno())  # not stream.close(): that could flush a parent's write
        _FORKED_AWAY.append(_HELPER)
    _HELPER, _HELPER_LOCK = None, threading.Lock()
    _LIVE.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _HelperTransport:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.helper = _helper()

    def call(self, op: str, **kwargs: Any) -> Any:
        return self.helper.call(self.uri, op, **kwargs)

    def cast(self, op: str, **kwargs: Any) -> None:
        self.helper.cast(self.uri, op, **kwargs)


def _serve() -> None:
    """The helper's loop: run each request on its store; on EOF end the runs left open."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the job's to handle, not ours
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the replies
    deferred: list[str] = []
    try:
        while line := sys.stdin.buffer.readline():
            request: dict[str, Any] = {}
            try:
                request = json.loads(line)
                if request.get("op") not in _OPS:
                    raise ValueError(f"unknown operation {request.get('op')!r}")
                store = _store_for(request["uri"])
                reply: dict[str, Any] = {
                    "ok": True,
                    "result": getattr(store, request["op"])(**request["args"]),
                }
            except Exception as err:
                user = isinstance(err, UserError)
                reply = {
                    "ok": False,
                    "kind": "user" if user else "other",
                    "error": str(err) if user else f"{type(err).__name__}: {_first_line(err)}",
                }
            if request.get("id") is None:
                # a failed "prepare" fails again, with its message, in the "start_run" call
                if not reply["ok"] and request.get("op") != "prepare":
                    deferred.append(f"MLflow {request.get('op')} failed: {reply['error']}")
                continue
            reply |= {"id": request["id"], "warnings": deferred}
            deferred = []
            out.write(json.dumps(reply) + "\n")
    finally:
        for store in _STORES.values():
            store.end_open_runs("KILLED", "the job process died before ending the run")
        with contextlib.suppress(OSError):
            out.flush()
        os._exit(0)  # skip interpreter teardown (~0.5 s with MLflow loaded)


# --------------------------------------------------------------------------- the tracker


class Tracker:
    """The MLflow run of one job. This base records nothing: it is ``tracking.enabled=false``.

    Use it in ``try/finally`` (``end`` with the right status) or as a context manager, which
    ends the run FINISHED, FAILED (error tag) or KILLED (Ctrl-C) by how the block exits.
    """

    run_id: str | None = None

    def start(
        self,
        run_name: str | None,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
        resume_run_id: str | None = None,
    ) -> str:
        """Open the run; returns its id ("" when tracking is off)."""
        return ""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record values at ``step`` (environment steps); buffered, written in batches."""

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file or directory into the run's artifacts (under ``artifact_path``)."""

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store ``text`` as the artifact ``artifact_file`` (e.g. ``"config.yaml"``)."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Add or overwrite tags of the run."""

    def flush(self) -> None:
        """Send the buffered metrics now."""

    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        """Flush and close the run as FINISHED, FAILED or KILLED; idempotent, never raises."""

    def discard(self) -> None:
        """Close the run and move it to MLflow's trash (a duplicate nobody should see)."""

    def running_runs(self, filter_string: str = "") -> list[dict[str, Any]]:
        """``{"run_id", "tags"}`` of this experiment's RUNNING runs matching ``filter_string``."""
        return []

    def end_other_run(self, run_id: str, status: str, error: str | None = None) -> None:
        """End a run this tracker did not start (one its dead job left RUNNING)."""

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.end(*end_status(exc))


_LIVE: set[MlflowTracker] = set()  # started, not yet ended: the exit handler ends them


class MlflowTracker(Tracker):
    """A :class:`Tracker` writing to MLflow through a transport (helper process or local)."""

    def __init__(
        self,
        transport: _LocalTransport | _HelperTransport,
        experiment: str = DEFAULT_EXPERIMENT,
        artifact_location: str | None = None,
        run_name: str | None = None,
    ) -> None:
        self._transport = transport
        self._experiment = experiment
        self._artifact_location = artifact_location
        self._default_name = run_name
        self._buffer: list[list[Any]] = []
        self._last_flush = time.monotonic()
        self._open = False
        self._names: set[str] = set()  # metric names already checked
        self.run_id = None

    @property
    def uri(self) -> str:
        return self._transport.uri

    def prepare(self) -> None:
        """Open the store and the experiment ahead of :meth:`start` (in the background)."""
        if isinstance(self._transport, _HelperTransport):
            self._transport.cast(
                "prepare", experiment=self._experiment, artifact_location=self._artifact_location
            )

    def start(
        self,
        run_name: str | None,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
        resume_run_id: str | None = None,
    ) -> str:
        if self._open:
            raise RuntimeError(f"MLflow run {self.run_id} is still open: end() it first")
        tags = {str(k): str(v) for k, v in tags.items()}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        self.run_id = self._transport.call(
            "start_run",
            experiment=self._experiment,
            artifact_location=self._artifact_location,
            run_name=run_name or self._default_name,
            params={check_name(str(k)): format_value(v) for k, v in params.items()},
            tags=tags,
            resume_run_id=resume_run_id,
        )
        self._open = True
        self._last_flush = time.monotonic()
        _LIVE.add(self)
        return self.run_id

    def _check_open(self) -> None:
        if not self._open:
            raise RuntimeError("no open MLflow run: call start() first")

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._check_open()
        now = int(time.time() * 1000)
        rows = [[key, float(value), now, int(step)] for key, value in metrics.items()]
        for key in metrics.keys() - self._names:  # all or nothing: check before buffering
            self._names.add(check_name(key))
        self._buffer.extend(rows)
        if (
            len(self._buffer) >= MAX_METRICS_PER_BATCH
            or time.monotonic() - self._last_flush >= FLUSH_EVERY_S
        ):
            self.flush()

    def flush(self) -> None:
        if self._buffer and self._open:
            batch, self._buffer = self._buffer, []
            self._transport.cast("log_batch", run_id=self.run_id, metrics=batch)
        self._last_flush = time.monotonic()

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        self._check_open()
        path = Path(local_path).resolve()
        if not path.exists():
            raise FileNotFoundError(f"artifact to log does not exist: {path}")
        self._transport.call(
            "log_artifact", run_id=self.run_id, local_path=str(path), artifact_path=artifact_path
        )

    def log_text(self, text: str, artifact_file: str) -> None:
        self._check_open()
        self._transport.cast("log_text", run_id=self.run_id, text=text, artifact_file=artifact_file)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._check_open()
        tags = {str(k): str(v) for k, v in tags.items()}
        self._transport.cast("log_batch", run_id=self.run_id, tags=tags)

    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if not self._open:
            return
        self._open = False
        _LIVE.discard(self)
        batch, self._buffer = self._buffer, []
        try:
            self._transport.call(
                "end_run", run_id=self.run_id, status=status, error=error, metrics=batch
            )
        except Exception as err:  # called from `finally`: must not hide the job's own error
            log.error("could not end MLflow run %s as %s: %s", self.run_id, status, err)

    def discard(self) -> None:
        if not self._open:
            return
        self._open = False
        _LIVE.discard(self)
        self._buffer = []
        self._transport.call("delete_run", run_id=self.run_id)

    def running_runs(self, filter_string: str = "") -> list[dict[str, Any]]:
        return self._transport.call(
            "running_runs", experiment=self._experiment, filter_string=filter_string
        )

    def end_other_run(self, run_id: str, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self._transport.call("end_run", run_id=run_id, status=status, error=error)


_AT_EXIT_REGISTERED = False


def make_tracker(tracking_cfg: Mapping[str, Any]) -> Tracker:
    """The tracker ``cfg.tracking`` asks for; call it early so MLflow warms up in the background.

    Keys: ``enabled`` (false: a tracker that records nothing and never imports MLflow), ``uri``
    (``MLFLOW_TRACKING_URI`` wins), ``artifact_location``, ``experiment``, ``run_name``,
    ``background`` (default true: the helper process). Raises :class:`UserError` at once when
    the store is unreachable or unwritable.
    """
    global _AT_EXIT_REGISTERED
    if not tracking_cfg.get("enabled", True):
        return Tracker()
    uri = resolve_uri(tracking_cfg.get("uri"))
    check_store(uri)
    location = tracking_cfg.get("artifact_location", DEFAULT_ARTIFACTS)
    artifact_location = _artifact_uri(location, uri)
    background = bool(tracking_cfg.get("background", True))
    transport = _HelperTransport(uri) if background else _LocalTransport(uri)
    if not _AT_EXIT_REGISTERED:
        atexit.register(shutdown)
        _AT_EXIT_REGISTERED = True
    tracker = MlflowTracker(
        transport,
        experiment=str(tracking_cfg.get("experiment") or DEFAULT_EXPERIMENT),
        artifact_location=artifact_location,
        run_name=tracking_cfg.get("run_name"),
    )
    tracker.prepare()
    return tracker


def mark_stale_runs_failed(
    tracking_cfg: Mapping[str, Any], older_than: float | None = None
) -> list[str]:
    """End as FAILED the experiment's runs still RUNNING that started over ``older_than`` s ago.

    For a sweep resuming after its processes died together (helper included). A run another
    live process is writing looks the same: choose ``older_than`` above the longest job.
    """
    uri = resolve_uri(tracking_cfg.get("uri"))
    check_store(uri)
    store = _store_for(uri)
    experiment = str(tracking_cfg.get("experiment") or DEFAULT_EXPERIMENT)
    found = store.client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = store.client.search_runs(
        [found.experiment_id], filter_string="attributes.status = 'RUNNING'"
    )
    cutoff = (time.time() - older_than) * 1000 if older_than is not None else float("inf")
    stale = [r.info.run_id for r in runs if r.info.start_time <= cutoff]
    for run_id in stale:
        store.end_run(run_id, "FAILED", "stale: its process died without ending the run")
    return stale


if __name__ == "__main__":
    _serve()
