"""MLflow tracking: one run per job, written by a helper process so that it costs the job ~nothing.

Why a helper process: ``import mlflow`` and opening a SQLite store take ~4 s of CPU, more than
a short training job. :func:`make_tracker` gets a helper at once: forked, with MLflow already
imported, by this user's fork server (:mod:`rlbench.tracking.forkserver`), or else started as
:mod:`rlbench.tracking.helper`, which imports MLflow on the second core while the job imports
torch and builds its agent; so :meth:`Tracker.start` rarely waits. The helper is reused by every
later job of the same process (a sequential sweep, a joblib worker), and it ends a run KILLED if
the job process dies before ending it (``kill -9``), so runs are not left RUNNING.
``tracking.background=false`` does the same work in-process instead (no helper; a killed job
leaves its run RUNNING).

Metrics are buffered and written with ``log_batch`` (one call per 1000 values or 10 s);
params are chunked to MLflow's 100 per batch and values truncated to its 6000 characters.
Errors of the writes the job does not wait for (metrics, tags, texts) are logged as warnings
instead of interrupting training; an unreachable or unwritable store is a :class:`UserError`
before the job starts.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import posixpath
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlbench.errors import UserError
from rlbench.tracking import schema
from rlbench.tracking.helper import HelperTransport, LocalTransport, stop_helper
from rlbench.tracking.provenance import process_tag, provenance_tags
from rlbench.tracking.redaction import mask_passwords, mask_values
from rlbench.tracking.store import (
    FLUSH_EVERY_S,
    MAX_METRICS_PER_BATCH,
    STATUSES,
    artifact_uri,
    check_store,
    resolve_uri,
    store_for,
)

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "rlbench"
DEFAULT_ARTIFACTS = "outputs/mlartifacts"


# --------------------------------------------------------------------------- config → params


def format_value(value: Any) -> str:
    """A config value as a param string, spelled as one would type it in an override."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool | list | tuple | dict):
        return json.dumps(value, default=str)  # null, true, [64, 64]
    return str(value)


def flatten_config(cfg: Any, resolve: bool = True) -> dict[str, str]:
    """The resolved config as dotted keys: ``{"algo.name": "ppo", "seed": "3", ...}``.

    Lists stay one value (``"[64, 64]"``); an empty mapping is kept as ``"{}"``. With
    ``resolve=False`` interpolations stay as written (a sweep compares jobs before they run).
    """
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=resolve) if OmegaConf.is_config(cfg) else cfg
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


def end_status(exc: BaseException | None) -> tuple[str, str | None]:
    """The run status and error tag for a job that ended with ``exc`` (None: success)."""
    if exc is None:
        return "FINISHED", None
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED", "interrupted (Ctrl-C)"
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        return "FINISHED", None
    return "FAILED", f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- the tracker


class Tracker:
    """The MLflow run of one job. This base records nothing: it is ``tracking.enabled=false``.

    Use it in ``try/finally`` (``end`` with the right status) or as a context manager, which
    ends the run FINISHED, FAILED (error tag) or KILLED (Ctrl-C) by how the block exits.
    """

    run_id: str | None = None
    uri: str | None = None  # the store (None: tracking is off)

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

    def experiment_id(self) -> str | None:
        """The id of the run's experiment (for links to MLflow's UI); None when tracking is off."""
        return None

    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        """Flush and close the run as FINISHED, FAILED or KILLED; idempotent. Raises only
        :class:`UserError` when a FINISHED run's records were refused (a full disk): then the
        run ends FAILED and the job must not report a score."""

    def discard(self) -> None:
        """Close the run and move it to MLflow's trash (a duplicate nobody should see)."""

    def running_runs(self, filter_string: str = "") -> list[dict[str, Any]]:
        """``{"run_id", "tags", "metrics"}`` of this experiment's RUNNING runs matching
        ``filter_string``."""
        return self.find_runs(filter_string, "RUNNING")

    def find_runs(self, filter_string: str = "", status: str = "FINISHED") -> list[dict[str, Any]]:
        """``{"run_id", "tags", "metrics"}`` of this experiment's runs in ``status`` matching
        ``filter_string`` (an MLflow search filter), newest first."""
        return []

    def end_other_run(self, run_id: str, status: str, error: str | None = None) -> None:
        """End a run this tracker did not start (one its dead job left RUNNING)."""

    # a lease on a run key in a shared store (rlbench.tracking.claims); MLflow trackers only
    def claim_bid(self, key: str, owner: str) -> str:
        raise NotImplementedError("leases need an MLflow store")

    def claim_holder(self, key: str, ttl: float) -> dict[str, str] | None:
        raise NotImplementedError("leases need an MLflow store")

    def claim_renew(self, claim_id: str) -> None:
        raise NotImplementedError("leases need an MLflow store")

    def claim_release(self, claim_id: str) -> None:
        raise NotImplementedError("leases need an MLflow store")

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.end(*end_status(exc))


_LIVE: set[MlflowTracker] = set()  # started, not yet ended: the exit handler ends them
os.register_at_fork(after_in_child=_LIVE.clear)  # a forked child must not end its parent's runs


def shutdown() -> None:
    """End this process's unended runs FAILED, then stop its helper (at exit; tests too)."""
    for tracker in list(_LIVE):
        tracker.end("FAILED", "the process exited without ending the run")
    stop_helper()


class MlflowTracker(Tracker):
    """A :class:`Tracker` writing to MLflow through a transport (helper process or local)."""

    def __init__(
        self,
        transport: LocalTransport | HelperTransport,
        experiment: str = DEFAULT_EXPERIMENT,
        artifact_location: str | None = None,
        run_name: str | None = None,
        uri_source: str | None = None,
    ) -> None:
        self._transport = transport
        self._uri_source = uri_source
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
        if isinstance(self._transport, HelperTransport):
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
        # who writes the run: a later command ends it FAILED if this process dies unseen
        tags = provenance_tags() | mask_values(tags)  # the caller's own win
        tags[schema.PROCESS_TAG] = process_tag()
        if self._uri_source:
            tags.setdefault(schema.TRACKING_URI_SOURCE_TAG, self._uri_source)
        if parent_run_id:
            tags[schema.PARENT_RUN_TAG] = parent_run_id
        self.run_id = self._transport.call(
            "start_run",
            experiment=self._experiment,
            artifact_location=self._artifact_location,
            run_name=run_name or self._default_name,
            params={check_name(str(k)): mask_passwords(format_value(v)) for k, v in params.items()},
            tags=tags,
            resume_run_id=resume_run_id,
        )
        self._open = True
        self._last_flush = time.monotonic()
        _LIVE.add(self)
        return self.run_id

    def experiment_id(self) -> str | None:
        return str(
            self._transport.call(
                "prepare", experiment=self._experiment, artifact_location=self._artifact_location
            )
        )

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
        self._transport.cast("log_batch", run_id=self.run_id, tags=mask_values(tags))

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
                "end_run", run_id=self.run_id, status=status, error=_masked(error), metrics=batch
            )
        except UserError:
            if status == "FINISHED":  # the job worked but its record did not: no score
                raise
            log.error("could not end MLflow run %s as %s", self.run_id, status)
        except Exception as err:  # called from `finally`: must not hide the job's own error
            log.error("could not end MLflow run %s as %s: %s", self.run_id, status, err)

    def discard(self) -> None:
        if not self._open:
            return
        self._open = False
        _LIVE.discard(self)
        self._buffer = []
        self._transport.call("delete_run", run_id=self.run_id)

    def find_runs(self, filter_string: str = "", status: str = "FINISHED") -> list[dict[str, Any]]:
        return self._transport.call(
            "find_runs", experiment=self._experiment, filter_string=filter_string, status=status
        )

    def end_other_run(self, run_id: str, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self._transport.call("end_run", run_id=run_id, status=status, error=_masked(error))

    def claim_bid(self, key: str, owner: str) -> str:
        return self._transport.call("claim_bid", key=key, owner=owner)

    def claim_holder(self, key: str, ttl: float) -> dict[str, str] | None:
        return self._transport.call("claim_holder", key=key, ttl=ttl)

    def claim_renew(self, claim_id: str) -> None:
        self._transport.cast("claim_renew", claim_id=claim_id)

    def claim_release(self, claim_id: str) -> None:
        self._transport.call("claim_release", claim_id=claim_id)


def _masked(error: str | None) -> str | None:
    return None if error is None else mask_passwords(error)


_AT_EXIT_REGISTERED = False


def make_tracker(tracking_cfg: Mapping[str, Any]) -> Tracker:
    """The tracker ``cfg.tracking`` asks for; call it early so MLflow warms up in the background.

    Keys: ``enabled`` (false: a tracker that records nothing and never imports MLflow), ``uri``
    (the store: a value on the command line or in a preset wins, then ``MLFLOW_TRACKING_URI``,
    then ``sqlite:///outputs/mlflow.db``: the config's default reads the environment),
    ``artifact_location``, ``experiment``, ``run_name``, ``background`` (default true: the helper
    process). Every run it starts is tagged ``rlbench.tracking_uri_source`` (see
    :func:`uri_source`). Raises :class:`UserError` at once when the store is unreachable or
    unwritable.
    """
    global _AT_EXIT_REGISTERED
    if not tracking_cfg.get("enabled", True):
        return Tracker()
    source = uri_source(tracking_cfg)
    uri = resolve_uri(tracking_cfg.get("uri"))
    check_store(uri)
    location = tracking_cfg.get("artifact_location", DEFAULT_ARTIFACTS)
    artifact_location = artifact_uri(location, uri)
    background = bool(tracking_cfg.get("background", True))
    transport = HelperTransport(uri) if background else LocalTransport(uri)
    if not _AT_EXIT_REGISTERED:
        atexit.register(shutdown)
        _AT_EXIT_REGISTERED = True
    tracker = MlflowTracker(
        transport,
        experiment=str(tracking_cfg.get("experiment") or DEFAULT_EXPERIMENT),
        artifact_location=artifact_location,
        run_name=tracking_cfg.get("run_name"),
        uri_source=source,
    )
    tracker.prepare()
    return tracker


# --------------------------------------------------------------------------- which store

ENV_URI = "MLFLOW_TRACKING_URI"
_noted_source: str | None = None  # what the Hydra callback found for this invocation


def _override_key(line: str) -> str:
    return line.partition("=")[0].lstrip("+~").strip()


def uri_source(config: Any) -> str:
    """Which setting named the tracking store: ``cli`` (``tracking.uri=`` on the command line;
    Hydra's overrides say so), ``preset`` (a config file set it: an ``experiment=`` preset, an
    edited ``conf/train.yaml``), ``env`` (``MLFLOW_TRACKING_URI``, which the default reads),
    ``default`` (``sqlite:///outputs/mlflow.db``), ``argument`` (a Python caller's value).

    ``config`` is a composed config (with its ``hydra`` node), its ``tracking`` node, or a plain
    mapping of the tracking keys (then the source the Hydra callback noted for this invocation).
    """
    from omegaconf import DictConfig, OmegaConf

    env = "env" if os.environ.get(ENV_URI) else "default"
    if not isinstance(config, DictConfig):
        if _hydra_overrides() is None:
            return "argument" if config.get("uri") else env
        return _noted_source or ("argument" if config.get("uri") else env)
    # the whole config's own overrides (a sweeper's config), else the running job's
    overrides = OmegaConf.select(config._get_root(), "hydra.overrides.task")
    overrides = list(overrides) if overrides is not None else _hydra_overrides()
    if overrides is None and _noted_source is not None:
        return _noted_source
    node = config.get("tracking") if "tracking" in config else config
    if isinstance(node, DictConfig) and "uri" not in node and "tracking" not in config:
        return env
    if any(_override_key(str(o)) == "tracking.uri" for o in overrides or ()):
        return "cli"
    raw = node._get_node("uri")._value() if isinstance(node, DictConfig) and "uri" in node else None
    if (
        raw is None
        or raw == ""
        or (isinstance(raw, str) and raw.replace(" ", "").startswith("${oc.env:" + ENV_URI))
    ):
        return env
    return "preset" if overrides is not None else "argument"


def _hydra_overrides() -> list[str] | None:
    """The command line's overrides of the running Hydra job (None outside one)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        return list(HydraConfig.get().overrides.task)
    except Exception:
        return None


def note_uri_source(config: Any) -> None:
    """Remember :func:`uri_source` of an invocation's composed config (the Hydra callback)."""
    global _noted_source
    try:
        _noted_source = uri_source(config)
    except Exception:  # a config without tracking keys (another app)
        _noted_source = None


def mark_stale_runs_failed(
    tracking_cfg: Mapping[str, Any], older_than: float | None = None
) -> list[str]:
    """End as FAILED the experiment's runs still RUNNING that started over ``older_than`` s ago.

    For a sweep resuming after its processes died together (helper included). A run another
    live process is writing looks the same: choose ``older_than`` above the longest job.
    """
    uri = resolve_uri(tracking_cfg.get("uri"))
    check_store(uri)
    experiment = str(tracking_cfg.get("experiment") or DEFAULT_EXPERIMENT)
    return store_for(uri).end_stale_runs(
        experiment, older_than, "stale: its process died without ending the run"
    )
