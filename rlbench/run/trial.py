"""The job side of an Optuna sweep: report periodic scores, learn whether to stop.

The sweeper (``hydra/sweeper=rlbench_optuna``) runs each trial as an ordinary Hydra job, possibly in
another process (joblib launcher) or on another machine, so everything goes through the study's
storage, never through an in-memory object. It passes the trial as job overrides::

    ++trial.storage=<SQLAlchemy URL>   the study's RDB storage (null: the study is in the
                                       sweeper's memory; the job then neither prunes nor
                                       records its run id on the trial)
    ++trial.study=<name>               the study name
    ++trial.number=<n>                 the trial number (what Optuna and the dashboard show)
    ++trial.id=<id>                    the storage's trial id
    ++trial.parent_run_id=<id|null>    the sweep's MLflow parent run, for a nested child run
    ++trial.seed_index=<i>             which of the trial's ``trial_seeds`` seeds this job trains

A job outside a sweep (or in a sweep with an in-memory study and no MLflow parent run) has no
``trial`` key and :meth:`TrialContext.from_cfg` returns ``None``.

Pruning: :meth:`TrialContext.report` records an intermediate value in the storage and asks the
study's pruner (the sweeper stores its name and arguments on the trial as the system attribute
``rlbench.pruner``); a job told to stop calls :meth:`TrialContext.mark_pruned`, which sets the
system attribute ``rlbench.pruned`` that the sweeper reads to end the trial PRUNED.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rlbench.errors import UserError, first_line
from rlbench.tracking import schema
from rlbench.tracking.schema import PRUNED_ATTR, PRUNER_ATTR

log = logging.getLogger(__name__)
PRUNERS = ("median", "percentile", "hyperband", "successive_halving", "threshold", "none")
# Several processes write one SQLite file (sweepers, their jobs): a writer waits this long for
# the lock instead of failing with "database is locked" after sqlite3's default 5 s.
SQLITE_BUSY_TIMEOUT_S = 60.0
_STORAGES: dict[str, Any] = {}  # one engine per storage URL and process, shared by its jobs


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine arguments for an Optuna storage URL: a busy timeout for SQLite, a
    small checked pool for PostgreSQL (:mod:`rlbench.tracking.databases`)."""
    from rlbench.tracking.databases import engine_kwargs as database_engine_kwargs

    return database_engine_kwargs(url)


def job_storage(url: str) -> Any:
    """The RDB storage a job reports to: created once per process (it checks the schema)."""
    if url not in _STORAGES:
        import optuna

        from rlbench.tracking.databases import with_driver

        _STORAGES[url] = optuna.storages.RDBStorage(
            with_driver(url), engine_kwargs=engine_kwargs(with_driver(url))
        )
    return _STORAGES[url]


def close_storages(*storages: Any) -> None:
    """Close the database connections of ``storages`` and of this process's job storages.

    The last connection to a SQLite study in write-ahead-log mode folds the log back into the
    ``.db`` file and removes ``-wal``/``-shm``: a study copied as its one file then holds every
    trial. Ending a sweep does this itself rather than leave it to interpreter tear-down, which
    the installed commands skip (:func:`rlbench.cli.console`).
    """
    for storage in (*storages, *_STORAGES.values()):
        engine = getattr(storage, "engine", None)  # an in-memory storage has none
        # called on the way out of a failed sweep too: its own error is the one to show
        with contextlib.suppress(Exception):
            if engine is not None:
                engine.dispose()
    _STORAGES.clear()


def make_pruner(name: str, kwargs: dict[str, Any] | None = None) -> Any:
    """An Optuna pruner by its short name (``none`` never prunes) or its class's dotted path,
    with its keyword arguments.

    Arguments that only another pruner takes (a preset's ``n_startup_trials`` for ``median`` when
    the command line switches to ``threshold``) are dropped; arguments no pruner takes are errors.
    """
    import inspect

    import optuna

    classes = {
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "threshold": optuna.pruners.ThresholdPruner,
        "none": optuna.pruners.NopPruner,
    }
    if "." in str(name):  # {_target_: optuna.pruners.X, ...}: any class with its arguments
        from hydra.utils import instantiate

        try:
            return instantiate({"_target_": str(name), **(kwargs or {})})
        except Exception as err:
            raise UserError(f"hydra.sweeper.pruner ({name}): {first_line(err)}") from None
    key = str(name).lower()
    if key not in classes:
        raise UserError(
            f"hydra.sweeper.pruner.name: unknown pruner {name!r}; choose one of "
            f"{', '.join(PRUNERS)}"
        )
    accepted = {n: set(inspect.signature(c).parameters) for n, c in classes.items()}
    anyone = set().union(*accepted.values())
    kwargs = {k: v for k, v in (kwargs or {}).items() if k in accepted[key] or k not in anyone}
    try:
        return classes[key](**kwargs)
    except (TypeError, ValueError) as err:
        raise UserError(f"hydra.sweeper.pruner ({key}): {first_line(err)}") from None


@dataclass
class TrialContext:
    """One running trial of a sweep, as seen by the job that trains it."""

    storage: str | None  # None: the study lives in the sweeper's memory, out of the job's reach
    study: str
    number: int
    trial_id: int
    parent_run_id: str | None = None
    seed_index: int = 0
    step_offset: int = 0
    _trial: Any = field(default=None, repr=False, compare=False)
    _multi: bool = field(default=False, repr=False, compare=False)
    _study: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> TrialContext | None:
        """The trial this job belongs to, or ``None`` when the job is not part of a sweep.

        With several seeds per trial, seed ``i`` reports its steps shifted by
        ``i * train.total_steps`` so that the same seed of different trials lines up for pruners.
        """
        node = OmegaConf.select(cfg, "trial", default=None)
        if node is None:
            return None
        missing = [k for k in ("study", "number", "id") if node.get(k) is None]
        if missing:
            raise UserError(f"trial.{missing[0]} is missing: trial.* is set by the Optuna sweeper")
        seed_index = int(node.get("seed_index", 0) or 0)
        stride = int(OmegaConf.select(cfg, "train.total_steps", default=0) or 0)
        parent = node.get("parent_run_id")
        return cls(
            storage=str(node.storage) if node.get("storage") is not None else None,
            study=str(node.study),
            number=int(node.number),
            trial_id=int(node.id),
            parent_run_id=str(parent) if parent else None,
            seed_index=seed_index,
            step_offset=seed_index * stride,
        )

    def mlflow_tags(self) -> dict[str, str]:
        """Tags that tie the job's MLflow run to its study and trial."""
        return {
            schema.SWEEP_STUDY_TAG: self.study,
            schema.SWEEP_TRIAL_NUMBER_TAG: str(self.number),
            schema.SWEEP_SEED_INDEX_TAG: str(self.seed_index),
        }

    def run_name(self, base: str) -> str:
        """The name of the trial's MLflow run: the trial number first, so runs sort by trial."""
        return f"trial-{self.number}-{base}"

    def record_run(self, run_id: str | None, metric_names: list[str] | None = None) -> None:
        """Store the job's MLflow run id on its trial (user attribute ``rlbench.mlflow_run_id``;
        seed i > 0 of a trial under ``rlbench.mlflow_run_id.seed<i>``) and, once per study, the
        names of the objectives the job returns, which the dashboard shows instead of
        "Objective 0". Nothing without a storage the job can reach."""
        if self.storage is None or not run_id:
            return
        trial = self._optuna_trial()
        key = schema.MLFLOW_RUN_ATTR
        if self.seed_index:
            key = f"{key}.seed{self.seed_index}"
        trial.storage.set_trial_user_attr(self.trial_id, key, run_id)
        study = self._study
        # another count of directions is the sweeper's to say (it stops the sweep at once)
        if (
            metric_names
            and study.metric_names is None
            and len(study.directions) == len(metric_names)
        ):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental in some Optuna versions
                study.set_metric_names(list(metric_names))

    def report(self, step: int, value: float) -> bool:
        """Record ``value`` at ``step`` in the study's storage; ``True`` means stop (prune) now.

        Multi-objective studies cannot prune (Optuna has no intermediate values for them): the
        call records nothing and returns ``False``.
        """
        if self.storage is None:
            return False
        trial = self._optuna_trial()
        if self._multi:
            return False
        trial.report(float(value), int(step) + self.step_offset)
        return bool(trial.should_prune())

    def mark_pruned(self) -> None:
        """Tell the sweeper, through the storage, that this job stopped because it was pruned."""
        if self.storage is None:
            return
        trial = self._optuna_trial()
        trial.storage.set_trial_system_attr(self.trial_id, PRUNED_ATTR, True)

    def _optuna_trial(self) -> Any:
        """The live ``optuna.Trial`` over the shared storage, with the sweep's pruner."""
        if self._trial is not None:
            return self._trial
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        assert self.storage is not None
        storage = job_storage(self.storage)
        frozen = storage.get_trial(self.trial_id)
        spec = frozen.system_attrs.get(PRUNER_ATTR) or {"name": "none", "kwargs": {}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study = optuna.load_study(
                study_name=self.study,
                storage=storage,
                sampler=optuna.samplers.RandomSampler(),
                pruner=make_pruner(spec["name"], spec.get("kwargs")),
            )
        self._multi = len(study.directions) > 1
        self._study = study
        self._trial = optuna.Trial(study, self.trial_id)
        return self._trial
