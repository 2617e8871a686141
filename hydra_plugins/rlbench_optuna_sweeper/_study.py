"""The study in its RDB storage: open it, seed samplers, count claimed trials, keep heartbeats.

How the total ``n_trials`` holds with reruns and with several processes on one storage: a trial
*claims* a slot when it is running or finished; a trial that failed because its process died
(heartbeat gone stale, or Ctrl-C) is replaced by a WAITING copy with the same parameters
(Optuna's ``RetryHeartbeatStaleTrialCallback``) and stops counting. After asking for a trial, a
process checks that its trial is among the first ``n_trials`` claims ordered by start time; if
not, another process got there first and the trial goes back to WAITING, unsampled, for a later
run with a larger budget to pick up.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import os
import random
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from rlbench.errors import first_line, storage_message
from rlbench.run.trial import engine_kwargs
from rlbench.tracking.databases import server_message
from rlbench.tracking.redaction import mask_passwords, protect
from rlbench.tracking.schema import IGNORED_ATTR

from ._space import SweepError

SAMPLERS = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "nsgaii": optuna.samplers.NSGAIISampler,
    "qmc": optuna.samplers.QMCSampler,
    "grid": optuna.samplers.GridSampler,
    "bruteforce": optuna.samplers.BruteForceSampler,
}
REMOVED_SAMPLERS = {
    "motpe": "the MOTPE sampler was removed in Optuna 4: TPESampler handles several objectives "
    "(hydra/sweeper/sampler=tpe), or use hydra/sweeper/sampler=nsgaii",
}
#: samplers whose seed must stay the same for every trial (QMC scrambles one sequence with it)
_ONE_SEED = (optuna.samplers.QMCSampler,)


def redact(url: str | None) -> str:
    """The storage URL with its secrets masked, for messages and tags ("memory" for None):
    the password (SQLAlchemy's parser first: it copes with a raw ``/`` in a password), then
    secret query values (``?password=``) and anything else :func:`mask_passwords` knows."""
    if url is None:
        return "memory"
    try:
        from sqlalchemy.engine import make_url

        return mask_passwords(make_url(url).render_as_string(hide_password=True))
    except Exception:
        return mask_passwords(url)


PASSWORD_ENV = "RLBENCH_STORAGE_PASSWORD"
_PLACEHOLDER = "RLBENCHSTORAGEPASSWORD"


def storage_for_jobs(url: str) -> str:
    """The storage URL as each job's ``++trial.storage`` override carries it.

    A password is moved into the environment variable ``RLBENCH_STORAGE_PASSWORD`` (set here;
    launched jobs inherit it) and the URL names it as ``${oc.env:RLBENCH_STORAGE_PASSWORD}``;
    a secret in the query string (``?password=``) likewise into ``RLBENCH_SECRET_<n>``
    (:func:`~rlbench.tracking.redaction.protect`). Hydra prints every job's overrides and saves
    them in its output folder, and those must not show a secret. The job's config resolves the
    interpolations back to the same URL.
    """
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:
        return protect(url)
    if not parsed.password:
        return protect(url)
    os.environ[PASSWORD_ENV] = quote(str(parsed.password), safe="")  # as it stands in a URL
    text = parsed.set(password=_PLACEHOLDER).render_as_string(hide_password=False)
    return protect(text.replace(_PLACEHOLDER, "${oc.env:" + PASSWORD_ENV + "}"))


def open_storage(
    url: str | None, heartbeat_interval: int, grace_period: int | None, max_retry: int
) -> RDBStorage | optuna.storages.InMemoryStorage:
    """An RDB storage with heartbeats (in memory for ``url`` None); a bad or unreachable URL is
    one line of explanation."""
    if url is None:
        return optuna.storages.InMemoryStorage()
    _make_sqlite_dir(url)
    if url.lower().startswith("sqlite") and sqlite_path(url) is None:
        raise SweepError(
            f"hydra.sweeper.storage={url}: an in-memory SQLite database is private to each "
            "process, so the jobs could not see the study; give a file "
            "(sqlite:///outputs/optuna.db), or storage null for a study in this process's memory"
        )
    db = sqlite_path(url)
    if db is not None:
        _create_sqlite_storage(db)
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                rdb = RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs(url),
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period or 3 * heartbeat_interval,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry),
                )
            _write_ahead_log(rdb)
            return rdb
        except Exception as err:
            # two processes creating the same new database race on its tables: try again
            refused = server_message(err, url)  # a database server that cannot be used
            racing = refused is None and any(
                s in str(err) for s in ("already exists", "UNIQUE constraint", "duplicate key")
            )
            if not racing or attempt == 4:
                reason = refused or storage_message(err, db) or mask_passwords(first_line(err))
                if db is not None and "no such table" in str(err):
                    reason += f" (not an Optuna storage, or a half-created one: move {db} away)"
                raise SweepError(
                    f"cannot open the Optuna storage {redact(url)}: {reason}"
                ) from None
            time.sleep(0.2 + random.random() * 0.3)
    raise AssertionError("unreachable")


def _create_sqlite_storage(db: Path) -> None:
    """Create a new SQLite study storage aside, then rename it into place (atomic): a sweep
    stopped during its first use leaves no half-created ``db``."""
    if db.exists():
        return
    from filelock import FileLock

    with FileLock(f"{db}.create.lock", timeout=120):
        if db.exists():  # another process made it meanwhile
            return
        for stale in db.parent.glob(f".{db.name}.creating-*"):  # left by a stopped first use
            stale.unlink(missing_ok=True)  # (we hold the creation lock: nobody else is at it)
        tmp = db.with_name(f".{db.name}.creating-{os.getpid()}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                rdb = RDBStorage(
                    f"sqlite:///{tmp}", engine_kwargs=engine_kwargs(f"sqlite:///{tmp}")
                )
            rdb.engine.dispose()
            os.link(tmp, db)
        except FileExistsError:
            pass
        except Exception as err:
            reason = storage_message(err, db) or first_line(err)
            raise SweepError(f"cannot create the Optuna storage {db}: {reason}") from None
        finally:
            tmp.unlink(missing_ok=True)


def _write_ahead_log(rdb: RDBStorage) -> None:
    """Switch a SQLite storage to write-ahead logging (kept in the file from then on).

    Measured with 8 processes writing one study (ask, 5 reports, tell; 320 trials): with a 60 s
    busy timeout both modes had no lock errors, but WAL took 15 s against 45 s, since readers no
    longer block the writer. WAL needs a local disk: share a study between machines through a
    database server instead (the storage URL), as Optuna recommends anyway.
    """
    if rdb.engine.dialect.name != "sqlite":
        return
    # e.g. a read-only file: stay in the default mode
    with contextlib.suppress(Exception), rdb.engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")


def storage_lock(url: str | None) -> contextlib.AbstractContextManager[Any]:
    """A lock file beside a SQLite storage (``<db>.lock``), shared by every process of this
    machine, for the one-off work of a sweep's start; nothing for a server or memory storage."""
    db = sqlite_path(url) if url else None
    if db is None:
        return contextlib.nullcontext()
    from filelock import FileLock

    return FileLock(f"{db}.lock", timeout=120)


def duplicate_of(trials: list[FrozenTrial], trial: FrozenTrial) -> int | None:
    """The earlier trial enqueued with the same parameters as ``trial``, or None.

    Processes starting together on a server storage may each enqueue the preset's first
    configurations (``skip_if_exists`` is check-then-write); the later copy must not run again.
    Retries of a dead trial keep their parameters on purpose and are not duplicates.
    """
    fixed = trial.system_attrs.get("fixed_params")
    if fixed is None or "retry_history" in trial.system_attrs:
        return None
    for other in trials:
        attrs = other.system_attrs
        if (
            other.number < trial.number
            and attrs.get("fixed_params") == fixed
            and "retry_history" not in attrs
            and not attrs.get(IGNORED_ATTR)
        ):
            return other.number
    return None


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other storages (and in-memory SQLite)."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).resolve()


def _make_sqlite_dir(url: str) -> None:
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception as err:
        raise SweepError(f"hydra.sweeper.storage: not a database URL: {url!r} ({err})") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        try:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise SweepError(f"cannot create the directory of {url}: {err.strerror}") from None


def make_sampler(
    name: str, seed: int | None, kwargs: dict[str, Any]
) -> optuna.samplers.BaseSampler:
    """An Optuna sampler by short name; unknown names and bad arguments are one-line errors."""
    return SamplerSpec.named(name, seed, kwargs).make()


@dataclass
class SamplerSpec:
    """How to build the sweep's sampler for each trial (a fresh one, seeded for that trial)."""

    label: str  # what messages call it: "tpe" or "optuna.samplers.TPESampler"
    cls: type
    seed: int | None
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_grid(self) -> bool:
        return issubclass(self.cls, optuna.samplers.GridSampler)

    @classmethod
    def named(cls, name: str, seed: Any, kwargs: dict[str, Any]) -> SamplerSpec:
        """rlbench's form: ``{name: tpe, seed: 0, kwargs: {...}}``."""
        key = str(name).lower()
        if key in REMOVED_SAMPLERS:
            raise SweepError(REMOVED_SAMPLERS[key])
        if key not in SAMPLERS:
            raise SweepError(
                f"hydra.sweeper.sampler.name: unknown sampler {name!r}; choose one of "
                f"{', '.join(SAMPLERS)}"
            )
        needs = {"cmaes": "cmaes", "gp": "torch"}.get(key)
        if needs and importlib.util.find_spec(needs) is None:
            raise SweepError(f"the {key} sampler needs the {needs} package: pip install {needs}")
        return cls(key, SAMPLERS[key], _seed(seed), dict(kwargs or {}))

    @classmethod
    def from_config(cls, node: Any) -> SamplerSpec:
        """``hydra.sweeper.sampler`` in either form; a node that mixes them is an error."""
        from .config import SAMPLER_GROUP

        if node is None or node == "???":
            return cls("tpe", optuna.samplers.TPESampler, None)
        if not isinstance(node, dict):
            raise SweepError(f"hydra.sweeper.sampler must be a mapping, got {node!r}")
        if "name" in node:
            rest = {k: v for k, v in node.items() if k not in ("name", "seed", "kwargs")}
            untouched = {k: v for k, v in SAMPLER_GROUP["tpe"].items() if k != "seed"}
            if rest and rest != untouched:  # merged over another option of hydra/sweeper/sampler
                raise SweepError(
                    f"hydra.sweeper.sampler has both name: {node['name']} (rlbench's form) and "
                    f"_target_: {rest.get('_target_')} with constructor arguments (from "
                    "hydra/sweeper/sampler): keep one of the two"
                )
            return cls.named(node["name"], node.get("seed"), node.get("kwargs") or {})
        target = node.get("_target_")
        if not target:
            raise SweepError(
                "hydra.sweeper.sampler: give _target_ (an Optuna sampler class, e.g. "
                "hydra/sweeper/sampler=tpe) or rlbench's name: tpe"
            )
        short = str(target).rsplit(".", 1)[-1]
        if short == "MOTPESampler":
            raise SweepError(REMOVED_SAMPLERS["motpe"])
        try:
            from hydra.utils import get_class

            sampler_cls = get_class(str(target))
        except Exception as err:
            raise SweepError(f"hydra.sweeper.sampler._target_: {first_line(err)}") from None
        kwargs = {}
        for key, value in node.items():
            if key in ("_target_", "_partial_", "seed") or (
                key == "search_space" and value is None
            ):
                continue
            kwargs[key] = _instantiate(value, f"hydra.sweeper.sampler.{key}")
        return cls(str(target), sampler_cls, _seed(node.get("seed")), kwargs)

    def make(
        self, number: int | None = None, grid: dict[str, list[Any]] | None = None
    ) -> optuna.samplers.BaseSampler:
        """The sampler for trial ``number`` (its seed made of the sweep's seed and ``number``)."""
        reseed = number is not None and not issubclass(self.cls, _ONE_SEED)
        seed = trial_seed(self.seed, number) if reseed else self.seed
        kwargs = dict(self.kwargs)
        if self.is_grid and "search_space" not in kwargs:
            kwargs["search_space"] = grid or {}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return self.cls(seed=seed, **kwargs)
        except (TypeError, ValueError) as err:
            raise SweepError(f"hydra.sweeper.sampler ({self.label}): {first_line(err)}") from None


def _seed(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SweepError(f"hydra.sweeper.sampler.seed must be an integer or null, got {value!r}")
    return value


def _instantiate(value: Any, where: str) -> Any:
    """A constructor argument, nested ``_target_`` nodes (an independent sampler) built."""
    if not (isinstance(value, dict) and "_target_" in value):
        return value
    try:
        from hydra.utils import instantiate

        return instantiate(value)
    except Exception as err:
        raise SweepError(f"{where}: {first_line(err)}") from None


def pruner_spec(node: Any) -> dict[str, Any]:
    """``hydra.sweeper.pruner`` as the spec jobs rebuild the pruner from (``PRUNER_ATTR``):
    rlbench's ``{name, kwargs}``, or ``{_target_, <arguments>}`` kept as a dotted name."""
    if node is None or node == "???":
        return {"name": "none", "kwargs": {}}
    if not isinstance(node, dict):
        raise SweepError(f"hydra.sweeper.pruner must be a mapping or null, got {node!r}")
    if "_target_" in node:  # merged over the default {name: none, kwargs: {}}
        if str(node.get("name", "none")) != "none" or node.get("kwargs"):
            raise SweepError(
                f"hydra.sweeper.pruner has both name: {node.get('name')} (rlbench's form) and "
                f"_target_: {node['_target_']}: keep one of the two"
            )
        skip = ("_target_", "_partial_", "name", "kwargs")
        kwargs = {k: v for k, v in node.items() if k not in skip}
        return {"name": str(node["_target_"]), "kwargs": kwargs}
    return {"name": str(node.get("name", "none")), "kwargs": dict(node.get("kwargs") or {})}


def trial_seed(seed: int | None, number: int) -> int | None:
    """The sampler seed for trial ``number``: reproducible, and distinct for every trial."""
    return None if seed is None else (int(seed) * 1_000_003 + number) % 2**32


def claims(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trials that use up the budget, in the order they claimed their slot."""
    replaced = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    counted = [
        t
        for t in trials
        if t.state != TrialState.WAITING
        and t.number not in replaced
        and not t.system_attrs.get(IGNORED_ATTR)
    ]
    return sorted(counted, key=lambda t: (t.datetime_start or dt.datetime.min, t.number))


def admitted(study: optuna.Study, rdb: RDBStorage, trial_id: int, n_trials: int) -> bool:
    """Whether the just-started trial is within the budget; if not, put it back to WAITING."""
    order = [t._trial_id for t in claims(rdb.get_all_trials(study._study_id, deepcopy=False))]
    if trial_id in order[:n_trials]:
        return True
    rdb.set_trial_state_values(trial_id, state=TrialState.WAITING)
    return False


def fail_stale(study: optuna.Study, rdb: RDBStorage | None = None, max_retry: int = 2) -> None:
    """Fail (and re-queue) running trials whose process stopped sending heartbeats.

    With ``rdb``, also the running trials that never sent one and started more than the grace
    period ago: their process died between creating the trial and its first heartbeat, a case
    Optuna never fails, so the study would wait for them forever.
    """
    if isinstance(study._storage, optuna.storages.InMemoryStorage):
        return  # no heartbeats, and no other process
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    if rdb is None or rdb.grace_period is None:
        return
    cutoff = dt.datetime.now() - dt.timedelta(seconds=rdb.grace_period)
    running = rdb.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,))
    for trial in running:
        started = trial.datetime_start
        if started is not None and started < cutoff and not _has_heartbeat(rdb, trial._trial_id):
            requeue(study, trial._trial_id, max_retry)


def _has_heartbeat(rdb: RDBStorage, trial_id: int) -> bool:
    from optuna.storages._rdb import models  # Optuna has no public "has a heartbeat" query

    session = rdb.scoped_session()
    try:
        return session.query(models.TrialHeartbeatModel).filter_by(trial_id=trial_id).count() > 0
    finally:
        session.close()


def requeue(study: optuna.Study, trial_id: int, max_retry: int) -> None:
    """End a trial interrupted by us as FAIL and queue a copy, as a stale trial would be."""
    storage = study._storage
    try:
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry)(study, storage.get_trial(trial_id))


class Heartbeat:
    """Records a heartbeat for each running trial of this process every ``interval`` seconds.

    Jobs may run in other processes (joblib), but they die with the sweeper, so the sweeper's
    heartbeat stands for all of them.
    """

    def __init__(self, storage: Any, interval: int) -> None:
        self._storage = storage
        self._interval = interval
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        if self._beats:
            self._thread.start()
        return self

    @property
    def _beats(self) -> bool:
        return isinstance(self._storage, RDBStorage)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def add(self, trial_id: int) -> None:
        if self._beats:
            self._storage.record_heartbeat(trial_id)
        with self._lock:
            self._ids.add(trial_id)

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self._ids.discard(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                ids = list(self._ids)
            for trial_id in ids:
                with contextlib.suppress(Exception):  # a locked SQLite file: the next beat will do
                    self._storage.record_heartbeat(trial_id)
