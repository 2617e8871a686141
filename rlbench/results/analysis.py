"""Tidy pandas frames over the project's MLflow runs and Optuna studies, for notebooks and reports.

    from rlbench.analysis import load_runs, score_table, load_curves, compare
    runs = load_runs(filter="tags.benchmark = 'quick'")    # one row per run
    table = compare(score_table(runs))                      # ranks with bootstrap intervals
    curves = load_curves(runs)                              # learning curves, long format
    episodes = load_trajectories(score_table(runs))         # one evaluation episode per cell
    study, trials = load_study()                            # the newest Optuna study

Everything is read through MLflow's and Optuna's client APIs (never from files under
``outputs/``), from the embedded stores by default: ``sqlite:///outputs/mlflow.db`` (or
``MLFLOW_TRACKING_URI``) and ``sqlite:///outputs/optuna.db``. Statistics are not implemented
here: :func:`compare` is :func:`rlbench.results.stats.compare`, the one the report uses.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rlbench.config import CONF_DIR, SEED_MAX, override_value
from rlbench.errors import UserError, first_line
from rlbench.results.stores import check_readable_store, reading_store
from rlbench.tracking.client import (
    experiment_id,
    mlflow_call,
    mlflow_client,
    resolve_tracking_uri,
)
from rlbench.tracking.schema import (
    ALGO_PRESET_TAG,
    CURVE_METRIC,
    FIXED_OVERRIDES_ATTR,
    KIND_TAG,
    LEGACY_EVAL_PREFIX,
    LEGACY_NAMES,
    PRUNED_TAG,
    REPORT_KIND,
    RETURN,
    RUN_KEY_TAG,
    SCORE_METRIC,
    SCORED_POLICY_TAG,
    SWEEP_STUDY_TAG,
    TEST_PREFIX,
    TRAJECTORY_ARTIFACT,
)
from rlbench.tracking.tracker import DEFAULT_EXPERIMENT

if TYPE_CHECKING:
    import optuna
    from mlflow.tracking import MlflowClient
    from omegaconf import DictConfig

DEFAULT_STORAGE = "sqlite:///outputs/optuna.db"
PAGE_SIZE = 1000
#: Tidy column -> the param it comes from (the config keys every training run logs).
GROUP_PARAMS: dict[str, str] = {
    "env": "env.name",
    "load": "env.load",
    "algo": "algo.name",
    "seed": "seed",
}
RUN_COLUMNS = (
    "run_id",
    "run_name",
    "experiment_id",
    "status",
    "start_time",
    "end_time",
    *GROUP_PARAMS,
    "score",
)
NO_LOAD = "-"  # the load column of environments without load patterns
GENERIC_ENV = "gym"  # env.name of conf/env/gym.yaml: its runs are told apart by env.id
BEST_SUFFIX = "@best"  # the entry of runs scored with eval.policy=best: dqn@best
#: the param of an observation's load forecast: ``ppo`` with ``env.forecast=lstm`` is ``ppo+lstm``
FORECAST_PARAM = "env.forecast"
INT64_MIN = -(2**63)
#: the states of an MLflow run (mlflow.entities.RunStatus), for ``load_runs(status=...)``
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED", "RUNNING", "SCHEDULED")


# --------------------------------------------------------------------------- runs
def open_store(uri: str) -> MlflowClient:
    """A client on the existing store ``uri``, after checking (read-only) that a SQLite file
    is an MLflow store: MLflow would add its tables to any other database it is pointed at."""
    check_readable_store(uri)
    return mlflow_client(uri)


def load_runs(
    experiment: str = DEFAULT_EXPERIMENT,
    filter: str | None = None,
    tracking_uri: str | None = None,
    *,
    status: str | None = None,
    include_reports: bool = False,
    metric: str = SCORE_METRIC,
) -> pd.DataFrame:
    """One row per run of ``experiment`` matching the MLflow ``filter`` string, newest first.

    Columns: ``run_id``, ``run_name``, ``experiment_id``, ``status``, ``start_time`` and
    ``end_time`` (UTC timestamps), the grouping columns ``env``, ``load``, ``algo``, ``seed`` (from
    the params ``env.name``, ``env.load``, ``algo.name``, ``seed``), ``score`` (the last value of
    ``metric``: by default ``test/mean_return``, the final evaluation on held-out test seeds, or
    ``eval/mean_return`` in runs logged before validation and test were split; NaN if not
    logged; a run whose observation carries a load forecast, ``env.forecast``, is the entry
    ``<algo>+<forecast>``, and one scored on its best-validated weights, ``eval.policy=best``,
    the entry ``<algo>@best``), then every param as
    ``params.<key>``, every metric's last value as ``metrics.<key>`` and every tag as
    ``tags.<key>`` (MLflow's own column names). Params that are numbers in every run become
    numeric columns. ``status`` keeps only runs in that state (``"FINISHED"``); comparison
    reports (tag ``rlbench.kind = report``) are left out unless ``include_reports``.
    The frame's ``attrs["tracking_uri"]`` records the store, for :func:`load_curves`.
    """
    if not isinstance(filter, str | None):
        raise UserError(f"filter must be an MLflow filter string, got {filter!r}")
    status = _run_status(status)
    uri = resolve_tracking_uri(tracking_uri)
    with reading_store(uri):
        return _load_runs(uri, experiment, filter, status, include_reports, metric)


def _run_status(status: str | None) -> str | None:
    """``status`` as MLflow spells it (``finished`` is ``FINISHED``); a :class:`UserError` for
    anything else: MLflow's filter would match no run and the frame would just be empty."""
    if status is None or status == "":
        return None
    from rlbench.cli import did_you_mean

    word = status.strip().upper() if isinstance(status, str) else None
    if word not in RUN_STATUSES:
        raise UserError(
            f"status={status!r} is not an MLflow run status"
            f"{did_you_mean(str(word or status), RUN_STATUSES)}; choose one of "
            f"{', '.join(RUN_STATUSES)} (any case)"
        )
    return word


def _load_runs(
    uri: str,
    experiment: str,
    filter: str | None,
    status: str | None,
    include_reports: bool,
    metric: str,
) -> pd.DataFrame:
    from mlflow.entities import ViewType

    client = open_store(uri)
    exp_id = experiment_id(client, uri, experiment)
    clauses = [filter.strip()] if filter and filter.strip() else []  # MLflow has only AND
    if status:
        clauses.append(f"attributes.status = '{status}'")
    query = " and ".join(clauses)
    runs, token = [], None
    while True:
        page = mlflow_call(
            uri,
            f"searching runs (filter {filter!r})" if filter else "searching runs",
            client.search_runs,
            [exp_id],
            filter_string=query,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=PAGE_SIZE,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    rows = [_run_row(run) for run in runs]
    frame = _runs_frame(rows, metric)
    _check_metric_exists(frame, metric, experiment)
    if not include_reports and f"tags.{KIND_TAG}" in frame:
        frame = frame[frame[f"tags.{KIND_TAG}"].fillna("") != REPORT_KIND].reset_index(drop=True)
    frame.attrs["tracking_uri"] = uri
    frame.attrs["experiment"] = experiment
    frame.attrs["experiment_id"] = exp_id
    return frame


def _run_row(run: Any) -> dict[str, Any]:
    info, data = run.info, run.data
    row: dict[str, Any] = {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
    }
    row |= {f"params.{k}": v for k, v in data.params.items()}
    row |= {f"metrics.{k}": v for k, v in data.metrics.items()}
    row |= {f"tags.{k}": v for k, v in data.tags.items()}
    return row


def _runs_frame(rows: list[dict[str, Any]], metric: str) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(RUN_COLUMNS))
    for col in ("start_time", "end_time"):
        frame[col] = pd.to_datetime(frame[col], unit="ms", utc=True)
    prefixed = sorted(c for c in frame.columns if c.startswith(("params.", "metrics.", "tags.")))
    for col in prefixed:
        if col.startswith("params."):
            frame[col] = _maybe_numeric(frame[col])
    for col, param in GROUP_PARAMS.items():
        frame[col] = frame.get(f"params.{param}", pd.Series(pd.NA, index=frame.index))
    preset = frame.get(f"tags.{ALGO_PRESET_TAG}")
    if preset is not None:  # algo=ppo_seed is its own entry, not more seeds of ppo
        frame["algo"] = preset.where(preset.notna() & (preset != "None"), frame["algo"])
    forecast = frame.get(f"params.{FORECAST_PARAM}")
    if forecast is not None:  # a policy that sees a forecast is its own entry, too
        with_forecast = forecast.notna() & ~forecast.astype(str).isin(["none", "None", "nan"])
        frame["algo"] = frame["algo"].where(
            ~with_forecast, frame["algo"].astype(str) + "+" + forecast.astype(str)
        )
    scored = frame.get(f"tags.{SCORED_POLICY_TAG}")
    if scored is not None:  # scored on its best-validated weights: not more seeds of the last
        best = scored.astype(str) == "best"
        frame["algo"] = frame["algo"].where(~best, frame["algo"].astype(str) + BEST_SUFFIX)
    env_id = frame.get("params.env.id")
    if env_id is not None:  # env=gym names every gymnasium task "gym": the task is its id
        generic = (frame["env"] == GENERIC_ENV) & env_id.notna()
        frame["env"] = frame["env"].where(~generic, env_id)
    frame["load"] = frame["load"].astype(object).where(frame["load"].notna(), NO_LOAD)
    frame["seed"] = _seeds(frame["seed"])
    score = pd.to_numeric(_metric_or_legacy(frame, metric), errors="coerce").astype(float)
    # MLflow stores inf as the largest float: a diverged score, not a real one
    frame["score"] = score.where(np.abs(score) < np.finfo(float).max)
    return frame[[*RUN_COLUMNS, *prefixed]]


def _check_metric_exists(frame: pd.DataFrame, metric: str, experiment: str) -> None:
    """``UserError`` when no run logged a chosen ``metric``: a misspelt name used to give a
    frame of NaN scores that ``compare`` then called empty. The default score is exempt (runs
    still training have not logged it yet)."""
    if metric == SCORE_METRIC or frame.empty or f"metrics.{metric}" in frame:
        return
    legacy = LEGACY_NAMES.get(metric)
    if legacy is not None and f"metrics.{legacy}" in frame:
        return
    from rlbench.cli import did_you_mean

    names = sorted(c.removeprefix("metrics.") for c in frame if c.startswith("metrics."))
    raise UserError(
        f"metric={metric!r} was logged by none of the {len(frame)} runs of experiment "
        f"{experiment!r}{did_you_mean(metric, names)}; their metrics: "
        f"{', '.join(names[:12]) or 'none'}{', ...' if len(names) > 12 else ''}"
    )


def _metric_or_legacy(frame: pd.DataFrame, metric: str) -> pd.Series:
    """The last value of ``metric`` per run; for a run without it, the value of the name it had
    before validation and test were split (``eval/mean_return`` for ``test/mean_return``)."""
    missing = pd.Series(np.nan, index=frame.index)
    value = frame.get(f"metrics.{metric}", missing)
    legacy = LEGACY_NAMES.get(metric)
    if legacy is None or f"metrics.{legacy}" not in frame:
        return value
    return value.where(value.notna(), frame[f"metrics.{legacy}"])


def _maybe_numeric(column: pd.Series) -> pd.Series:
    """The column as numbers if every logged value is one (``"3"``, ``"0.99"``), else as is.

    Whole numbers become ``Int64``; whole numbers outside its range (a seed of 2**63) keep
    their logged text rather than become inexact floats."""
    present = column.dropna()
    numbers = pd.to_numeric(present, errors="coerce")
    if present.empty or numbers.isna().any():
        return column
    integral = not present.astype(str).str.contains(r"[.eE]|inf|nan", case=False).any()
    if integral:
        ints = [_whole(v) for v in present]
        if any(v is None or not INT64_MIN <= v <= SEED_MAX for v in ints):
            return column
        return pd.to_numeric(column, errors="coerce").astype("Int64")
    return pd.to_numeric(column, errors="coerce").astype(float)


def _whole(value: Any) -> int | None:
    """``value`` (a logged param: text, or already a number) as an exact int, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return int(value) if np.isfinite(value) and float(value).is_integer() else None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _seeds(column: pd.Series) -> pd.Series:
    """The ``seed`` column: the logged seed where it is an integer in 0..2**63-1, else NA
    (:func:`invalid_seeds` lists the runs whose logged seed is not)."""
    values = [_whole(v) if v is not None and v is not pd.NA and v == v else None for v in column]
    valid = [v if v is not None and 0 <= v <= SEED_MAX else pd.NA for v in values]
    return pd.array(valid, dtype="Int64")


def invalid_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of a :func:`load_runs` frame that logged a seed outside 0..2**63-1 (or not a whole
    number): ``run_id``, ``run_name`` and the logged ``seed`` text. Such seeds cannot be told
    apart from others in the statistics (numpy's integers stop at 2**63-1); rlbench-train
    refuses them, but a store may hold runs written another way."""
    logged = runs.get(f"params.{GROUP_PARAMS['seed']}")
    if logged is None or runs.empty:
        return pd.DataFrame(columns=["run_id", "run_name", "seed"])
    bad = logged.notna() & runs["seed"].isna()
    return pd.DataFrame(
        {"run_id": runs["run_id"][bad], "run_name": runs["run_name"][bad],
         "seed": logged[bad].astype(str)}
    ).reset_index(drop=True)  # fmt: skip


def score_table(
    runs: pd.DataFrame, *, latest_per_config: bool = True, sweep_trials: bool = True
) -> pd.DataFrame:
    """The runs a comparison may use, as the tidy frame :func:`compare` takes: one row per run.

    Keeps runs that FINISHED, were not pruned, logged the score metric and name an algorithm
    (a sweep's parent run names none), and whose seed, when they logged one, is an integer in
    0..2**63-1 (:func:`invalid_seeds`). With ``latest_per_config``, a configuration trained
    twice (same ``rlbench.run_key`` tag: same config and seed) counts once, by its newest run,
    and so does an algorithm run on a task with one seed but other settings (a seed is not
    counted twice). ``attrs["left_out"]``: how many runs each rule left out.
    ``sweep_trials=False`` also leaves out the runs of Optuna trials (tag
    ``rlbench.sweep.study``): each tries other settings, so they are not seeds of one algorithm.
    Columns: ``run_id``, ``run_name``, ``env``, ``load``, ``algo``, ``seed``, ``score``, then
    the other final ``test/*`` metrics without their prefix (``cost``, ``sla_violation``, ...;
    ``eval/*`` for runs logged before validation and test were split).
    """
    _require_frame(runs, "a load_runs() frame", "status")
    keep = (runs["status"] == "FINISHED") & runs["score"].notna() & runs["algo"].notna()
    keep &= np.isfinite(runs["score"].astype(float))
    if len(runs):
        keep &= ~runs["run_id"].isin(invalid_seeds(runs)["run_id"])
    if f"tags.{PRUNED_TAG}" in runs:
        keep &= runs[f"tags.{PRUNED_TAG}"].fillna("false").astype(str).str.lower() != "true"
    left_out: dict[str, int] = {}
    if not sweep_trials and f"tags.{SWEEP_STUDY_TAG}" in runs:
        trial = runs[f"tags.{SWEEP_STUDY_TAG}"].notna()
        left_out["runs of sweep trials"] = int((keep & trial).sum())
        keep &= ~trial
    used = runs[keep]
    if latest_per_config and f"tags.{RUN_KEY_TAG}" in used:
        key = used[f"tags.{RUN_KEY_TAG}"].fillna(used["run_id"])
        newest = used.assign(_key=key).sort_values("start_time", ascending=False)
        used = newest.drop_duplicates("_key").drop(columns="_key")
        left_out["older runs of the same configuration"] = int(keep.sum()) - len(used)
        # the same algorithm, task and seed with other settings (train.total_steps=2048,4096):
        # not more seeds of one entry; the newest is compared
        trial = used.get(f"tags.{SWEEP_STUDY_TAG}", pd.Series(None, index=used.index))
        # (a sweep's trials share their seed by design: each is its own configuration)
        seeded = used[used["seed"].notna() & trial.isna()]
        seeded = seeded.sort_values("start_time", ascending=False)
        again = seeded.duplicated(["env", "load", "algo", "seed"])
        left_out["runs of an algorithm, task and seed with other settings"] = int(again.sum())
        used = used.drop(index=seeded.index[again])
    finals = final_metrics(used)
    table = used[["run_id", "run_name", *GROUP_PARAMS, "score"]].join(finals)
    table.attrs = dict(runs.attrs)  # the store, for load_curves and load_trajectories
    table.attrs["left_out"] = {k: n for k, n in left_out.items() if n}
    table = table.astype({"algo": str, "env": str, "load": str})
    table = table.sort_values(["env", "load", "algo", "seed", "run_id"], kind="stable")
    return table.reset_index(drop=True)


def final_metrics(runs: pd.DataFrame) -> pd.DataFrame:
    """The final evaluation's statistics of a :func:`load_runs` frame, one column each without
    its prefix (``cost``, ``std_return``, ...): ``test/<name>``, or for a run logged before
    validation and test were split its ``eval/<name>``; the score is the ``score`` column."""
    out: dict[str, pd.Series] = {}
    for prefix in (f"metrics.{TEST_PREFIX}", f"metrics.{LEGACY_EVAL_PREFIX}"):  # new names win
        for col in (c for c in runs.columns if c.startswith(prefix)):
            name = col.removeprefix(prefix)
            if name == RETURN:
                continue  # the score
            out[name] = out[name].fillna(runs[col]) if name in out else runs[col]
    return pd.DataFrame(out, index=runs.index)


# --------------------------------------------------------------------------- curves
def load_curves(
    runs: pd.DataFrame | Iterable[str],
    metric: str = CURVE_METRIC,
    tracking_uri: str | None = None,
    *,
    threads: int = 8,
    missing_ok: bool = False,
) -> pd.DataFrame:
    """Every logged value of ``metric`` for ``runs``, long: one row per (run, step).

    The default is the learning curve, ``val/mean_return`` (periodic evaluations on validation
    seeds). A run logged before validation and test were split has it as ``eval/mean_return``,
    whose last point is the final test evaluation: that point is left out, so the curve is
    validation only there too.

    ``runs`` is a frame from :func:`load_runs` (or :func:`score_table`) or a list of run ids.
    Columns: ``run_id``, ``env``, ``load``, ``algo``, ``seed`` (from the frame, when given),
    ``step`` (environment steps), ``value``, ``timestamp`` (UTC). The store is the frame's
    ``attrs["tracking_uri"]``, else ``tracking_uri``, else the default.

    One ``get_metric_history`` call per run (MLflow's public API): ~0.6 ms a run on SQLite
    (0.3 s for 500 runs), so its private bulk query would save little; over HTTP, where each call
    is a round trip, ``threads`` calls run at once.

    A run id the store does not have, or a ``metric`` none of the runs logged (a misspelt
    name), is a :class:`UserError` naming it, not an empty frame; ``missing_ok=True`` (and the
    default metric, which runs still training have not logged yet) allows the latter.
    """
    if isinstance(runs, str):  # one run id, not its characters
        runs = [runs]
    if not isinstance(runs, pd.DataFrame | list | tuple | pd.Series | pd.Index):
        raise UserError(f"expected a runs frame or a list of run ids, got {type(runs).__name__}")
    frame = runs if isinstance(runs, pd.DataFrame) else pd.DataFrame({"run_id": list(runs)})
    _require_frame(frame, "a runs frame or a list of run ids", "run_id")
    uri = resolve_tracking_uri(tracking_uri or frame.attrs.get("tracking_uri"))
    with reading_store(uri):
        return _load_curves(frame, metric, uri, threads, missing_ok)


def _load_curves(
    frame: pd.DataFrame, metric: str, uri: str, threads: int, missing_ok: bool
) -> pd.DataFrame:
    client = open_store(uri)
    ids = list(dict.fromkeys(frame["run_id"]))

    def read(run_id: str, name: str) -> list[Any]:
        return mlflow_call(
            uri, f"reading {name!r} of run {run_id}", client.get_metric_history, run_id, name
        )

    def history(run_id: str) -> list[tuple[str, int, float, int]]:
        metrics = read(run_id, metric)
        legacy = LEGACY_NAMES.get(metric)
        if not metrics and legacy:  # an old run: validation points, then the test score
            metrics = sorted(read(run_id, legacy), key=lambda m: (m.step, m.timestamp))[:-1]
        return [(run_id, m.step, m.value, m.timestamp) for m in metrics]

    remote = not uri.startswith(("sqlite:", "file:", "/"))
    if remote and len(ids) > 1:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            parts = list(pool.map(history, ids))
    else:
        parts = [history(run_id) for run_id in ids]
    values = [row for part in parts for row in part]
    without = [run_id for run_id, part in zip(ids, parts, strict=True) if not part]
    if without:  # a run id not in the store, or a misspelt metric, would just give no rows
        exempt = missing_ok or bool(values) or metric == CURVE_METRIC
        _check_curve_inputs(client, uri, without, len(ids), metric, check_metric=not exempt)
    curves = pd.DataFrame(values, columns=["run_id", "step", "value", "timestamp"])
    curves["step"] = curves["step"].astype("int64")
    curves["value"] = curves["value"].astype(float)
    curves["timestamp"] = pd.to_datetime(curves["timestamp"], unit="ms", utc=True)
    groups = [c for c in GROUP_PARAMS if c in frame.columns]
    if groups:
        lookup = frame.drop_duplicates("run_id").set_index("run_id")[groups]
        curves = curves.join(lookup, on="run_id")
    curves = curves.sort_values(["run_id", "step", "timestamp"], kind="stable")
    return curves[["run_id", *groups, "step", "value", "timestamp"]].reset_index(drop=True)


def _check_curve_inputs(
    client: MlflowClient,
    uri: str,
    run_ids: list[str],
    given: int,
    metric: str,
    *,
    check_metric: bool,
) -> None:
    """A :class:`UserError` for ``run_ids`` (those of the ``given`` runs without a point of
    ``metric``) that the store does not have; with ``check_metric``, also when none of them
    logged ``metric`` at all."""
    from rlbench.cli import did_you_mean
    from rlbench.tracking.redaction import display_uri

    found = {run_id: _run_or_none(client, uri, run_id) for run_id in run_ids}
    unknown = [run_id for run_id, run in found.items() if run is None]
    if unknown:
        shown = ", ".join(repr(r) for r in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise UserError(
            f"{len(unknown)} of the {given} run ids given to load_curves are not runs "
            f"of the MLflow store {display_uri(uri)}: {shown}; give the run_id column of "
            "load_runs() (or its frame) on that store"
        )
    names = sorted({name for run in found.values() if run for name in run.data.metrics})
    legacy = LEGACY_NAMES.get(metric)
    if not check_metric or metric in names or (legacy is not None and legacy in names):
        return
    raise UserError(
        f"metric={metric!r} was logged by none of the {len(run_ids)} runs"
        f"{did_you_mean(metric, names)}; their metrics: "
        f"{', '.join(names[:12]) or 'none'}{', ...' if len(names) > 12 else ''}"
    )


def _run_or_none(client: MlflowClient, uri: str, run_id: str) -> Any:
    """Run ``run_id`` of the store, or None when the store has no such run (or the id is not
    one MLflow accepts); other failures as :func:`mlflow_call` says them."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_call(uri, f"reading run {run_id}", client.get_run, run_id)
    except UserError as err:
        cause = err.__context__
        if isinstance(cause, MlflowException) and cause.error_code in (
            "RESOURCE_DOES_NOT_EXIST",
            "INVALID_PARAMETER_VALUE",
        ):
            return None
        raise


# --------------------------------------------------------------------------- episodes
def representative_runs(scores: pd.DataFrame) -> pd.DataFrame:
    """One run per (``env``, ``load``, ``algo``): the one whose score is closest to the cell's
    median (lowest seed, then run id, on a tie), so a picture of one run shows a typical seed
    rather than the luckiest. ``scores`` is a :func:`score_table` frame; the result has its
    columns, sorted by ``env``, ``load``, ``algo``."""
    cell = ["env", "load", "algo"]
    missing = [c for c in [*cell, "run_id", "seed", "score"] if c not in scores.columns]
    if missing:
        raise UserError(f"the runs frame lacks column(s) {missing}; use score_table(load_runs())")
    distance = (scores["score"] - scores.groupby(cell)["score"].transform("median")).abs()
    ranked = scores.assign(_d=distance).sort_values([*cell, "_d", "seed", "run_id"])
    return ranked.drop_duplicates(cell).drop(columns="_d").reset_index(drop=True)


def load_trajectories(
    runs: pd.DataFrame,
    tracking_uri: str | None = None,
    *,
    representative: bool = True,
    artifact: str = TRAJECTORY_ARTIFACT,
) -> pd.DataFrame:
    """The first final-evaluation episode of runs, step by step, long: one row per (run, step).

    ``runs`` is a :func:`score_table` frame (a :func:`load_runs` frame is reduced with it
    first); with ``representative``, only :func:`representative_runs` of it, one per
    (env, load, algo). Columns: ``run_id``, ``env``, ``load``, ``algo``, ``seed``, then the
    artifact's: ``step``, ``action``, ``reward`` and the environment's ``info`` entries
    (autoscaling: ``influx``, ``capacity``, ``instances``, ``queue``, ``cost``, ...; columns
    another environment lacks are NaN). Runs that logged no such artifact are left out and
    their ids listed in ``attrs["missing"]``.
    """
    if "status" in runs.columns:
        runs = score_table(runs)
    chosen = representative_runs(runs) if representative else runs
    uri = resolve_tracking_uri(tracking_uri or runs.attrs.get("tracking_uri"))
    with reading_store(uri):
        return _load_trajectories(chosen, uri, artifact)


def _load_trajectories(chosen: pd.DataFrame, uri: str, artifact: str) -> pd.DataFrame:
    from mlflow.exceptions import MlflowException

    client = open_store(uri)
    keys = [c for c in ("run_id", *GROUP_PARAMS) if c in chosen.columns]
    parts, missing = [], []
    with tempfile.TemporaryDirectory(prefix="rlbench-trajectories-") as tmp:
        for row in chosen[keys].drop_duplicates("run_id").itertuples(index=False):
            dst = Path(tmp) / row.run_id
            dst.mkdir()
            try:
                episode = pd.read_csv(client.download_artifacts(row.run_id, artifact, str(dst)))
            except (
                MlflowException,
                OSError,
                UnicodeDecodeError,  # a damaged file: listed as missing, like a torn one
                pd.errors.ParserError,
                pd.errors.EmptyDataError,
            ):
                missing.append(row.run_id)
                continue
            episode = episode.drop(columns=[c for c in keys if c in episode])
            parts.append(episode.assign(**dict(zip(keys, row, strict=True)))[[*keys, *episode]])
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=keys)
    frame.attrs["missing"] = missing
    return frame


# --------------------------------------------------------------------------- Optuna
def load_study(
    name: str | None = None, storage: str | None = None
) -> tuple[optuna.Study, pd.DataFrame]:
    """The Optuna study ``name`` (default: the one started last) and its trials as a frame.

    ``storage`` defaults to the sweeper's ``sqlite:///outputs/optuna.db``. The frame is
    ``study.trials_dataframe()``: trial parameters are the ``params_<name>`` columns, the
    objective ``value`` (``values_<i>`` for several).
    """
    import optuna

    from rlbench.tracking.databases import server_message, sql_backend, with_driver
    from rlbench.tracking.redaction import display_uri

    storage = storage or DEFAULT_STORAGE
    path = _sqlite_file(storage)
    if path is not None:
        if not path.is_file():
            raise UserError(
                f"no Optuna storage at {path}: run a sweep first (rlbench-train -m search=...)"
            )
        _require_optuna_tables(path)
    elif sql_backend(storage) is not None:
        _require_optuna_database(storage)
    storage = with_driver(storage)
    shown = display_uri(storage)
    try:
        summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    except Exception as err:  # SQLAlchemy / connection errors have no common base we import
        reason = server_message(err, storage) or display_uri(first_line(err))
        raise UserError(f"cannot open the Optuna storage {shown}: {reason}") from None
    if name is None:
        if not summaries:
            raise UserError(f"no Optuna study in {shown}: run a sweep first")
        earliest = dt.datetime.min
        newest = max(summaries, key=lambda s: (s.datetime_start or earliest, s.study_name))
        name = newest.study_name
    names = {s.study_name for s in summaries}
    if name not in names:
        raise UserError(
            f"no Optuna study {name!r} in {shown} (studies there: "
            f"{', '.join(sorted(names)) or 'none'})"
        )
    study = optuna.load_study(study_name=name, storage=storage)
    frame = study.trials_dataframe()
    # a study with metric names (the sweeper sets them) has value_<name> columns: keep the
    # documented value / values_<i>
    names = study.metric_names or []
    if len(names) == 1:
        frame = frame.rename(columns={f"value_{names[0]}": "value"})
    else:
        frame = frame.rename(columns={f"values_{n}": f"values_{i}" for i, n in enumerate(names)})
    return study, frame


def _sqlite_file(storage: str) -> Path | None:
    """The database file of a SQLite storage URL in any of SQLAlchemy's spellings
    (``sqlite:///``, ``sqlite+pysqlite:///``); None for other databases and in-memory ones."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(storage)
    except Exception:  # not a URL: Optuna says so below
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def _require_optuna_tables(path: Path) -> None:
    """Optuna creates its tables in any database it opens: a reader must not (an empty file,
    another program's database, the MLflow store)."""
    from rlbench.tracking.store import tables_of

    tables, why = tables_of(path)
    if "studies" not in tables:
        raise UserError(
            f"{path} is not an Optuna storage ({why or 'no studies table'}; it was left "
            "untouched): name the sweep's storage, e.g. sqlite:///outputs/optuna.db"
        )


def _require_optuna_database(storage: str) -> None:
    """As :func:`_require_optuna_tables`, for a server database (PostgreSQL, MySQL, ...): its
    catalogue is read, nothing is created."""
    from rlbench.tracking.databases import database_tables, table_list
    from rlbench.tracking.redaction import display_uri

    tables = database_tables(storage, "the Optuna storage")
    shown = display_uri(storage)
    if not tables:
        raise UserError(
            f"no Optuna storage at {shown} (an empty database; it was left untouched): run a "
            "sweep first (rlbench-train -m search=... hydra.sweeper.storage=<this URL>)"
        )
    if "studies" not in tables:
        raise UserError(
            f"{shown} is not an Optuna storage (its tables: {table_list(tables)}; it was left "
            "untouched): name the sweep's storage (its hydra.sweeper.storage)"
        )


def trial_overrides(trial: optuna.trial.FrozenTrial, *, params: bool = True) -> list[str]:
    """The ``rlbench-train`` overrides that reproduce ``trial`` of one of rlbench's sweeps.

    First the sweep's fixed overrides (its command line without the searched keys, kept by the
    sweeper as the trial's ``fixed_overrides`` attribute), then, with ``params``, the trial's
    sampled values. Without ``params`` they give the configuration the search varied: the
    searched keys at their defaults in that setting. :func:`compose_train_config` turns them
    into the config the job saw; drop ``search=...`` to train it outside the sweep.
    """
    fixed = trial.user_attrs.get(FIXED_OVERRIDES_ATTR)
    if fixed is None:
        raise UserError(
            f"trial {trial.number} has no {FIXED_OVERRIDES_ATTR!r} attribute: it was not run by "
            "rlbench's sweeper (rlbench-train -m search=...)"
        )
    out = [str(o) for o in fixed]
    if params:
        for key, value in trial.params.items():
            # the sweeper stores list and dict choices as their override text, e.g. "[64,64]"
            structured = isinstance(value, str) and value[:1] in ("[", "{")
            out.append(f"{key}={value if structured else override_value(value)}")
    return out


def retrain_overrides(trial: optuna.trial.FrozenTrial, *, params: bool = True) -> list[str]:
    """Overrides that train ``trial``'s configuration as ordinary runs, outside the sweep.

    :func:`trial_overrides` without ``search=...``, plus the config-group choices the search
    preset made (``algo=ppo`` for ``search=ppo``), so ``rlbench-train -m <these> seed=0,1,2``
    trains exactly the trial's configuration on new seeds. A :class:`UserError` if the two do
    not compose to the same config (a preset that sets more than groups and ``hydra.*``).
    """
    overrides = trial_overrides(trial, params=params)
    kept = [o for o in overrides if _override_key(o) != "search"]
    if len(kept) == len(overrides):
        return overrides
    swept = compose_train_config(overrides, hydra=True)
    # the groups without the preset, from the fixed overrides only: the trial's values may not
    # fit the default algorithm (algo.n_steps on threshold)
    fixed = [o for o in trial_overrides(trial, params=False) if _override_key(o) != "search"]
    plain = compose_train_config(fixed, hydra=True).hydra.runtime.choices
    groups = [
        f"{group}={choice}"
        for group, choice in swept.hydra.runtime.choices.items()
        if choice is not None
        and group != "search"
        and not group.startswith("hydra/")
        and plain.get(group) != choice
    ]
    out = [*groups, *kept]
    if _job_config(compose_train_config(out)) != _job_config(swept):
        raise UserError(
            f"the search preset of trial {trial.number} sets more than config groups: train "
            f"{' '.join(overrides)} by hand"
        )
    return out


def _override_key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def _job_config(cfg: DictConfig) -> dict[str, Any]:
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    return container


def compose_train_config(overrides: Sequence[str] = (), *, hydra: bool = False) -> DictConfig:
    """``rlbench-train``'s config for ``overrides``, composed as a run of them would see it
    (``conf/train.yaml``; with ``hydra``, also the ``hydra`` node, whose ``runtime.choices``
    names the option picked in each config group). Bad overrides raise :class:`UserError`."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(CONF_DIR, version_base="1.3", job_name="rlbench-analysis"):
            return compose("train", overrides=list(overrides), return_hydra_config=hydra)
    except (HydraException, OmegaConfBaseException) as err:
        what = " ".join(overrides) or "no overrides"
        raise UserError(f"cannot compose the config for {what}: {first_line(err)}") from None


# --------------------------------------------------------------------------- statistics
def compare(
    frame: pd.DataFrame, by: Sequence[str] = ("env", "load"), **kwargs: Any
) -> pd.DataFrame:
    """The report's comparison table (:func:`rlbench.results.stats.compare`) for a runs frame.

    ``frame`` needs ``env``, ``load``, ``algo``, ``seed``, ``score``, one row per seed; a
    :func:`load_runs` frame is reduced with :func:`score_table` first (without sweep trials).
    ``by=("env", "load")`` ranks per load pattern, ``by=("env",)`` across load patterns on
    normalised scores. Keyword arguments (``reps``, ``seed``, ``baseline``, ``min_seeds``, ...)
    go to the statistics unchanged.
    """
    from rlbench.results.stats import compare as _compare

    by = [by] if isinstance(by, str) else list(by)  # by="env" is one column, not three
    return _compare(_scores(frame), by=by, **kwargs)


def outliers(frame: pd.DataFrame, **kwargs: Any) -> pd.DataFrame:
    """The report's outlier runs (:func:`rlbench.results.stats.outlier_runs`): seeds far from
    their algorithm's median on their load pattern, worst first. ``frame`` as for
    :func:`compare`; keyword arguments (``z``, ``rel``, ``min_runs``) go to the statistics."""
    from rlbench.results.stats import outlier_runs

    return outlier_runs(_scores(frame), **kwargs)


def _scores(frame: pd.DataFrame) -> pd.DataFrame:
    """A :func:`load_runs` frame (it has ``status``) reduced by :func:`score_table` as the
    report does (a sweep's trials try other settings: they are not seeds of one algorithm); a
    score frame as it is."""
    _require_frame(frame, "a load_runs() or score_table() frame")
    return score_table(frame, sweep_trials=False) if "status" in frame.columns else frame


def _require_frame(frame: Any, what: str, column: str | None = None) -> None:
    """``UserError`` for a value that is not the frame a function takes (a notebook's mix-up)."""
    if not isinstance(frame, pd.DataFrame):
        raise UserError(f"expected {what}, got {type(frame).__name__}")
    if column is not None and column not in frame.columns:
        raise UserError(f"expected {what} (with a {column!r} column); it has {list(frame.columns)}")
