"""The sweep loop: ask Optuna for trials, launch them through Hydra's launcher, tell the results.

Jobs receive the trial as ``++trial.*`` overrides (see :mod:`rlbench.run.trial`) and report
intermediate values through the storage, so pruning works with any launcher. A multi-objective
job returns a tuple (or list) with one value per direction. With ``storage: null`` the study
lives in memory: jobs get ``++trial.*`` only when there is an MLflow parent run to nest under.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.trial import Trial, TrialState

from rlbench.errors import UserError, first_line, storage_message
from rlbench.run.trial import close_storages, make_pruner
from rlbench.tracking.databases import with_driver
from rlbench.tracking.schema import (
    DUPLICATE_ATTR,
    FIXED_OVERRIDES_ATTR,
    FIXED_SETTINGS_ATTR,
    IGNORED_ATTR,
    PRUNED_ATTR,
    PRUNER_ATTR,
    SCORE_METRIC,
    SEARCH_SPACE_ATTR,
    STUDY_CODE_ATTR,
)

from ._parent_run import ParentRun, summary_lines, write_results
from ._space import (
    SearchSpace,
    SweepError,
    format_value,
    from_search_space,
    grid_values,
    parse_space,
)
from ._study import (
    Heartbeat,
    SamplerSpec,
    admitted,
    claims,
    duplicate_of,
    fail_stale,
    open_storage,
    pruner_spec,
    redact,
    requeue,
    sqlite_path,
    storage_for_jobs,
    storage_lock,
)

log = logging.getLogger(__name__)


class OptunaSweep:
    """Settings from ``hydra.sweeper`` (see ``config.py``) and the loop that uses them."""

    def __init__(
        self,
        sampler: Any = None,
        direction: Any = "minimize",
        storage: str | None = None,
        study_name: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 2,
        max_failure_rate: float = 0.0,
        params: Any = None,
        search_space: Any = None,
        custom_search_space: str | None = None,
        pruner: Any = None,
        trial_seeds: int = 1,
        seed_key: str = "seed",
        heartbeat_interval: int = 10,
        grace_period: int | None = None,
        max_retry: int = 2,
        enqueue_trials: Any = (),
        experiment_sequence: str | None = None,
    ) -> None:
        for key, value in (
            ("n_trials", n_trials),
            ("n_jobs", n_jobs),
            ("trial_seeds", trial_seeds),
            ("heartbeat_interval", heartbeat_interval),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SweepError(f"hydra.sweeper.{key} must be a positive integer, got {value!r}")
        rate = max_failure_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise SweepError(
                f"hydra.sweeper.max_failure_rate must be a number from 0.0 to 1.0, got {rate!r}"
            )
        # postgresql:// reaches psycopg 3, rlbench's driver (SQLAlchemy's default is psycopg2)
        self.storage_url = None if storage is None else with_driver(str(storage))
        self.study_name = study_name
        self.n_trials, self.n_jobs, self.trial_seeds = n_trials, n_jobs, trial_seeds
        self.max_failure_rate = float(rate)
        self.directions = _directions(direction)
        self.sampler_spec = SamplerSpec.from_config(_plain(sampler))
        self.pruner_spec = pruner_spec(_plain(pruner))
        self.seed_key = seed_key
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.max_retry = max_retry
        self.params = _plain(params)
        self.search_space = _plain(search_space)
        self.custom_search_space = str(custom_search_space) if custom_search_space else None
        self.enqueue_trials = list(_plain(enqueue_trials) or [])
        if experiment_sequence:
            log.info("hydra.sweeper.experiment_sequence is ignored: trials go out in batches")
        self.job_idx = 0
        self._first_launch = True
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # we say what matters ourselves

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    # -- the sweep -------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        try:
            return self._sweep(arguments)
        finally:  # the study's file whole again (its write-ahead log folded in)
            close_storages(getattr(self, "rdb", None))

    def _sweep(self, arguments: list[str]) -> list[JobReturn]:
        space = self._space(arguments)
        self._check_first_job(space)
        study = self._open(space)
        log.info(
            "Optuna study %r in %s: %d trials in total, %d at a time, %s sampler, %s pruner",
            study.study_name, redact(self.storage_url), self.n_trials_now, self.n_jobs,
            self.sampler_spec.label, self.pruner_spec["name"],
        )  # fmt: skip
        if self.storage_url is None:
            log.info(
                "storage null: the study lives in memory, so resuming it, pruning and the "
                "heartbeat are off (set hydra.sweeper.storage to a database URL to have them)"
            )
        self.job_storage = format_value(
            None if self.storage_url is None else storage_for_jobs(self.storage_url)
        )  # no password in it
        returns: list[JobReturn] = []
        parent = ParentRun.start(self.config, study, self._settings(space), self.storage_url)
        status, results = "FAILED", None
        try:
            with Heartbeat(self.rdb, self.heartbeat_interval) as heartbeat:
                self._loop(heartbeat, parent.run_id, returns)
            status = "FINISHED"
            sweep_dir = OmegaConf.select(self.config, "hydra.sweep.dir", default=".")
            results = write_results(study, str(sweep_dir))
        except BrokenConfig:  # its trials are not counted; the corrected command may go on
            raise
        except KeyboardInterrupt:
            status = "KILLED"
            again = (
                "the study was in memory (storage null): it is gone"
                if self.storage_url is None
                else "the running trials go back to the queue; run the same command again "
                "to continue the study"
            )
            print(f"interrupted: {again}", file=sys.stderr)
            raise SystemExit(130) from None
        except Exception as err:  # the study's own disk full: say so, not the storage's SQL
            db = sqlite_path(self.storage_url) if self.storage_url else None
            storage = None if isinstance(err, UserError) else storage_message(err, db)
            if storage is None:
                raise
            raise SweepError(f"the Optuna study could not be written: {storage}") from None
        finally:
            parent.finish(study, status, results)
        for line in summary_lines(study, self.storage_url):
            print(line)
        self._fail_if_nothing_completed(study)
        return returns

    def _space(self, arguments: list[str]) -> SearchSpace:
        """The search space (params, the deprecated search_space, the command line), the custom
        function that extends it, and the grid (which may lower n_trials to its size)."""
        params, translated = search_params(self.params, self.search_space)
        extend = self.custom_search_space
        space = parse_space(params, arguments, translated, allow_empty=True)
        if not space.params and not extend:  # as upstream: the trials still run
            log.warning(
                "nothing to search (no hydra.sweeper.params, no key=interval(...) or "
                "key=choice(...) on the command line): every trial runs the same configuration"
            )
        self.extender = load_extender(extend) if extend else None
        self.base_seed = self._base_seed(space)
        self.n_trials_now, self.grid = self.n_trials, None
        if self.sampler_spec.is_grid:
            self.grid = {k: grid_values(k, p.distribution) for k, p in space.params.items()}
            points = math.prod(len(v) for v in self.grid.values())
            if points < self.n_trials:
                self.n_trials_now = points
                log.info("the grid has %d points: n_trials is %d", points, points)
        self.sampler_spec.make(0, self.grid)  # reject bad settings before anything is created
        self.space = space
        return space

    def _check_first_job(self, space: SearchSpace) -> None:
        """Compose one job (each searched key at a value of its range) and check its folder,
        before the study or any run exists: a misspelt searched key (``algo.uper=interval(...)``)
        must not leave behind a study whose stored search space refuses the corrected command.
        An app with rlbench-train's groups also gets rlbench's value checks on that job and on
        every choice and both ends of every range (``algo.n_epochs=choice(0,5)`` stops here,
        not at the trial that draws 0)."""
        overrides = list(space.fixed.values())
        firsts = {k: p.override(_a_value(p.distribution)) for k, p in space.params.items()}
        loader = self.hydra_context.config_loader

        def compose(changed: dict[str, str]) -> DictConfig:
            lines = overrides + list((firsts | changed).values())
            return loader.load_sweep_config(master_config=self.config, sweep_overrides=lines)

        job = compose({})
        from rlbench.config import SEED_MAX, is_train_config
        from rlbench.run.job_checks import check_job, learned_settings

        self.fixed_settings = None
        if not is_train_config(job):
            self._check_sweep_dir()
            return
        if len(self.directions) != 1:
            raise SweepError(
                f"hydra.sweeper.direction names {len(self.directions)} objectives, but "
                f"rlbench-train returns one score ({SCORE_METRIC}): give one direction "
                "(maximize)"
            )
        if self.base_seed + self.trial_seeds - 1 > SEED_MAX:
            raise SweepError(
                f"{self.seed_key}={self.base_seed} with hydra.sweeper.trial_seeds="
                f"{self.trial_seeds} trains seeds up to {self.base_seed + self.trial_seeds - 1}, "
                f"past 2**63-1: use a smaller {self.seed_key}"
            )
        variants = [(None, {})] + [
            (key, {key: p.override(value)})
            for key, p in space.params.items()
            for value in _values_to_check(p.distribution)
        ]
        searched = [*space.params, self.seed_key] if self.trial_seeds > 1 else list(space.params)
        self.fixed_settings = learned_settings(job, searched)
        # the objective is the mean over this many seeds from this one: part of the problem
        self.fixed_settings["hydra.sweeper.trial_seeds"] = str(self.trial_seeds)
        self.fixed_settings[self.seed_key] = str(self.base_seed)
        for key, changed in variants:
            try:  # a group option (algo=dqn) is composed here: its errors name the key too
                variant = job if not changed else self._variant(job, changed, compose)
                with open_dict(variant):
                    variant.pop("hydra", None)
                # the env is built for the job and for the values of env keys: others cannot
                # change whether it builds
                check_job(variant, env=key is None or key.split(".")[0] == "env")
            except UserError as err:
                culprit = key or next((k for k in space.params if f"{k} " in f"{err} "), None)
                value = f": {changed[key].split('=', 1)[1]}" if key else ""
                where = f" (a value in the searched range of {culprit}{value})" if culprit else ""
                raise SweepError(f"{err}{where}") from None
        self._check_sweep_dir()

    @staticmethod
    def _variant(job: DictConfig, changed: dict[str, str], compose: Any) -> DictConfig:
        """``job`` with one searched key's override applied: set in place when the key is a
        value (cheap), composed again when it picks a config group's option (``algo=dqn``)."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        (line,) = changed.values()
        parsed = OverridesParser.create().parse_override(line)
        key = parsed.key_or_group
        current = OmegaConf.select(job, key, default=None)
        if isinstance(current, DictConfig) or parsed.is_delete():
            return compose(changed)
        variant = job.copy()
        with open_dict(variant):
            OmegaConf.update(variant, key, parsed.value(), merge=False, force_add=True)
        return variant

    def _check_sweep_dir(self) -> None:
        """The sweep's folder exists and is writable (before the study does)."""
        folder = Path(str(OmegaConf.select(self.config, "hydra.sweep.dir", default=".")))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            writable = os.access(folder, os.W_OK)
        except OSError as err:
            raise SweepError(
                f"hydra.sweep.dir={folder}: cannot create it ({err.strerror or err})"
            ) from None
        if not writable:
            raise SweepError(f"hydra.sweep.dir={folder} is not writable: choose another folder")

    def _open(self, space: SearchSpace) -> optuna.Study:
        """The study in its storage, checked against the space, with its enqueued trials."""
        try:
            pruner = make_pruner(self.pruner_spec["name"], self.pruner_spec["kwargs"])
        except UserError as err:
            raise SweepError(str(err)) from None
        self.rdb = open_storage(
            self.storage_url, self.heartbeat_interval, self.grace_period, self.max_retry
        )
        study = self._study(self.rdb, pruner, self.sampler_spec.make(None, self.grid))
        self._check_space(study, space)
        self._check_fixed_settings(study)
        with storage_lock(self.storage_url):  # parallel starters: each configuration once
            for i, values in enumerate(self.enqueue_trials):
                fixed = space.fixed_params(dict(values), f"hydra.sweeper.enqueue_trials[{i}]")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.enqueue_trial(fixed, skip_if_exists=True)
        self.study = study
        return study

    def _fail_if_nothing_completed(self, study: optuna.Study) -> None:
        """Every counted trial failed: the sweep found nothing, and says so with its exit code."""
        ended = [t for t in claims(study.get_trials(deepcopy=False)) if t.state.is_finished()]
        if ended and all(t.state == TrialState.FAIL for t in ended):
            raise SweepError(
                f"no trial of study {study.study_name!r} completed: all {len(ended)} failed "
                "(each trial's error is in the log above)"
            )

    def _loop(self, heartbeat: Heartbeat, parent_run_id: str | None, out: list) -> None:
        waiting_said = False
        while True:
            fail_stale(self.study, self.rdb, self.max_retry)
            claimed = claims(self.rdb.get_all_trials(self.study._study_id, deepcopy=False))
            free = self.n_trials_now - len(claimed)
            if free <= 0:
                running = sum(t.state == TrialState.RUNNING for t in claimed)
                if not running:
                    return
                if not waiting_said:
                    log.info("waiting for %d trial(s) running in other processes", running)
                    waiting_said = True
                time.sleep(min(self.heartbeat_interval, 5))
                continue
            batch: list[Trial] = []
            try:
                for _ in range(min(self.n_jobs, free)):
                    trial = self._ask(heartbeat)
                    if trial is None:
                        break
                    batch.append(trial)
            except BaseException:  # the trials asked so far never ran: queue them again
                for trial in batch:
                    requeue(self.study, trial._trial_id, self.max_retry)
                raise
            if batch:
                out.extend(self._run_batch(batch, heartbeat, parent_run_id))

    def _ask(self, heartbeat: Heartbeat) -> Trial | None:
        """A new (or re-queued) trial with its parameters sampled, or None when over budget."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = self.study.ask()
        heartbeat.add(trial._trial_id)
        all_trials = self.rdb.get_all_trials(self.study._study_id, deepcopy=False)
        twin = duplicate_of(all_trials, self.rdb.get_trial(trial._trial_id))
        if twin is not None:  # queued twice by processes that started together: skip this copy
            self.rdb.set_trial_system_attr(trial._trial_id, IGNORED_ATTR, True)
            self.rdb.set_trial_system_attr(trial._trial_id, DUPLICATE_ATTR, twin)
            self.rdb.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            heartbeat.discard(trial._trial_id)
            log.info("trial %d repeats the enqueued trial %d: skipped", trial.number, twin)
            return self._ask(heartbeat)
        if not admitted(self.study, self.rdb, trial._trial_id, self.n_trials_now):
            heartbeat.discard(trial._trial_id)
            return None
        try:
            self.study.sampler = self.sampler_spec.make(trial.number, self.grid)
            self.rdb.set_trial_system_attr(trial._trial_id, PRUNER_ATTR, self.pruner_spec)
            for key, param in self.space.params.items():
                trial._suggest(key, param.distribution)
            fixed = {  # deletions (~key) have no value
                k: line.split("=", 1)[1] for k, line in self.space.fixed.items() if "=" in line
            }
            for key, value in fixed.items():  # as upstream: what the custom function may read
                trial.set_user_attr(key, value)
            if self.extender is not None:
                self._extend(trial, set(fixed))
        except BaseException as err:  # nothing ran: the trial must not use up the budget
            requeue(self.study, trial._trial_id, self.max_retry)
            heartbeat.discard(trial._trial_id)
            if isinstance(err, ValueError) and not isinstance(err, SweepError):
                raise SweepError(f"trial {trial.number}: {first_line(err)}") from None
            raise
        trial.set_user_attr(FIXED_OVERRIDES_ATTR, list(self.space.fixed.values()))
        return trial

    def _extend(self, trial: Trial, fixed: set[str]) -> None:
        """Let ``custom_search_space`` suggest more parameters (after params, command line)."""
        try:
            self.extender(self.config, trial)
        except Exception as err:
            raise SweepError(
                f"custom_search_space {self.custom_search_space}: "
                f"{type(err).__name__}: {first_line(err)}"
            ) from None
        overlap = sorted(set(trial.params) & fixed)
        if overlap:
            raise SweepError(
                f"custom_search_space {self.custom_search_space} suggests {overlap[0]}, which "
                "the command line fixes: drop one of the two"
            )

    def _run_batch(
        self, batch: list[Trial], heartbeat: Heartbeat, parent_run_id: str | None
    ) -> list[JobReturn]:
        """Launch the batch (once per seed), then tell each trial how it ended."""
        values: dict[int, list[list[float]]] = {t.number: [] for t in batch}
        active, returns_all, failures = list(batch), [], []
        try:
            for seed_index in range(self.trial_seeds):
                overrides = [self._overrides(t, seed_index, parent_run_id) for t in active]
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
                self.job_idx += len(returns)
                returns_all.extend(returns)
                outcomes = [self._outcome(t, r) for t, r in zip(active, returns, strict=True)]
                self._stop_if_the_disk_failed(active, outcomes)
                self._stop_if_config_is_broken(active, outcomes)
                still = []
                for trial, outcome in zip(active, outcomes, strict=True):
                    if isinstance(outcome, _Ended):
                        if outcome.state == TrialState.FAIL:
                            failures.append(f"trial {trial.number} failed: {outcome.error}")
                        self._tell(trial, outcome.state)
                        heartbeat.discard(trial._trial_id)
                        continue
                    values[trial.number].append(outcome)
                    last_seed = seed_index == self.trial_seeds - 1
                    if not last_seed and len(self.directions) == 1 and trial.should_prune():
                        self._tell(trial, TrialState.PRUNED)  # pruned between seeds
                        heartbeat.discard(trial._trial_id)
                        continue
                    still.append(trial)
                active = still
        except BaseException:
            for trial in active:  # interrupted: these trials run again in a later sweep
                if self.rdb.get_trial(trial._trial_id).state == TrialState.RUNNING:
                    requeue(self.study, trial._trial_id, self.max_retry)
                heartbeat.discard(trial._trial_id)
            raise
        for trial in active:
            mean = [sum(col) / len(col) for col in zip(*values[trial.number], strict=True)]
            self._tell(trial, TrialState.COMPLETE, mean)
            heartbeat.discard(trial._trial_id)
        if failures and len(failures) / len(batch) > self.max_failure_rate:
            raise SweepError(
                f"{failures[0]}; the sweep stops: {len(failures)} of {len(batch)} trial(s) of a "
                f"batch failed, more than hydra.sweeper.max_failure_rate={self.max_failure_rate:g}"
                " allows"
            )
        return returns_all

    def _stop_if_the_disk_failed(self, batch: list[Trial], outcomes: list[Any]) -> None:
        """A job could not write (full disk, size limit, read-only): every later trial would fail
        the same way, so the sweep stops with that line; the batch's trials do not count."""
        storage = next((o.storage for o in outcomes if isinstance(o, _Ended) and o.storage), None)
        if storage is None:
            return
        for trial in batch:
            with contextlib.suppress(Exception):  # the study may sit on the full disk too
                self.rdb.set_trial_system_attr(trial._trial_id, IGNORED_ATTR, True)
                self._tell(trial, TrialState.FAIL)
        raise SweepError(storage)

    def _stop_if_config_is_broken(self, batch: list[Trial], outcomes: list[Any]) -> None:
        """Every job of this run's first launch failed with a UserError: a bad config, not bad
        hyperparameters. Stop with the job's message; those trials do not use up the budget."""
        first, self._first_launch = self._first_launch, False
        errors = [o.user_error for o in outcomes if isinstance(o, _Ended) and o.user_error]
        if not first or len(errors) < len(batch):
            return
        for trial in batch:
            self.rdb.set_trial_system_attr(trial._trial_id, IGNORED_ATTR, True)
            self._tell(trial, TrialState.FAIL)
        raise BrokenConfig(f"trial {batch[0].number} failed: {errors[0]}")

    def _outcome(self, trial: Trial, ret: JobReturn) -> list[float] | _Ended:
        """The job's objective values, or how the trial ended (told to Optuna by the caller)."""
        if ret.status != JobStatus.COMPLETED:
            err = ret._return_value
            first = first_line(err)
            said = f"{type(err).__name__}: {first}"
            log.warning("trial %d failed: %s", trial.number, said)
            storage = storage_message(err) if isinstance(err, BaseException) else None
            user = first if isinstance(err, UserError) else None
            return _Ended(TrialState.FAIL, user, said, storage=storage)
        if self.rdb.get_trial(trial._trial_id).system_attrs.get(PRUNED_ATTR):
            return _Ended(TrialState.PRUNED)
        try:
            return self._values(ret.return_value)
        except _ObjectiveCount as err:  # the command's directions, not the trial: stop at once
            log.warning("trial %d failed: %s", trial.number, err)
            return _Ended(TrialState.FAIL, str(err), error=str(err))
        except (TypeError, ValueError) as err:
            log.warning("trial %d failed: %s", trial.number, err)
            return _Ended(TrialState.FAIL, error=str(err))

    def _values(self, value: Any) -> list[float]:
        n = len(self.directions)
        items = list(value) if isinstance(value, list | tuple) else [value]
        if len(items) != n:
            raise _ObjectiveCount(
                f"the job returned {value!r}, {len(items)} value(s), and hydra.sweeper.direction "
                f"names {n}: give one direction per value the job returns (a multi-objective "
                "job returns a tuple)"
            )
        values = [float(v) for v in items]
        if any(math.isnan(v) for v in values):
            raise ValueError(f"the job returned NaN: {value!r}")
        return values

    def _tell(self, trial: Trial, state: TrialState, values: list[float] | None = None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                told = self.study.tell(
                    trial,
                    values if state == TrialState.COMPLETE else None,
                    state=state,
                    skip_if_finished=True,
                )
            except RuntimeError as err:  # the grid sampler's study.stop() when its grid is done
                if "Study.stop" not in str(err):
                    raise
                told = self.study._storage.get_trial(trial._trial_id)
        if told.state != state:  # another process took our heartbeat for a dead one
            log.warning(
                "trial %d had already ended %s (heartbeat missed for longer than the grace "
                "period); its result is dropped and its re-queued copy will run",
                trial.number, told.state.name,
            )  # fmt: skip
        elif state == TrialState.PRUNED:
            log.info("trial %d pruned", trial.number)

    def _overrides(self, trial: Trial, seed_index: int, parent_run_id: str | None) -> list[str]:
        params = trial.params
        out = list(self.space.fixed.values())
        out += [p.override(params[k]) for k, p in self.space.params.items()]
        out += [f"{k}={format_value(v)}" for k, v in params.items() if k not in self.space.params]
        if self.trial_seeds > 1:
            out.append(f"{self.seed_key}={self.base_seed + seed_index}")
        if self.storage_url is None and parent_run_id is None:
            return out  # nothing the job could reach: the app's overrides only, as upstream
        out += [
            f"++trial.storage={self.job_storage}",
            f"++trial.study={format_value(self.study.study_name)}",
            f"++trial.number={trial.number}",
            f"++trial.id={trial._trial_id}",
            f"++trial.parent_run_id={format_value(parent_run_id)}",
            f"++trial.seed_index={seed_index}",
        ]
        return out

    # -- helpers -------------------------------------------------------------------------------
    def _study(self, rdb: Any, pruner: Any, sampler: Any) -> optuna.Study:
        name = self.study_name or str(OmegaConf.select(self.config, "hydra.job.name") or "rlbench")
        directions = [d.lower() for d in self.directions]
        try:
            study = optuna.create_study(
                study_name=name,
                storage=rdb,
                sampler=sampler,
                pruner=pruner,
                directions=directions,
                load_if_exists=True,
            )
        except Exception as err:
            raise SweepError(f"cannot open study {name!r}: {first_line(err)}") from None
        existing = [d.name.lower() for d in study.directions]
        if existing != directions:
            raise SweepError(
                f"study {name!r} in {redact(self.storage_url)} has direction(s) "
                f"{', '.join(existing)}, not {', '.join(directions)}: pick another "
                "hydra.sweeper.study_name"
            )
        return study

    def _check_space(self, study: optuna.Study, space: SearchSpace) -> None:
        """A stored study keeps the search space it started with: another one is an error that
        says the two ways out, not a silent mix of two studies (or Optuna's "Cannot set
        different distribution kind" half-way through)."""
        from optuna.distributions import distribution_to_json

        wanted = {k: distribution_to_json(d) for k, d in space.distributions().items()}
        stored = study.user_attrs.get(SEARCH_SPACE_ATTR)
        if stored is None:  # a study from before this attribute: its last trial's space
            sampled = [t for t in study.get_trials(deepcopy=False) if t.distributions]
            if sampled:
                last = sampled[-1].distributions
                keys = set(wanted) | (set() if self.extender else set(last))
                stored = {k: distribution_to_json(last[k]) for k in keys if k in last}
        if stored is not None and stored != wanted and not self._counted(study):
            # only trials of broken commands (not counted) or none used it: nothing to mix
            log.info("study %r: no counted trial used its stored search space; it takes this "
                     "command's", study.study_name)  # fmt: skip
            study.set_user_attr(SEARCH_SPACE_ATTR, wanted)
            stored = wanted
        if stored is not None and stored != wanted:
            differ = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
            raise SweepError(
                f"study {study.study_name!r} in {redact(self.storage_url)} was run with another "
                f"search space ({', '.join(differ)} differ): give another "
                "hydra.sweeper.study_name, or a fresh hydra.sweeper.storage"
            )
        if study.user_attrs.get(SEARCH_SPACE_ATTR) is None:
            study.set_user_attr(SEARCH_SPACE_ATTR, wanted)

    def _check_fixed_settings(self, study: optuna.Study) -> None:
        """A stored study keeps the settings its trials learned with, beside the searched keys:
        continuing it with ``env.horizon=288`` or ``debug=fast`` added would rank trials of two
        problems together. Other code is allowed (a fix between launches) but said."""
        from rlbench.tracking.provenance import code_version

        if self.fixed_settings is None:  # not rlbench-train's config
            return
        stored = study.user_attrs.get(FIXED_SETTINGS_ATTR)
        if stored is not None and stored != self.fixed_settings and self._counted(study):
            differ = sorted(
                k for k in set(stored) | set(self.fixed_settings)
                if stored.get(k) != self.fixed_settings.get(k)
            )  # fmt: skip
            shown = ", ".join(
                f"{k}: {stored.get(k, '(unset)')} -> {self.fixed_settings.get(k, '(unset)')}"
                for k in differ[:3]
            ) + (", ..." if len(differ) > 3 else "")
            raise SweepError(
                f"study {study.study_name!r} in {redact(self.storage_url)} was run with other "
                f"settings ({shown}): give another hydra.sweeper.study_name for these, or the "
                "study's own settings to continue it"
            )
        if stored != self.fixed_settings:
            study.set_user_attr(FIXED_SETTINGS_ATTR, self.fixed_settings)
        code = code_version() or "uncommitted changes"
        before = study.user_attrs.get(STUDY_CODE_ATTR)
        if before is not None and before != code and self._counted(study):
            log.warning(
                "study %r: its earlier trials were made by %s, these by %s: they are ranked "
                "together (give another hydra.sweeper.study_name to keep them apart)",
                study.study_name, before, code,
            )  # fmt: skip
        if before is None or not self._counted(study):
            study.set_user_attr(STUDY_CODE_ATTR, code)

    @staticmethod
    def _counted(study: optuna.Study) -> bool:
        """Whether the study holds a trial that counts (not one a broken command left)."""
        return any(not t.system_attrs.get(IGNORED_ATTR) for t in study.get_trials(deepcopy=False))

    def _base_seed(self, space: SearchSpace) -> int:
        """The first training seed of each trial (``trial_seeds`` counts up from it)."""
        if self.trial_seeds > 1 and self.seed_key in space.params:
            raise SweepError(f"{self.seed_key} cannot be searched when trial_seeds > 1")
        line = space.fixed.pop(self.seed_key, None) if self.trial_seeds > 1 else None
        raw = line.split("=", 1)[1] if line else OmegaConf.select(self.config, self.seed_key)
        try:
            return int(raw or 0)
        except (TypeError, ValueError):
            raise SweepError(f"{self.seed_key} must be an integer, got {raw!r}") from None

    def _settings(self, space: SearchSpace) -> dict[str, Any]:
        return {
            "sweep.storage": redact(self.storage_url),
            "sweep.n_trials": self.n_trials,
            "sweep.n_jobs": self.n_jobs,
            "sweep.directions": ",".join(self.directions),
            "sweep.sampler": self.sampler_spec.label,
            "sweep.max_failure_rate": self.max_failure_rate,
            "sweep.pruner": self.pruner_spec["name"],
            "sweep.trial_seeds": self.trial_seeds,
        } | {f"space.{k}": str(p.distribution) for k, p in space.params.items()}


class BrokenConfig(SweepError):
    """Every job of the first launch failed on its configuration: the command is wrong."""


class _ObjectiveCount(ValueError):
    """The job returned another number of values than the study has directions."""


def _a_value(distribution: Any) -> Any:
    """One value a searched key can take (the first choice, the low end of a range)."""
    choices = getattr(distribution, "choices", None)
    return choices[0] if choices else distribution.low


def _values_to_check(distribution: Any) -> list[Any]:
    """The values a searched key can take that bound its others: every choice, a range's ends
    (rlbench's settings are monotone in what they allow: an interval's ends cover it)."""
    choices = getattr(distribution, "choices", None)
    if choices:
        return list(choices)
    return [distribution.low, distribution.high]


@dataclass
class _Ended:
    """A trial that ended without a value: failed (with the job's UserError, if any) or pruned."""

    state: TrialState
    user_error: str | None = None
    error: str = ""  # what the log said, for the line that stops the sweep
    storage: str | None = None  # the job could not write: the machine's fault, not the trial's


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _directions(direction: Any) -> list[str]:
    items = _plain(direction)
    items = items if isinstance(items, list | tuple) else [items]
    out = []
    for d in items:
        text = str(getattr(d, "name", d)).lower()
        if text not in ("maximize", "minimize"):
            raise SweepError(f"hydra.sweeper.direction: {d!r} is not maximize or minimize")
        out.append(text)
    if not out:
        raise SweepError("hydra.sweeper.direction is empty: give maximize or minimize")
    return out


DOCS_URL = "https://hydra.cc/docs/next/upgrades/1.1_to_1.2/changes_to_sweeper_config/"


def search_params(
    params: dict[str, Any] | None, search_space: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``params``, and the deprecated ``search_space`` translated into distributions, with
    hydra-optuna-sweeper's warnings: ``params`` wins when both are set."""
    if search_space is None:
        return params or {}, {}
    if params is not None:
        warnings.warn(
            "Both hydra.sweeper.params and hydra.sweeper.search_space are configured.\n"
            f"Hydra will use hydra.sweeper.params for defining search space.\n{DOCS_URL}",
            UserWarning,
            stacklevel=2,
        )
        return params, {}
    from hydra._internal.deprecation_warning import deprecation_warning

    deprecation_warning(
        "`hydra.sweeper.search_space` is deprecated and will be removed in the next major "
        f"release.\nPlease configure with `hydra.sweeper.params`.\n{DOCS_URL}"
    )
    return {}, from_search_space(search_space)


def load_extender(path: str) -> Any:
    """The ``custom_search_space`` function: a dotted path, or ``.file.function`` for a file
    beside the app's script (upstream's example names its own script this way)."""
    try:
        if not path.startswith("."):
            from hydra.utils import get_method

            return get_method(path)
        module_name, _, function = path[1:].rpartition(".")
        main = sys.modules.get("__main__")
        main_file = getattr(main, "__file__", None) or sys.argv[0]
        from pathlib import Path

        file = Path(main_file).resolve().with_name(f"{module_name}.py")
        if Path(main_file).resolve() == file and hasattr(main, function):
            return getattr(main, function)
        spec = importlib.util.spec_from_file_location(module_name.replace("-", "_"), file)
        if spec is None or spec.loader is None or not file.is_file():
            raise ImportError(f"no file {file}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, function)
    except Exception as err:
        raise SweepError(
            f"hydra.sweeper.custom_search_space: cannot load {path!r}: {first_line(err)}"
        ) from None
