"""What a sweep leaves behind: the MLflow parent run and the lines printed at the end.

One parent run per study (a rerun of the same study reopens it: its id is the study user attribute
``rlbench.mlflow_parent_run_id``); trials log nested child runs under it. When the sweep ends the
parent gets the best value and parameters, the trials table (CSV) and Optuna's
optimisation-history and parameter-importance plots.

Several processes on one study (parallel workers) share one parent: on a SQLite storage its
creation is serialised by a lock file beside the database; on a server storage a process that
created a parent checks a second later which one the study kept and discards its own if it lost.
A child run left RUNNING by a process that died with its MLflow helper (power loss, OOM killer)
is ended FAILED once its trial has finished, when a sweep starts and when it ends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from rlbench.tracking import schema
from rlbench.tracking.redaction import mask_passwords
from rlbench.tracking.schema import DUPLICATE_ATTR, PARENT_RUN_ATTR

from ._study import redact, sqlite_path, storage_lock

log = logging.getLogger(__name__)
ABANDONED = "its sweep process died before ending the run"
SETTLE_S = 1.0  # server storages: how long parallel starters may race to create the parent


@dataclass
class ParentRun:
    tracker: Any = None
    run_id: str | None = None
    out_dir: Path | None = None

    @classmethod
    def start(
        cls,
        config: DictConfig,
        study: optuna.Study,
        settings: dict[str, Any],
        storage_url: str | None = None,
    ) -> ParentRun:
        """Open (or reopen) the study's parent run; no run when the app has no tracking."""
        tracking = OmegaConf.select(config, "tracking", default=None)
        if tracking is None or not tracking.get("enabled", True):
            return cls()
        from rlbench.tracking import make_tracker

        tracker = make_tracker(tracking)
        tags = {
            schema.SWEEP_STUDY_TAG: study.study_name,
            schema.SWEEP_ROLE_TAG: schema.SWEEP_PARENT_ROLE,
            schema.SWEEP_STORAGE_TAG: str(settings.get("sweep.storage", "")),
        }
        name = f"sweep-{study.study_name}"
        db = sqlite_path(storage_url) if storage_url else None
        with storage_lock(storage_url):
            previous = study.user_attrs.get(PARENT_RUN_ATTR)
            run_id = _reopen(tracker, name, tags, previous)
            if run_id is None:
                run_id = tracker.start(name, settings, tags)
            if run_id and run_id != previous:
                study.set_user_attr(PARENT_RUN_ATTR, run_id)
        server = storage_url is not None and db is None
        if server and run_id and run_id != previous:  # a race no lock file can settle
            time.sleep(SETTLE_S)
            kept = study.user_attrs.get(PARENT_RUN_ATTR)
            if kept and kept != run_id:
                tracker.discard()
                run_id = _reopen(tracker, name, tags, kept) or run_id
        sweep_dir = OmegaConf.select(config, "hydra.sweep.dir", default="outputs/multirun")
        parent = cls(tracker, run_id, Path(str(sweep_dir)) / "optuna")
        parent.end_abandoned_children(study)
        return parent

    def end_abandoned_children(self, study: optuna.Study) -> list[str]:
        """End FAILED the child runs left RUNNING whose trial had already finished.

        The trial states are read *before* the runs: a job ends its run and only then is its
        trial told, so a run still RUNNING after its trial was seen finished was abandoned. Read
        the other way round, a job in another process could end its run and its trial between
        the two reads, and a healthy run would be ended FAILED.
        """
        if self.tracker is None or not self.run_id:
            return []
        states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
        try:
            runs = self.tracker.running_runs(f"tags.`{schema.PARENT_RUN_TAG}` = '{self.run_id}'")
        except Exception as err:  # housekeeping must not stop a sweep
            log.warning("could not look for abandoned child runs: %s", err)
            return []
        ended = []
        for run in runs:
            number = run["tags"].get(schema.SWEEP_TRIAL_NUMBER_TAG)
            state = states.get(int(number)) if number is not None else None
            if state is None or not state.is_finished():
                continue  # its job may be alive in another process
            with contextlib.suppress(Exception):
                self.tracker.end_other_run(run["run_id"], "FAILED", ABANDONED)
                ended.append(run["run_id"])
        if ended:
            log.info("ended %d child run(s) left RUNNING by a dead process", len(ended))
        return ended

    def finish(self, study: optuna.Study, status: str, results: Path | None = None) -> None:
        """Log the study's results (and ``optimization_results.yaml``) on the parent run and
        close it."""
        if self.tracker is None:
            return
        error = None
        try:
            self.end_abandoned_children(study)
            self._log_results(study)
            if results is not None:
                self.tracker.log_artifact(results, schema.SWEEP_DIR)
        except Exception as err:  # never lose the sweep over a plot or a table
            error = f"{type(err).__name__}: {err}"
            log.warning("could not log the study summary to MLflow: %s", error)
        finally:
            self.tracker.end(status)

    def _log_results(self, study: optuna.Study) -> None:
        assert self.out_dir is not None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        trials = study.get_trials(deepcopy=False)
        counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
        metrics = {
            schema.sweep_metric(f"n_{k}"): float(v) for k, v in counts.items() if k != "waiting"
        }
        best = best_trials(study)
        if len(study.directions) == 1 and best:
            metrics[schema.BEST_VALUE_METRIC] = float(best[0].value)
            self.tracker.set_tags(
                {schema.BEST_TRIAL_NUMBER_TAG: str(best[0].number)}
                | {schema.BEST_PARAM_TAG_PREFIX + k: str(v) for k, v in best[0].params.items()}
            )
        self.tracker.log_metrics(metrics, step=len(trials))
        best_json = self.out_dir / schema.BEST_TRIALS_FILE
        best_json.write_text(json.dumps([_trial_record(t) for t in best], indent=2))
        self.tracker.log_artifact(best_json, schema.SWEEP_DIR)
        table = self.out_dir / schema.TRIALS_FILE
        frame = study.trials_dataframe()
        for column in frame.select_dtypes(include=["object", "string"]).columns:
            # e.g. the user attribute fixed_overrides: ["tracking.uri=https://u:pw@host", ...]
            frame[column] = frame[column].map(
                lambda v: mask_passwords(str(v)) if isinstance(v, str | list) else v
            )
        frame.to_csv(table, index=False)
        self.tracker.log_artifact(table, schema.SWEEP_DIR)
        for path in _plots(study, self.out_dir):
            self.tracker.log_artifact(path, schema.SWEEP_DIR)


def _reopen(tracker: Any, name: str, tags: dict[str, str], run_id: str | None) -> str | None:
    """``run_id`` set RUNNING again, or None (no id, or the store no longer has that run)."""
    if not run_id:
        return None
    try:
        return tracker.start(name, {}, tags, resume_run_id=run_id)
    except Exception as err:  # the tracking store was reset: the caller starts a fresh parent
        log.warning("cannot reopen parent run %s (%s); starting a new one", run_id, err)
        return None


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best trial (one objective) or the Pareto front (several); empty before any result."""
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return []
    return [study.best_trial] if len(study.directions) == 1 else list(study.best_trials)


def write_results(study: optuna.Study, sweep_dir: str) -> Path | None:
    """``optimization_results.yaml`` in the sweep folder, as hydra-optuna-sweeper writes it:
    name, best_params and best_value, or the Pareto front as solutions (params and values) for
    several objectives. Nothing before a trial completed."""
    best = best_trials(study)
    if not best:
        return None
    if len(study.directions) == 1:
        results: dict[str, Any] = {
            "name": "optuna",
            "best_params": best[0].params,
            "best_value": best[0].value,
        }
        log.info("Best parameters: %s", best[0].params)
        log.info("Best value: %s", best[0].value)
    else:
        results = {
            "name": "optuna",
            "solutions": [{"params": t.params, "values": t.values} for t in best],
        }
        log.info("Number of Pareto solutions: %d", len(best))
    path = Path(sweep_dir) / schema.OPTIMIZATION_RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(mask_passwords(OmegaConf.to_yaml(OmegaConf.create(results))))
    return path


def _trial_record(trial: FrozenTrial) -> dict[str, Any]:
    return {"number": trial.number, "values": trial.values, "params": trial.params}


def _plots(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Optimisation history and parameter importances as PNG files (matplotlib backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    from rlbench.tracking.importance import importance_kwargs

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return []
    kwargs = importance_kwargs(study)  # the target (first objective) and its name
    history = {k: v for k, v in kwargs.items() if k != "evaluator"}
    jobs = [(schema.HISTORY_PLOT_FILE, lambda: ovm.plot_optimization_history(study, **history))]
    if len(complete) >= 2:
        jobs.append(
            (schema.IMPORTANCE_PLOT_FILE, lambda: ovm.plot_param_importances(study, **kwargs))
        )
    paths = []
    for filename, plot in jobs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot()
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.tight_layout()
            fig.savefig(out_dir / filename, dpi=100, bbox_inches="tight")
            plt.close(fig)
            paths.append(out_dir / filename)
        except Exception as err:  # e.g. importances need parameters that vary
            log.info("skipped %s: %s", filename, err)
    return paths


def summary_lines(study: optuna.Study, storage_url: str | None) -> list[str]:
    """What the user reads when the sweep ends: counts and the best trial(s)."""
    trials = study.get_trials(deepcopy=False)
    count = {s: sum(t.state == s for t in trials) for s in TrialState}
    rerun = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    skipped = {t.number for t in trials if DUPLICATE_ATTR in t.system_attrs}
    failed = sum(t.state == TrialState.FAIL and t.number not in rerun | skipped for t in trials)
    lines = [
        f"study {study.study_name!r} in {redact(storage_url)}: "
        f"{count[TrialState.COMPLETE]} complete, {count[TrialState.PRUNED]} pruned, "
        f"{failed} failed" + (f", {len(rerun)} re-run after an interruption" if rerun else "")
    ]
    best = best_trials(study)
    if not best:
        return [*lines, "no trial completed"]
    label = "best trial" if len(best) == 1 else "Pareto-optimal trial"
    for t in best[:10]:
        values = ", ".join(f"{v:.6g}" if math.isfinite(v) else str(v) for v in t.values)
        params = "  ".join(f"{k}={v}" for k, v in t.params.items())
        lines.append(f"{label} {t.number}: value {values}  {params}")
    return lines
