"""The report's figures, written as PNG files: each function takes a tidy frame, returns paths.

Figures are drawn on :class:`matplotlib.figure.Figure` objects (the Agg canvas), never through
``pyplot``: no global state, nothing to close, safe in a headless process or a notebook.
Every algorithm keeps one colour across all figures (:func:`algo_colors`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rlbench.errors import UserError
from rlbench.results.stats import DEFAULT_REPS, METRICS, curve_intervals

# Fixed colours for the algorithms users type (``algo=...``), so a figure showing a subset keeps
# the colours of the full report; other names take the free colours below in sorted order.
KNOWN_COLORS: dict[str, str] = {
    "ppo": "#1f77b4",
    "dqn": "#ff7f0e",
    "qlearning": "#2ca02c",
    "threshold": "#d62728",
    "static": "#7f7f7f",
    "random": "#8c564b",
    "ppo_seed": "#aec7e8",
    "dqn_seed": "#ffbb78",
}
_FREE_COLORS = (
    "#9467bd", "#e377c2", "#bcbd22", "#17becf", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#dbdb8d", "#9edae5", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
)  # fmt: skip
METRIC_LABELS = {"iqm": "IQM", "mean": "mean", "median": "median"}
RETURN_LABEL = "mean evaluation return (reward per episode)"
NORMALISED_LABEL = "normalised score (0 = random, 1 = best mean)"
DPI = 110


def algo_colors(algos: Iterable[str]) -> dict[str, str]:
    """A colour per algorithm: fixed for known names, free colours in sorted order otherwise."""
    algos = sorted(set(algos))
    free = iter(c for c in _FREE_COLORS if c not in KNOWN_COLORS.values())
    colors = {}
    for algo in algos:
        if algo in KNOWN_COLORS:
            colors[algo] = KNOWN_COLORS[algo]
        else:
            colors[algo] = next(free, "#000000")
    return colors


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(f"{what} lacks column(s) {missing}; it has {list(frame.columns)}")
    if frame.empty:
        raise UserError(f"{what} is empty: nothing to plot")


def _safe(name: object) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "all"


def _save(fig: Figure, out_dir: str | Path, name: str) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{_safe(name)}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _grid(n: int, ncols: int, size: tuple[float, float], **kwargs) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _group_cols(frame: pd.DataFrame, known: Iterable[str]) -> list[str]:
    """The grouping columns of a stats table: every column that is not one of its own."""
    return [c for c in frame.columns if c not in set(known)]


def _label(cols: Sequence[str], key: tuple) -> str:
    return ", ".join(f"{c}={v}" for c, v in zip(cols, key, strict=True)) or "all tasks"


def _groups(frame: pd.DataFrame, cols: list[str]) -> list[tuple[tuple, pd.DataFrame]]:
    if not cols:
        return [((), frame)]
    return [
        (k if isinstance(k, tuple) else (k,), g)
        for k, g in frame.groupby(cols, sort=True, observed=True)
    ]


def _legend(fig: Figure, colors: Mapping[str, str], algos: Iterable[str]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[a], lw=2.5, label=a) for a in algos]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8))


# --------------------------------------------------------------------------- learning curves
def plot_learning_curves(
    curves: pd.DataFrame,
    out_dir: str | Path,
    *,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
    colors: Mapping[str, str] | None = None,
    ylabel: str = RETURN_LABEL,
) -> list[Path]:
    """IQM over seeds of ``value`` against ``step``, 95 % bootstrap band; a panel per load.

    ``curves``: long frame with ``run_id``, ``env``, ``load``, ``algo``, ``step``, ``value``.
    One file per environment, ``learning_curves_<env>.png``.
    """
    _require(curves, ["run_id", "env", "load", "algo", "step", "value"], "the curves frame")
    colors = dict(colors or algo_colors(curves["algo"]))
    bands = curve_intervals(curves, ("env", "load", "algo"), reps=reps, seed=seed)
    paths = []
    for (env,), env_bands in _groups(bands, ["env"]):
        loads = sorted(env_bands["load"].unique())
        fig, axes = _grid(len(loads), 3, (4.6, 3.4))
        for ax, load in zip(axes, loads, strict=True):
            panel = env_bands[env_bands["load"] == load]
            for algo, line in panel.groupby("algo", sort=True):
                if len(line) == 1:  # an agent that does not learn: its one score as a level
                    ax.axhline(line["estimate"].iloc[0], color=colors[algo], lw=1.4, ls="--")
                    ax.axhspan(
                        line["lo"].iloc[0], line["hi"].iloc[0], color=colors[algo], alpha=0.1
                    )
                    continue
                ax.plot(line["step"], line["estimate"], color=colors[algo], lw=1.8)
                ax.fill_between(line["step"], line["lo"], line["hi"], color=colors[algo], alpha=0.2)
            ax.set_title(f"load = {load}")
            ax.set_xlabel("training steps (environment steps)")
            ax.grid(alpha=0.3)
        fig.supylabel(ylabel)
        fig.suptitle(f"Learning curves on {env}: IQM over seeds with 95% bootstrap CI")
        _legend(fig, colors, sorted(env_bands["algo"].unique()))
        paths.append(_save(fig, out_dir, f"learning_curves_{env}"))
    return paths


# --------------------------------------------------------------------------- interval plot
def plot_intervals(
    summary: pd.DataFrame,
    out_dir: str | Path,
    *,
    name: str = "intervals",
    colors: Mapping[str, str] | None = None,
) -> list[Path]:
    """IQM, mean and median with 95 % CI whiskers from :func:`~rlbench.results.stats.compare`.

    One row of panels per group of the summary (per load pattern, or one row overall), algorithms
    listed best first with their rank (shared ranks mark algorithms that cannot be told apart).
    """
    stat_cols = [c for m in METRICS for c in (m, f"{m}_lo", f"{m}_hi")]
    own = {"algo", "rank", "tied_with", "n_runs", "n_tasks", "normalised", *stat_cols}
    _require(summary, ["algo", "rank", *stat_cols], "the comparison table")
    colors = dict(colors or algo_colors(summary["algo"]))
    cols = _group_cols(summary, own)
    groups = _groups(summary, cols)
    normalised = bool(summary["normalised"].any()) if "normalised" in summary else False
    n_algos = max(len(g) for _, g in groups)
    fig = Figure(figsize=(13, (0.32 * n_algos + 1.1) * len(groups) + 0.6), layout="constrained")
    axes = fig.subplots(len(groups), len(METRICS), squeeze=False)
    for row, (key, group) in zip(axes, groups, strict=True):
        group = group.sort_values(["rank", "iqm"], ascending=[True, False])
        y = np.arange(len(group))[::-1]
        labels = [f"{r}. {a}" for r, a in zip(group["rank"], group["algo"], strict=True)]
        for ax, metric in zip(row, METRICS, strict=True):
            for yi, (_, r) in zip(y, group.iterrows(), strict=True):
                err = [[r[metric] - r[f"{metric}_lo"]], [r[f"{metric}_hi"] - r[metric]]]
                ax.errorbar(
                    r[metric], yi, xerr=err, fmt="o", color=colors[r["algo"]], capsize=4, lw=2
                )
            ax.set_yticks(y, labels if metric == METRICS[0] else [""] * len(y))
            ax.set_ylim(-0.7, len(group) - 0.3)
            ax.set_title(f"{_label(cols, key)}: {METRIC_LABELS[metric]}", fontsize=10)
            ax.set_xlabel(NORMALISED_LABEL if normalised else RETURN_LABEL, fontsize=8)
            ax.grid(axis="x", alpha=0.3)
    fig.suptitle(
        "Final scores: point estimate and 95% stratified bootstrap CI "
        "(rank shared = not distinguishable)"
    )
    _legend(fig, colors, sorted(summary["algo"].unique()))
    return [_save(fig, out_dir, name)]


# --------------------------------------------------------------------------- profiles
def plot_performance_profiles(
    profiles: pd.DataFrame,
    out_dir: str | Path,
    *,
    name: str = "performance_profiles",
    colors: Mapping[str, str] | None = None,
) -> list[Path]:
    """Fraction of runs above each normalised-score threshold τ, with 95 % bands; panel per group.

    ``profiles`` is :func:`~rlbench.results.stats.performance_profile`'s output.
    """
    _require(profiles, ["algo", "tau", "fraction", "lo", "hi"], "the profile frame")
    colors = dict(colors or algo_colors(profiles["algo"]))
    cols = _group_cols(profiles, {"algo", "tau", "fraction", "lo", "hi"})
    groups = _groups(profiles, cols)
    fig, axes = _grid(len(groups), 3, (5.0, 3.6))
    for ax, (key, group) in zip(axes, groups, strict=True):
        for algo, line in group.groupby("algo", sort=True):
            ax.plot(line["tau"], line["fraction"], color=colors[algo], lw=1.8)
            ax.fill_between(line["tau"], line["lo"], line["hi"], color=colors[algo], alpha=0.2)
        ax.set_title(_label(cols, key))
        ax.set_xlabel("threshold τ on the " + NORMALISED_LABEL, fontsize=8)
        ax.set_ylabel("fraction of runs with score > τ")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    fig.suptitle("Performance profiles with 95% stratified bootstrap bands")
    _legend(fig, colors, sorted(profiles["algo"].unique()))
    return [_save(fig, out_dir, name)]


# --------------------------------------------------------------------------- P(X > Y) matrix
def plot_probability_of_improvement(
    poi: pd.DataFrame,
    out_dir: str | Path,
    *,
    name: str = "probability_of_improvement",
) -> list[Path]:
    """Heatmap of P(row > column) per group, annotated with the value and its 95 % CI.

    ``poi`` is :func:`~rlbench.results.stats.probability_of_improvement_table`'s output. Bold
    values are distinguishable (CI excludes 0.5); rows are ordered by average P, best first.
    """
    own = {"algo_x", "algo_y", "p", "p_lo", "p_hi", "n_tasks", "distinguishable"}
    _require(poi, ["algo_x", "algo_y", "p", "p_lo", "p_hi"], "the probability-of-improvement frame")
    cols = _group_cols(poi, own)
    groups = _groups(poi, cols)
    n_algos = max(len(set(g["algo_x"]) | set(g["algo_y"])) for _, g in groups)
    side = 1.0 + 0.85 * n_algos
    fig, axes = _grid(len(groups), 2, (side + 1.2, side))
    image = None
    for ax, (key, group) in zip(axes, groups, strict=True):
        order = list(group.groupby("algo_x")["p"].mean().sort_values(ascending=False).index)
        order += sorted(set(group["algo_y"]) - set(order))
        pos = {a: i for i, a in enumerate(order)}
        matrix = np.full((len(order), len(order)), np.nan)
        for _, r in group.iterrows():
            i, j = pos[r["algo_x"]], pos[r["algo_y"]]
            matrix[i, j] = r["p"]
            bold = bool(r.get("distinguishable", False))
            text = f"{r['p']:.2f}\n[{r['p_lo']:.2f}, {r['p_hi']:.2f}]"
            color = "white" if abs(r["p"] - 0.5) > 0.35 else "black"
            weight = "bold" if bold else "normal"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color, weight=weight)
        image = ax.imshow(matrix, cmap="RdBu", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(len(order)), order, rotation=35, ha="right")
        ax.set_yticks(range(len(order)), order)
        ax.set_xlabel("algorithm Y (column)")
        ax.set_ylabel("algorithm X (row)")
        ax.set_title(_label(cols, key))
    fig.colorbar(
        image, ax=axes, shrink=0.6, label="P(X > Y): probability that a run of X beats one of Y"
    )
    fig.suptitle("Probability of improvement with 95% CI (bold: distinguishable from 0.5)")
    return [_save(fig, out_dir, name)]


# --------------------------------------------------------------------------- decisions panel
def plot_decisions(
    trajectories: Mapping[str, pd.DataFrame],
    out_dir: str | Path,
    *,
    load: str,
    env: str = "autoscaling",
    colors: Mapping[str, str] | None = None,
) -> list[Path]:
    """One evaluation episode per algorithm side by side: demand vs capacity, instances, queue.

    ``trajectories`` maps an algorithm to a frame with ``step``, ``influx`` (requests arriving per
    step), ``capacity`` (requests the running instances can serve per step), ``instances`` and
    ``queue`` (requests waiting). Writes ``decisions_<env>_<load>.png``.
    """
    if not trajectories:
        raise UserError("no trajectories to plot: pass at least one algorithm's episode")
    for algo, frame in trajectories.items():
        _require(
            frame,
            ["step", "influx", "capacity", "instances", "queue"],
            f"the trajectory of {algo!r}",
        )
    algos = list(trajectories)
    colors = dict(colors or algo_colors(algos))
    fig = Figure(figsize=(3.6 * len(algos) + 0.8, 7.6), layout="constrained")
    axes = fig.subplots(3, len(algos), squeeze=False, sharex=True, sharey="row")
    for col, algo in enumerate(algos):
        t = trajectories[algo].sort_values("step")
        top, mid, bottom = axes[:, col]
        top.plot(t["step"], t["influx"], color="black", lw=1.0, label="demand (influx)")
        top.plot(t["step"], t["capacity"], color=colors[algo], lw=1.8, label="capacity")
        mid.step(t["step"], t["instances"], where="post", color=colors[algo], lw=1.8)
        bottom.fill_between(t["step"], 0, t["queue"], color=colors[algo], alpha=0.5, lw=0)
        bottom.plot(t["step"], t["queue"], color=colors[algo], lw=1.0)
        top.set_title(algo, color=colors[algo], weight="bold")
        bottom.set_xlabel("time step (5 min each)")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
        if col == 0:
            top.set_ylabel("requests per step")
            mid.set_ylabel("running instances")
            bottom.set_ylabel("queued requests")
            top.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Decisions on {env}, load = {load}: one evaluation episode per algorithm")
    return [_save(fig, out_dir, f"decisions_{env}_{load}")]
