"""Finished runs → statistics → figures → ``report.md``, ``report.html``, ``scores.csv``.

:func:`build_report` reads the runs back from MLflow (:mod:`rlbench.results.analysis`), compares the
algorithms per load pattern and overall with :mod:`rlbench.results.stats`, draws the figures with
:mod:`rlbench.results.plots`, and writes the report into a temporary folder that replaces
``output_dir`` only once everything is written (and logged to an MLflow run tagged
``rlbench.kind = report``), so a failure never leaves half a report. The first lines of the
report name the winner per load pattern and overall, with intervals and every tie.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from rlbench import cli
from rlbench.errors import UserError, first_line
from rlbench.results import plots, stats
from rlbench.results.analysis import (
    BEST_SUFFIX,
    invalid_seeds,
    load_curves,
    load_runs,
    load_trajectories,
    representative_runs,
    score_table,
)
from rlbench.results.document import Document
from rlbench.results.drawing import Drawing, draw_all
from rlbench.results.first_screen import (
    degenerate_note,
    interval,
    names,
    summary_table,
    task_label,
    verdict,
)
from rlbench.results.progress import phase, warn
from rlbench.tracking import links, schema
from rlbench.tracking.links import number
from rlbench.tracking.redaction import mask_passwords
from rlbench.tracking.schema import SCORE_METRIC, TRAJECTORY_ARTIFACT

if TYPE_CHECKING:
    from rlbench.envs.base import Core

log = logging.getLogger(__name__)

DECISION_COLUMNS = ("step", "influx", "capacity", "instances", "queue")
# score_table columns that are not an environment aggregate
NOT_OPS = {
    "run_id",
    "run_name",
    "env",
    "load",
    "algo",
    "seed",
    "score",
    schema.STD_RETURN,
    schema.MEAN_LENGTH,
}


@dataclass
class ReportSettings:
    """What to compare and how; the fields of ``conf/report.yaml``."""

    experiment: str = "rlbench"
    filter: str | None = None
    name: str = "rlbench"
    output_dir: str | Path = "outputs/reports/rlbench"
    tracking_uri: str | None = None
    metric: str = SCORE_METRIC
    direction: str = "maximize"
    baseline: str = "random"
    min_seeds: int = 3
    reps: int = stats.DEFAULT_REPS
    confidence: float = 0.95
    seed: int = 0
    log_to_mlflow: bool = True
    ui_url: str | None = None  # MLflow's UI, for links (links.ui_url: None picks the default)

    def check(self) -> None:
        if self.direction not in ("maximize", "minimize"):
            raise UserError(f"direction must be maximize or minimize, got {self.direction!r}")
        if int(self.min_seeds) < 1:
            raise UserError(f"min_seeds must be an integer >= 1, got {self.min_seeds}")
        if int(self.seed) < 0:
            raise UserError(f"seed must be an integer >= 0, got {self.seed}")
        if int(self.reps) > 1_000_000:
            raise UserError(f"bootstrap.reps must be at most 1000000, got {self.reps}")
        if int(self.reps) < 100:
            raise UserError(f"bootstrap.reps must be at least 100, got {self.reps}")
        if not 0.5 < float(self.confidence) < 1.0:
            raise UserError(f"bootstrap.confidence must be in (0.5, 1), got {self.confidence}")
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", str(self.name)):
            raise UserError(
                f"name={self.name!r}: use letters, digits, '_', '-' and '.' only, starting with "
                "a letter, digit or '_'"
            )
        _check_output_dir(Path(self.output_dir))


#: what a report folder holds (report.md, report.html, scores.csv, figures): a folder with
#: report.md and nothing else may be replaced by a report
REPORT_SUFFIXES = frozenset({".md", ".html", ".csv", ".png", ".svg"})
REPORT_MANIFEST = ".rlbench-report.json"  # the names of the files a report wrote


def _report_manifest(folder: Path) -> set[str] | None:
    """The files the report in ``folder`` wrote (its manifest), or None without one."""
    try:
        names = json.loads((folder / REPORT_MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return set(names) if isinstance(names, list) else None


def _check_output_dir(final: Path) -> None:
    """A report replaces its folder whole, so ``output_dir`` must be new, empty or an earlier
    report: never a file, a store or someone's documents (``output_dir=outputs``)."""
    key = f"output_dir={final}"
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise UserError(f"{key} is not a folder: a report is a folder of its own; choose a new one")
    if final.is_dir():
        try:
            entries = sorted(entry.name for entry in final.iterdir())
        except OSError as err:
            raise UserError(f"{key}: cannot read it ({err.strerror or err})") from None
        written = _report_manifest(final)
        if written is not None:  # the files that report wrote, and nothing else
            foreign = [e for e in entries if e not in written and e != REPORT_MANIFEST]
        else:  # a report from before the manifest: report.md and files of a report's kinds
            foreign = [
                e for e in entries
                if not (final / e).is_file() or Path(e).suffix not in REPORT_SUFFIXES
            ]  # fmt: skip
            if entries and not (final / schema.REPORT_FILE).is_file():
                foreign = foreign or entries
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise UserError(
                f"{key} holds files that are not an rlbench report ({shown}), and a report "
                "replaces its folder whole: choose a new or empty folder, e.g. "
                "output_dir=outputs/reports/<name>"
            )
    existing = cli.nearest_existing(final.parent)  # not made: nothing is written before the runs
    if not existing.is_dir():
        raise UserError(f"{key}: cannot create a folder under {existing}, a file")
    if not os.access(existing, os.W_OK):
        raise UserError(f"{key}: {existing} is not writable: choose another output_dir")


@dataclass
class ReportData:
    """Everything read from MLflow: the comparable runs and what was left out (and why)."""

    runs: pd.DataFrame
    scores: pd.DataFrame
    excluded: dict[str, int]
    trajectories: dict[tuple[str, str], dict[str, pd.DataFrame]] = field(default_factory=dict)
    missing_trajectories: list[str] = field(default_factory=list)
    registered: list[Any] = field(default_factory=list)  # registry versions made from these runs


@dataclass
class Analysis:
    """The statistics tables the report shows."""

    per_load: pd.DataFrame
    poi_per_load: pd.DataFrame
    overall: pd.DataFrame | None
    poi_overall: pd.DataFrame | None
    profiles: pd.DataFrame | None
    overall_note: str | None
    outliers: pd.DataFrame  # runs far from their algorithm's median (stats.outlier_runs)


# --------------------------------------------------------------------------- read
def gather(settings: ReportSettings) -> ReportData:
    """The runs to compare, or a :class:`UserError` saying why there are none."""
    where = f"experiment {settings.experiment!r}" + (
        f" with filter {settings.filter!r}" if settings.filter else ""
    )
    runs = load_runs(
        settings.experiment, settings.filter, settings.tracking_uri, metric=settings.metric
    )
    bad_seeds = invalid_seeds(runs)
    for run in bad_seeds.itertuples(index=False):
        warn(
            f"skipping run {run.run_id} ({run.run_name}): its seed {run.seed} is not an integer "
            "in 0..2**63-1"
        )
    if len(bad_seeds):
        attrs = runs.attrs
        runs = runs[~runs["run_id"].isin(bad_seeds["run_id"])].reset_index(drop=True)
        runs.attrs = attrs
    finished = runs[runs["status"] == "FINISHED"]
    if finished.empty:
        states = runs["status"].value_counts().to_dict() if len(runs) else {}
        seen = f" (runs there: {_counts(states)})" if states else ""
        raise UserError(f"{where} has no finished training runs{seen}")
    if finished["score"].isna().all():
        names = sorted({c.removeprefix("metrics.") for c in finished if c.startswith("metrics.")})
        raise UserError(
            f"none of the {len(finished)} finished runs of {where} logged the metric "
            f"{settings.metric!r} (metrics they have: {', '.join(names) or 'none'})"
        )
    scores = score_table(runs, sweep_trials=False)  # a trial is not a seed
    if scores.empty:
        raise UserError(f"no run of {where} can be compared (all pruned or without algo.name)")
    if settings.direction == "minimize":
        scores["score"] = -scores["score"]
    excluded = _excluded(runs, scores, settings.metric)
    if len(bad_seeds):
        excluded["seed outside 0..2**63-1"] = len(bad_seeds)
    data = ReportData(runs=runs, scores=scores, excluded=excluded)
    _gather_trajectories(data, settings)
    data.registered = _registered(scores, runs.attrs.get("tracking_uri"))
    return data


def _registered(scores: pd.DataFrame, tracking_uri: str | None) -> list[Any]:
    """Registered versions of the compared runs' policies; none when the registry is unread."""
    from rlbench.tracking import registry

    try:
        return registry.versions_of_runs(scores["run_id"], tracking_uri)
    except Exception as err:  # a report is not lost over the registry
        log.warning("could not read the model registry: %s", first_line(err))
        return []


def _excluded(runs: pd.DataFrame, scores: pd.DataFrame, metric: str) -> dict[str, int]:
    """How many runs :func:`~rlbench.analysis.score_table` left out, by reason."""
    finished = runs["status"] == "FINISHED"
    scored = finished & runs["score"].notna()
    pruned = runs.get(f"tags.{schema.PRUNED_TAG}", pd.Series("", index=runs.index))
    pruned = pruned.fillna("") == "true"
    named = scored & ~pruned & runs["algo"].notna()
    role = runs.get(f"tags.{schema.SWEEP_ROLE_TAG}", pd.Series("", index=runs.index))
    parent = role.fillna("") == schema.SWEEP_PARENT_ROLE  # trains nothing: not a missing score
    counts = {
        "not finished": int((~finished).sum()),
        "sweep parent runs": int((finished & runs["score"].isna() & parent).sum()),
        f"without {metric}": int((finished & runs["score"].isna() & ~parent).sum()),
        "pruned": int((scored & pruned).sum()),
        "without algo.name": int((scored & ~pruned & runs["algo"].isna()).sum()),
    }
    left_out = scores.attrs.get("left_out", {})
    counts |= left_out
    # the rest: a seed outside 0..2**63-1 (warned about apart) or a score that is not finite
    counts["with a seed out of range or a score that is not finite"] = (
        int(named.sum()) - len(scores) - sum(left_out.values())
    )
    return {reason: n for reason, n in counts.items() if n}


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def env_cores(data: ReportData) -> dict[str, type[Core] | None]:
    """Each compared environment's numpy core, which says what its aggregates and return mean
    (``info_units``, ``return_meaning``): found by the ``env.id`` its runs logged, else by its
    ``conf/env/<name>.yaml``; None for an environment rlbench does not implement (a gymnasium
    id such as CartPole-v1)."""
    runs = data.runs
    ids: dict[str, str] = {}
    if {"env", "params.env.id"} <= set(runs.columns):
        logged = runs[["env", "params.env.id"]].dropna().drop_duplicates("env")
        ids = dict(zip(logged["env"].astype(str), logged["params.env.id"].astype(str), strict=True))
    envs = sorted(data.scores["env"].astype(str).unique())
    return {env: _core_class(ids.get(env) or _conf_env_id(env)) for env in envs}


def _conf_env_id(name: str) -> str | None:
    """The ``id`` of ``conf/env/<name>.yaml`` (runs logged without ``env.id``), or None."""
    from omegaconf import OmegaConf

    from rlbench.config import CONF_DIR

    path = Path(CONF_DIR) / "env" / f"{name}.yaml"
    if not re.fullmatch(r"\w+", name) or not path.is_file():
        return None
    env_id = OmegaConf.load(path).get("id")
    return str(env_id) if env_id else None


def _core_class(env_id: str | None) -> type[Core] | None:
    from rlbench.envs import ENVIRONMENTS, env_class

    return env_class(env_id).core_cls if env_id in ENVIRONMENTS else None


def draws_decisions(core: type[Core] | None) -> bool:
    """Whether the decisions panel fits an environment: it plots a load against capacity, the
    instances and the queue (autoscaling's and gym_scaling's ``render_keys``)."""
    return core is not None and set(DECISION_COLUMNS[1:]) <= set(core.render_keys)


def _gather_trajectories(data: ReportData, settings: ReportSettings) -> None:
    """One evaluation episode per (env, load, algo): the representative run's trajectory, for
    the environments a decisions panel fits (:func:`draws_decisions`)."""
    fits = [env for env, core in env_cores(data).items() if draws_decisions(core)]
    scores = data.scores[data.scores["env"].isin(fits)]
    if scores.empty:
        return
    uri = data.runs.attrs.get("tracking_uri", settings.tracking_uri)
    episodes = load_trajectories(scores, uri)
    chosen = representative_runs(scores)
    for run in chosen.itertuples(index=False):
        frame = episodes[episodes["run_id"] == run.run_id]
        if frame.empty or not set(DECISION_COLUMNS) <= set(frame.columns):
            label = f"{run.algo} on {task_label(run.env, run.load)} (run {run.run_id})"
            data.missing_trajectories.append(label)
            continue
        data.trajectories.setdefault((run.env, run.load), {})[run.algo] = frame.reset_index(
            drop=True
        )


# --------------------------------------------------------------------------- statistics
def analyse(data: ReportData, settings: ReportSettings) -> Analysis:
    """Per-load and overall comparison tables, probabilities of improvement, profiles."""
    opts = {
        "reps": int(settings.reps),
        "seed": int(settings.seed),
        "confidence": float(settings.confidence),
        "min_seeds": int(settings.min_seeds),
    }
    scores = data.scores
    per_load = stats.compare(scores, by=["env", "load"], baseline=settings.baseline, **opts)
    poi_per_load = stats.probability_of_improvement_table(scores, by=["env", "load"], **opts)
    outliers = stats.outlier_runs(scores, min_runs=OUTLIER_MIN_RUNS)
    if scores["algo"].nunique() < 2:
        note = (
            "No overall ranking: it needs two algorithms, and these runs have one "
            f"({scores['algo'].iloc[0]})."
        )
        return Analysis(per_load, poi_per_load, None, None, None, note, outliers)
    tasks = scores.groupby(["env", "load"])["algo"].agg(set)
    lacking = [
        f"{env}/{load}" for (env, load), algos in tasks.items() if settings.baseline not in algos
    ]
    if lacking:
        note = (
            f"No overall ranking: normalised scores need the baseline {settings.baseline!r} on "
            f"every load pattern, and it is missing on {', '.join(lacking)} (set baseline=<algo>)."
        )
        return Analysis(per_load, poi_per_load, None, None, None, note, outliers)
    overall = stats.compare(scores, by=["env"], baseline=settings.baseline, **opts)
    poi_overall = stats.probability_of_improvement_table(scores, by=["env"], **opts)
    profiles = stats.performance_profile(
        scores,
        by=["env"],
        baseline=settings.baseline,
        reps=opts["reps"],
        seed=opts["seed"],
        confidence=opts["confidence"],
    )
    return Analysis(per_load, poi_per_load, overall, poi_overall, profiles, None, outliers)


# --------------------------------------------------------------------------- text
def _pair_p(poi: pd.DataFrame, x: str, y: str) -> str:
    row = poi[(poi["algo_x"] == x) & (poi["algo_y"] == y)].iloc[0]
    return f"P({x}>{y}) = {row['p']:.2f} [{row['p_lo']:.2f}, {row['p_hi']:.2f}]"


MAX_TIES_LISTED = 3  # per summary line; the tables list every tie
MAX_OUTLIER_ROWS = 20  # the rest are in scores.csv
OUTLIER_MIN_RUNS = 4  # runs of an algorithm on a load pattern before one can stand out


def _tied_pairs(table: pd.DataFrame) -> list[tuple[str, str]]:
    """Pairs (better first, in rank order) that cannot be told apart."""
    order = list(table["algo"])
    tied = {
        a: set(filter(None, t.split(", ")))
        for a, t in zip(table["algo"], table["tied_with"], strict=True)
    }
    return [(x, y) for i, x in enumerate(order) for y in order[i + 1 :] if y in tied[x]]


def _listed(items: list[str]) -> str:
    more = len(items) - MAX_TIES_LISTED
    shown = "; ".join(items[:MAX_TIES_LISTED])
    return shown + (f"; and {more} more (see the tables)" if more > 0 else "")


def _winner_line(
    table: pd.DataFrame, poi: pd.DataFrame, label: str, where: str, unit: str
) -> list[str]:
    """Markdown bullet lines naming the winner of one comparison, with its interval and ties.

    ``label`` names the comparison (``spike``), ``where`` ends a tie sentence (``on spike``).
    """
    table = table.sort_values(["rank", "iqm"], ascending=[True, False])
    best = table.iloc[0]
    top = best["algo"]
    first = list(table.loc[table["rank"] == 1, "algo"])
    pairs = _tied_pairs(table)
    n_runs = int(best["n_runs"])
    score = f"IQM {unit} {interval(best)} ({n_runs} run{'' if n_runs == 1 else 's'})"
    n = len(table)
    if n == 1:
        return [f"- **{label}**: only **{top}** was run ({score}); nothing to compare it with."]
    if n > 1 and len(pairs) == n * (n - 1) // 2:
        line = f"- **{label}**: no two of the {n} algorithms can be told apart {where}"
        return [f"{line}; {_iqms(table, unit)}."]
    if len(first) == 1:
        lead = f"**{top}** wins" if not any(top in p for p in pairs) else f"**{top}** ranks first"
    else:  # a tied group: no member is crowned, each IQM is shown
        line = f"- **{label}**: {names(first)} share rank 1 (none was shown better than another)"
        lines = [f"{line}; {_iqms(table[table['rank'] == 1], unit)}."]
        behind = [f"{x} and {y} ({_pair_p(poi, x, y)})" for x, y in pairs if y not in first]
        if behind:
            lines.append("  - also not distinguishable: " + _listed(behind) + ".")
        return lines
    ties = [
        f"{x} and {y} cannot be told apart {where} ({_pair_p(poi, x, y)})"
        for x, y in pairs
        if x == top
    ]
    line = f"- **{label}**: {lead}, {score}" + ("; " + _listed(ties) if ties else "")
    lines = [line + "."]
    others = [f"{x} and {y} ({_pair_p(poi, x, y)})" for x, y in pairs if x != top]
    if others:
        lines.append("  - also not distinguishable: " + _listed(others) + ".")
    return lines


def _iqms(table: pd.DataFrame, unit: str) -> str:
    """``a -13.0 [-15, -11], b ...`` (IQM, highest first) with the unit once."""
    rows = table.sort_values("iqm", ascending=False)
    shown = [f"**{r['algo']}** {interval(r)}" for _, r in rows.head(MAX_TIES_LISTED + 1).iterrows()]
    more = len(rows) - len(shown)
    return f"IQM {unit}: " + ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def summary_lines(analysis: Analysis, settings: ReportSettings) -> list[str]:
    """The report's first lines: the winner per load pattern and overall, intervals, ties."""
    table = analysis.per_load
    many_envs = table["env"].nunique() > 1
    lines = []
    for (env, load), group in table.groupby(["env", "load"], sort=True):
        poi = analysis.poi_per_load
        poi = poi[(poi["env"] == env) & (poi["load"] == load)]
        label = task_label(env, load, many_envs)
        lines += _winner_line(group, poi, label, f"on {label}", _unit(settings))
    if analysis.overall is not None and analysis.poi_overall is not None:
        for env, group in analysis.overall.groupby("env", sort=True):
            poi = analysis.poi_overall[analysis.poi_overall["env"] == env]
            label = f"overall on {env}" if many_envs else "overall"
            lines += _winner_line(group, poi, label, label, "normalised score")
    elif analysis.overall_note:
        lines.append(f"- **overall**: {analysis.overall_note}")
    return lines


def _stats_table(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    header = ["rank", "algorithm", "IQM [95% CI]", "mean [95% CI]", "median [95% CI]", "runs",
              "shown better", "cannot be told apart from"]  # fmt: skip
    rows = [
        [str(int(r["rank"])), r["algo"], interval(r, "iqm"), interval(r, "mean"),
         interval(r, "median"), str(int(r["n_runs"])), r.get("behind") or "-",
         r["tied_with"] or "-"]
        for _, r in table.sort_values(["rank", "iqm"], ascending=[True, False]).iterrows()
    ]  # fmt: skip
    return header, rows


def _ops_table(
    scores: pd.DataFrame, order: Sequence[str], units: Mapping[str, str]
) -> tuple[list[str], list[list[str]]]:
    """Mean of every environment aggregate the runs logged (cost, like rate, recovery time...),
    each headed with what it means and its unit as the environment declares them (``units``,
    its ``info_units``, in their order); any other one by its name, after them."""
    first = [c for c in units if c in scores.columns]
    rest = sorted(c for c in scores.columns if c not in NOT_OPS and c not in first)
    cols = [c for c in [*first, *rest] if pd.api.types.is_numeric_dtype(scores[c])]
    cols = [c for c in cols if scores[c].notna().any()]
    means = scores.groupby("algo")[cols].mean()
    header = ["algorithm", *(units.get(c, c) for c in cols)]
    shown = [a for a in order if a in means.index]
    return header, [[a, *(number(means.loc[a, c]) for c in cols)] for a in shown]


def _run_link(settings: ReportSettings, data: ReportData, run_id: str) -> str:
    """The run id as a link to its page in MLflow's UI (training mode)."""
    return f"[`{run_id}`]({_ui(settings, data, run_id)})"


def _ui(settings: ReportSettings, data: ReportData, run_id: str | None = None) -> str:
    """MLflow's runs view of the compared experiment, or one run's page."""
    ui = links.ui_url(settings.ui_url, data.runs.attrs.get("tracking_uri"))
    exp_id = str(data.runs.attrs.get("experiment_id", "0"))
    return links.run_url(ui, exp_id, run_id) if run_id else links.runs_url(ui, exp_id)


# --------------------------------------------------------------------------- figures
def draw_figures(
    data: ReportData, analysis: Analysis, settings: ReportSettings, out: Path
) -> dict[str, list[Path]]:
    """Every figure of the report, by section (drawn on every core: :mod:`.drawing`)."""
    colors = plots.algo_colors(data.scores["algo"])
    planned: list[tuple[str, Drawing]] = []  # (section, drawing)

    def add(section: str, fn: Callable[..., list[Path]], *args: Any, **kwargs: Any) -> None:
        planned.append((section, Drawing(fn, (*args, out), kwargs)))

    chosen = representative_runs(data.scores)  # the runs whose episodes are drawn
    ranked = analysis.per_load.sort_values(["rank", "iqm"], ascending=[True, False])
    for (env, load), episodes in sorted(data.trajectories.items()):  # the slowest: first
        order = ranked[(ranked["env"] == env) & (ranked["load"] == load)]["algo"]
        by_rank = {a: episodes[a] for a in order if a in episodes}
        shown = chosen[(chosen["env"] == env) & (chosen["load"] == load)]
        add(
            "decisions",
            plots.plot_decisions,
            by_rank,
            load=str(load),
            env=str(env),
            colors=colors,
            scores=dict(zip(shown["algo"], shown["score"], strict=True)),
        )
    add("intervals", plots.plot_intervals, analysis.per_load, colors=colors)
    if len(analysis.poi_per_load):
        add("poi", plots.plot_probability_of_improvement, analysis.poi_per_load)
    if analysis.overall is not None:
        add("overall", plots.plot_intervals, analysis.overall, name="intervals_overall",
            colors=colors, baseline=settings.baseline)  # fmt: skip
        if analysis.poi_overall is not None and len(analysis.poi_overall):
            add("overall", plots.plot_probability_of_improvement, analysis.poi_overall,
                name="probability_of_improvement_overall")  # fmt: skip
        add("profiles", plots.plot_performance_profiles, analysis.profiles, colors=colors,
            baseline=settings.baseline)  # fmt: skip
    curve = schema.curve_metric(settings.metric)
    # runs without a history of the curve are said in words (a section's note), not an error
    tracking_uri = data.runs.attrs.get("tracking_uri")
    curves = load_curves(data.scores, curve, tracking_uri, missing_ok=True)
    if settings.direction == "minimize":
        curves["value"] = -curves["value"]
    if len(curves):
        add(
            "curves",
            plots.plot_learning_curves,
            curves,
            reps=int(settings.reps),
            seed=int(settings.seed),
            colors=colors,
            ylabel=_metric_label(settings, curve),
        )
    figures: dict[str, list[Path]] = {"intervals": [], "poi": [], "curves": [], "decisions": []}
    drawn = draw_all([drawing for _, drawing in planned])
    for (section, _), paths in zip(planned, drawn, strict=True):
        figures.setdefault(section, []).extend(paths)
    return figures


def _unit(settings: ReportSettings) -> str:
    """What a per-load score is called in the summary lines."""
    plain = settings.metric == SCORE_METRIC and settings.direction == "maximize"
    return "return" if plain else _metric_label(settings)


def _metric_label(settings: ReportSettings, curve: str | None = None) -> str:
    """How the score is named on an axis; with ``curve``, the learning curves' metric instead
    (they plot validation, not the test score)."""
    if settings.metric == SCORE_METRIC and settings.direction == "maximize":
        return plots.RETURN_LABEL if curve is None else plots.CURVE_LABEL
    sign = "minus " if settings.direction == "minimize" else ""
    return f"{sign}{curve or settings.metric}"


# --------------------------------------------------------------------------- assembly
def compose(
    data: ReportData,
    analysis: Analysis,
    settings: ReportSettings,
    figures: dict[str, list[Path]],
    report_run_id: str | None,
) -> Document:
    """The report, winners first."""
    doc = Document()
    scores = data.scores
    cores = env_cores(data)
    doc.heading(1, f"rlbench report: {settings.name}")
    returns = settings.metric == SCORE_METRIC and settings.direction == "maximize"
    unit = (
        "the run's test return: reward summed over one evaluation episode, averaged over its "
        "held-out test episodes"
        if returns
        else f"{_metric_label(settings)}, the final value of each run (higher is better)"
    )
    seeds = scores.groupby(["env", "load", "algo"]).size()
    doc.para(
        verdict(
            analysis.per_load, analysis.overall, seeds, int(settings.min_seeds),
            float(settings.confidence),
        )
    )  # fmt: skip
    doc.table(*summary_table(analysis.per_load, analysis.overall))
    doc.para(
        f"IQM over seeds [{settings.confidence:.0%} stratified bootstrap CI]. "
        f"**Bold ★**: rank 1 in that column, no algorithm was shown better. Per load pattern a "
        f"score is {unit}; overall, 0 = `{settings.baseline}`'s mean and 1 = the best mean on "
        "each pattern."
    )
    if returns:
        _return_meanings(doc, cores)
    note = degenerate_note(analysis.per_load, scores)
    if note:
        doc.para(note)
    too_few = seeds[seeds < int(settings.min_seeds)]
    if len(too_few):
        cells = ", ".join(f"{a} on {task_label(e, lo)} ({n})" for (e, lo, a), n in too_few.items())
        doc.para(
            f"**Too few seeds to tell algorithms apart**: fewer than {settings.min_seeds} runs for "
            f"{cells}; such pairs are always reported as ties. Train more seeds."
        )
    doc.toc()
    doc.heading(2, "Winners per load pattern")
    doc.lines(summary_lines(analysis, settings))

    outliers = analysis.outliers
    doc.heading(2, "What was compared")
    per_algo = scores.groupby("algo")["seed"].agg(["size", "nunique"])
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    facts = [
        f"- experiment `{settings.experiment}`"
        + (f", filter `{settings.filter}`" if settings.filter else ", no filter"),
        f"- tracking store `{mask_passwords(str(data.runs.attrs.get('tracking_uri')))}`",
        f"- {len(scores)} runs: {scores['algo'].nunique()} algorithms × "
        f"{scores.groupby(['env', 'load']).ngroups} load patterns; runs (distinct seeds) per "
        "algorithm: "
        + ", ".join(f"{a} {r['size']} ({r['nunique']})" for a, r in per_algo.iterrows()),
        *_best_entries_line(scores),
        *_code_line(data),
        f"- left out: {_counts(data.excluded)}" if data.excluded else "- left out: none",
        f"- outlier runs: {len(outliers)}"
        + (" (see [Outlier runs](#outlier-runs))" if len(outliers) else ""),
        f"- statistics: {settings.reps} bootstrap replicates, seed {settings.seed}, "
        f"two algorithms are distinguishable when a permutation test of P(X>Y) rejects "
        f"equality at {1 - settings.confidence:.0%} with ≥ {settings.min_seeds} seeds each "
        "(each pair in the tables; the first sentence's winners corrected together, Holm)",
        f"- generated {when}"
        + (f"; MLflow run {_run_link(settings, data, report_run_id)}" if report_run_id else ""),
        f"- browse these runs in MLflow: [runs view]({_ui(settings, data)}) (start the UI with "
        f"`{links.ui_command('<store>')}` when it is not running)",
        "- every run's score: `scores.csv` (one row per run)",
    ]
    doc.lines(facts)
    if data.registered:
        _registered_section(doc, data, settings)

    doc.heading(2, "Per load pattern")
    doc.para(
        "Rank: 1 + the number of algorithms shown better (a permutation test of P(X > Y) "
        "rejects equality; listed under 'shown better'), so algorithms that cannot be told "
        "apart from the best "
        f"all rank 1. Rows: rank, then IQM. Scores: {unit}."
    )
    for (env, load), group in analysis.per_load.groupby(["env", "load"], sort=True):
        doc.heading(3, task_label(env, load))
        doc.table(*_stats_table(group))
        cell = scores[(scores["env"] == env) & (scores["load"] == load)]
        units = getattr(cores.get(env), "info_units", {})
        header, rows = _ops_table(cell, list(group.sort_values("rank")["algo"]), units)
        if len(header) > 1:
            doc.para("Operations metrics of the final evaluation (mean over runs):")
            doc.table(header, rows)
    doc.image(figures["intervals"][0], "Final scores per load pattern with 95% CIs")
    largest = int(scores.groupby(["env", "load", "algo"]).size().max())
    many = scores["env"].nunique() > 1
    _outlier_section(doc, outliers, many, largest, lambda r: _run_link(settings, data, r))

    doc.heading(2, "Overall")
    if analysis.overall is not None:
        doc.para(
            f"Normalised score per load pattern: 0 = the mean of `{settings.baseline}`, 1 = the "
            "best algorithm's mean on that load pattern; pooled over load patterns with a "
            "bootstrap stratified by load pattern. (When the baseline is itself the best, 1 - "
            "worst maps the worst to -1.)"
        )
        for _, group in analysis.overall.groupby("env", sort=True):
            doc.table(*_stats_table(group))
        for path in figures["overall"]:
            doc.image(path, path.stem.replace("_", " "))
        doc.heading(3, "Performance profile")
        doc.para("Fraction of runs whose normalised score exceeds each threshold τ.")
        for path in figures["profiles"]:
            doc.image(path, "Performance profiles")
    else:
        doc.para(analysis.overall_note or "")

    doc.heading(2, "Probability of improvement")
    doc.para(
        "P(X > Y): the probability that a run of the row algorithm beats a run of the column "
        "algorithm (ties count 1/2), with its 95% CI; bold cells can be told apart from 0.5."
    )
    if figures["poi"]:
        doc.image(figures["poi"][0], "Probability of improvement per load pattern")
    else:
        doc.para(
            "None to show: it needs two algorithms on one load pattern, and every load pattern "
            "here has one."
        )

    doc.heading(2, "Learning curves")
    if figures["curves"]:
        doc.para(
            f"`{schema.curve_metric(settings.metric)}` (periodic evaluations on validation seeds) "
            "against environment steps: IQM over seeds, 95% CI band."
        )
        for path in figures["curves"]:
            doc.image(path, path.stem.replace("_", " "))
    else:
        doc.para(f"No run logged a history of `{schema.curve_metric(settings.metric)}`.")

    _decisions_section(doc, data, cores, figures["decisions"])
    _every_run_section(doc, data, settings)
    doc.heading(2, "Definitions")
    doc.lines(
        [
            "- IQM: mean of the middle 50% of runs; robust to outlier seeds.",
            "- CIs: percentile bootstrap, resampling runs within each load pattern "
            "(stratified), never across.",
            "- Ties: two algorithms tie unless a permutation test of P(X > Y) (runs relabelled "
            "within each load pattern; exact for small samples) rejects equality at "
            f"{1 - settings.confidence:.0%}. With 3 seeds against 3 no difference can be "
            "shown (the smallest p-value is 0.1). Each pair of a table is tested at that "
            "level; the first sentence's winners are corrected together (Holm).",
            "- Rank: 1 + the number of algorithms shown better; rank 1 is every algorithm "
            "nothing was shown to beat (the contenders, named together, never one of them).",
            "- Test return: reward summed over one evaluation episode on a held-out test seed; "
            f"a run's score averages its test episodes (`{settings.metric}`). Learning curves "
            "use separate validation seeds.",
            "- Statistics: `rlbench.results.stats` (rliable's definitions on numpy/scipy).",
        ]
    )
    return doc


def _return_meanings(doc: Document, cores: Mapping[str, type[Core] | None]) -> None:
    """What the return measures on each compared environment, as the environment says
    (``return_meaning``): a sentence for one, a list for several; nothing for an environment
    that does not say (a gymnasium id)."""
    said = {env: core.return_meaning for env, core in cores.items() if core and core.return_meaning}
    if len(said) == 1:
        ((env, meaning),) = said.items()
        doc.para(f"On {env} the return is {meaning}.")
    elif said:
        doc.para("What the return measures:")
        doc.lines([f"- **{env}**: {meaning}" for env, meaning in said.items()])


def _decisions_section(
    doc: Document, data: ReportData, cores: Mapping[str, type[Core] | None], paths: list[Path]
) -> None:
    """The decisions panels, described only when drawn, and the environments they do not fit."""
    doc.heading(2, "Decisions")
    if paths:
        drawn = sorted({env for env, _ in data.trajectories})
        doc.para(
            f"One evaluation episode per algorithm on {names(drawn, bold=False)} (the run "
            "closest to its median score), best ranked first: demand against capacity, running "
            "instances, queued requests."
        )
        for path in paths:
            doc.image(path, path.stem.replace("_", " "))
    if data.missing_trajectories:
        doc.para(
            f"No episode to draw (columns {', '.join(DECISION_COLUMNS)} of "
            f"`{TRAJECTORY_ARTIFACT}`) for: " + "; ".join(data.missing_trajectories)
        )
    others = [env for env, core in cores.items() if not draws_decisions(core)]
    if others:
        doc.para(
            "Decision panels plot a load against capacity, instances and queue; "
            f"{names(others, bold=False)} {'has' if len(others) == 1 else 'have'} none."
        )


def _every_run_section(doc: Document, data: ReportData, settings: ReportSettings) -> None:
    """Every compared run's score, linked to its page in MLflow: one table per load pattern,
    algorithms (best mean score first) by seeds, so a surprising cell is one click from its run."""
    scores = data.scores
    doc.heading(2, "Every run")
    doc.para(
        "Each run's score, linked to its MLflow page (curves, config, artifacts); rows: "
        "algorithms, columns: seeds. The same table is `scores.csv`, with the URLs."
    )
    for (env, load), cell in scores.groupby(["env", "load"], sort=True):
        seeds = sorted(cell["seed"].unique(), key=str)
        algos = list(cell.groupby("algo")["score"].mean().sort_values(ascending=False).index)
        rows = []
        for algo in algos:
            runs = cell[cell["algo"] == algo]
            row = [str(algo)]
            for seed in seeds:
                here = runs[runs["seed"] == seed]
                row.append(
                    " ".join(
                        f"[{number(r.score)}]({_ui(settings, data, r.run_id)})"
                        for r in here.itertuples(index=False)
                    )
                    or "-"
                )
            rows.append(row)
        doc.heading(3, f"Runs: {task_label(env, load)}")
        doc.table(["algorithm", *(f"seed {s}" for s in seeds)], rows)


def _code_line(data: ReportData) -> list[str]:
    """Which code made the compared runs: one commit, several, or uncommitted changes (whose
    code cannot be named), so a comparison mixing them says so on its first page."""
    runs = data.runs.set_index("run_id")
    commit_col, dirty_col = f"tags.{schema.GIT_COMMIT_TAG}", f"tags.{schema.GIT_DIRTY_TAG}"
    if commit_col not in runs:
        return []
    used = runs.loc[runs.index.intersection(data.scores["run_id"])]
    commits = used[commit_col].fillna("unknown").astype(str).str[:8]
    dirty = used.get(dirty_col, pd.Series("false", index=used.index)).astype(str) == "true"
    labels = commits.where(~dirty, commits + " with uncommitted changes")
    counts = labels.value_counts()
    text = ", ".join(f"{label} ({n} runs)" for label, n in counts.items())
    if len(counts) == 1 and not dirty.any():
        return [f"- code: every run at commit {text}"]
    return [
        f"- code: **mixed**: {text}; runs of other code, or of uncommitted changes, may not "
        "be comparable (filter them with `filter=\"tags.`git.commit` = '<commit>'\"`)"
    ]


def _best_entries_line(scores: pd.DataFrame) -> list[str]:
    """What an ``<algo>@best`` entry is, when the comparison has one."""
    entries = sorted(a for a in scores["algo"].unique() if str(a).endswith(BEST_SUFFIX))
    if not entries:
        return []
    names = ", ".join(f"`{a}`" for a in entries)
    return [
        f"- {names}: scored on the weights that validated best during training "
        "(`eval.policy=best`, tag `rlbench.scored_policy`), not on the last ones: a protocol "
        "of its own, so never pooled with the algorithm's runs scored on their last weights"
    ]


def _registered_section(doc: Document, data: ReportData, settings: ReportSettings) -> None:
    """Which compared runs became registered policies (``rlbench-registry``), with aliases."""
    doc.heading(2, "Registered policies")
    doc.para("Versions in MLflow's Model Registry made from these runs (`rlbench-registry list`).")
    cells = data.scores.set_index("run_id")
    rows = []
    for v in data.registered:
        run = cells.loc[v.run_id]
        rows.append(
            [
                f"`models:/{v.name}/{v.version}`",
                ", ".join(v.aliases) or "-",
                str(run["algo"]),
                task_label(run["env"], run["load"]),
                str(run["seed"]),
                _run_link(settings, data, v.run_id),
            ]
        )
    doc.table(["model", "aliases", "algo", "task", "seed", "run"], rows)


def _outlier_section(
    doc: Document,
    outliers: pd.DataFrame,
    many_envs: bool,
    largest: int,
    link: Callable[[str], str],
) -> None:
    """Runs far from their algorithm's median: a collapsed (or lucky) seed a reader should see."""
    doc.heading(2, "Outlier runs")
    if largest < OUTLIER_MIN_RUNS:
        doc.para(
            f"None to look for: telling an outlier from its algorithm's median needs at least "
            f"{OUTLIER_MIN_RUNS} runs of an algorithm on a load pattern, and these have at most "
            f"{largest}."
        )
        return
    rule = (
        "more than 5 robust standard deviations (1.4826 · MAD) and 25% of the median away from "
        "their algorithm's median on their load pattern"
    )
    if outliers.empty:
        doc.para(f"None: no run lies {rule}.")
        return
    doc.para(
        f"{len(outliers)} run(s) lie {rule}: a collapsed or lucky seed, worth a look at its "
        "learning curve in MLflow. IQM and the intervals above already account for them."
    )
    rows = [
        [
            task_label(r.env, r.load, many_envs),
            str(r.algo),
            str(r.seed),
            number(r.score),
            f"{number(r.median)} ({r.runs})",
            link(r.run_id),
        ]
        for r in outliers.head(MAX_OUTLIER_ROWS).itertuples(index=False)
    ]
    doc.table(["load pattern", "algorithm", "seed", "score", "median (runs)", "MLflow run"], rows)
    if len(outliers) > MAX_OUTLIER_ROWS:
        doc.para(f"... and {len(outliers) - MAX_OUTLIER_ROWS} more (see `scores.csv`).")


def _scores_csv(data: ReportData, path: Path, settings: ReportSettings) -> None:
    frame = data.scores.copy()
    if settings.direction == "minimize":
        frame[settings.metric] = -frame["score"]
    start = data.runs.set_index("run_id")["start_time"]
    frame["start_time"] = frame["run_id"].map(start)
    frame["mlflow_url"] = [_ui(settings, data, r) for r in frame["run_id"]]
    frame.to_csv(path, index=False)


# --------------------------------------------------------------------------- publish
def build_report(settings: ReportSettings) -> Path:
    """Build the report of ``settings`` into ``settings.output_dir``; returns ``report.md``.

    Raises :class:`UserError` (nothing written) when there is nothing to compare or the store
    cannot be read. Recording the report in MLflow (``log_to_mlflow``) is a copy: when the
    store cannot take it (read-only, full), the report is still written and a one-line
    warning says why it was not recorded. Folders left by a report killed mid-write are
    removed first (:func:`remove_leftovers`).
    """
    settings.check()
    final = Path(settings.output_dir)
    with phase(f"loading the runs of experiment {settings.experiment!r}"):
        data = gather(settings)
    log.info("comparing %d runs", len(data.scores))
    with phase(f"comparing {len(data.scores)} runs ({settings.reps} bootstrap replicates)"):
        analysis = analyse(data, settings)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(final)
    try:
        tmp, lock = _writing_folder(final)
    except OSError as err:
        raise UserError(
            f"output_dir={final}: cannot write a folder in {final.parent} "
            f"({err.strerror or err}): choose another output_dir"
        ) from None
    tracker = None
    try:
        with phase("drawing the figures"):
            figures = draw_figures(data, analysis, settings, tmp)
        if settings.log_to_mlflow:
            try:
                tracker = _start_report_run(data, settings)
            except Exception as err:  # read-only, full, or a server that refuses writes
                warn(f"{NOT_RECORDED}: {first_line(err)} {RECORD_HINT}")
        _write_report(tmp, data, analysis, settings, figures, tracker)
        if tracker is not None:
            with phase("recording the report in MLflow"):
                recorded = _record(tracker, tmp)
            tracker = None
            if not recorded:  # the report must not name a run that does not hold it
                _write_report(tmp, data, analysis, settings, figures, None)
        names = sorted(p.name for p in tmp.iterdir())  # what a later report may replace
        (tmp / REPORT_MANIFEST).write_text(json.dumps(names))
        _replace_dir(tmp, final)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if tracker is not None:
            from rlbench.tracking import end_status

            _end_quietly(tracker, *end_status(err))
        raise
    finally:
        os.close(lock)
    return final / schema.REPORT_FILE


def _write_report(
    tmp: Path,
    data: ReportData,
    analysis: Analysis,
    settings: ReportSettings,
    figures: dict[str, list[Path]],
    tracker: Any,
) -> None:
    doc = compose(data, analysis, settings, figures, tracker.run_id if tracker else None)
    (tmp / schema.REPORT_FILE).write_text(doc.markdown(), encoding="utf-8")
    html = doc.html(f"rlbench report: {settings.name}")
    (tmp / schema.REPORT_HTML_FILE).write_text(html, "utf-8")
    _scores_csv(data, tmp / schema.SCORES_FILE, settings)


NOT_RECORDED = "the report is written but not recorded in MLflow"
RECORD_HINT = "(log_to_mlflow=false skips recording)"


def _record(tracker: Any, folder: Path) -> bool:
    """Log the report's files to its run and end it FINISHED; False (with a warning, the run
    ended FAILED where the store still takes that) when the store refuses them."""
    try:
        tracker.log_artifact(folder)
        tracker.end("FINISHED")
        return True
    except Exception as err:
        reason = first_line(err)
        warn(f"{NOT_RECORDED}: logging it to run {tracker.run_id} failed ({reason}) {RECORD_HINT}")
        _end_quietly(tracker, "FAILED", reason)
        return False


def _end_quietly(tracker: Any, status: str, error: str | None = None) -> None:
    try:
        tracker.end(status, error)
    except Exception as err:  # the store that failed us may refuse this too
        log.debug("could not end the report's MLflow run: %s", first_line(err))


# --------------------------------------------------------------------------- leftovers
STALE_AFTER_S = 3600.0  # a folder this old whose writer cannot be proven alive is removed
# .NAME.tmp-<pid>-<random> (this version), .NAME.old-<pid>, .NAME.tmp-<random> (older ones)
_LEFTOVER = re.compile(
    r"\.(?P<name>.+)\.(?:tmp|old)-(?:(?P<pid>\d+)(?:-[A-Za-z0-9_]+)?|[A-Za-z0-9_]+)"
)


def _writing_folder(final: Path) -> tuple[Path, int]:
    """A new hidden folder beside ``final`` named after this process
    (``.NAME.tmp-<pid>-<random>``), locked (``flock``) for as long as this report writes it:
    :func:`remove_leftovers` of another report run never takes a folder that is locked."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would keep a shared report private
    fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return tmp, fd


def remove_leftovers(final: Path) -> list[Path]:
    """Remove the ``.NAME.tmp-*`` and ``.NAME.old-*`` folders beside ``final`` that reports
    killed mid-write left (and those of other reports in the same folder, named by a pid).

    A folder is left alone while its writer may be alive: while it is locked, or while the
    process named in it runs (and started before the folder was made), unless it is older than
    :data:`STALE_AFTER_S`. Returns the folders removed."""
    removed = []
    try:
        entries = list(final.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _LEFTOVER.fullmatch(entry.name)
        if match is None or not entry.is_dir() or entry.is_symlink():
            continue
        pid = int(match["pid"]) if match["pid"] else None
        if match["name"] != final.name and pid is None:
            continue  # another report's folder from a version that did not name its writer
        if _abandoned(entry, pid):
            shutil.rmtree(entry, ignore_errors=True)
            if not entry.exists():
                removed.append(entry)
    if removed:
        log.info("removed %d folder(s) left by reports killed mid-write", len(removed))
    return removed


def _abandoned(folder: Path, pid: int | None) -> bool:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a live report holds it
        made = os.fstat(fd).st_mtime
    finally:
        os.close(fd)
    if pid is None or time.time() - made > STALE_AFTER_S:
        return True  # unlocked, and no writer named in it (an older version) or long idle
    return not _writer_alive(pid, made)


def _writer_alive(pid: int, made: float) -> bool:
    """Whether process ``pid`` runs and started before ``made`` (a reused pid did not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    started = _process_start(pid)
    return started is None or started <= made + 1.0


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (Unix time; Linux ``/proc``), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rpartition(")")[2].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _start_report_run(data: ReportData, settings: ReportSettings) -> Any:
    """The report's own MLflow run, in the compared runs' experiment, through the tracking
    store like every other write (in this process: a report is one short job)."""
    from rlbench.tracking import make_tracker
    from rlbench.tracking.provenance import git_tags
    from rlbench.tracking.store import sqlite_path

    uri = data.runs.attrs.get("tracking_uri")
    db = sqlite_path(uri or "")
    if db is not None and not (os.access(db, os.W_OK) and os.access(db.parent, os.W_OK)):
        where = db if not os.access(db, os.W_OK) else f"the folder of {db}"
        raise UserError(f"the MLflow store is read-only (cannot write {where})")
    tracker = make_tracker(
        {
            "uri": uri,
            "experiment": settings.experiment,
            "artifact_location": None,
            "background": False,
        }
    )
    tags = {
        schema.KIND_TAG: schema.REPORT_KIND,
        schema.REPORT_NAME_TAG: settings.name,
        schema.REPORT_FILTER_TAG: settings.filter or "",
    } | git_tags()
    params = {
        "experiment": settings.experiment,
        "filter": settings.filter or "",
        "metric": settings.metric,
        "direction": settings.direction,
        "baseline": settings.baseline,
        "bootstrap.reps": settings.reps,
        "seed": settings.seed,
        "n_runs": len(data.scores),
    }
    try:
        tracker.start(run_name=f"report-{settings.name}", params=params, tags=tags)
    except BaseException:
        _end_quietly(tracker, "FAILED")
        raise
    return tracker


def _replace_dir(new: Path, final: Path) -> None:
    """Put ``new`` at ``final``; an earlier report there is removed only after the swap."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
    new.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
