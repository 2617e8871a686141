"""The report's figures, written as PNG files: each function takes a tidy frame, returns paths.

Figures are drawn on :class:`matplotlib.figure.Figure` objects (the Agg canvas), never through
``pyplot``: no global state, nothing to close, safe in a headless process or a notebook.
Every algorithm keeps one colour across all figures (:func:`algo_colors`).

Legible where shown: the report's HTML shows figures at most :data:`SHOWN_WIDTH_PX` wide, so
figures are at most :data:`MAX_WIDTH_IN` inches (never shrunk there) and no text is smaller
than :data:`MIN_FONT_PT` (12 px at :data:`DPI`). Each PNG records its smallest text in pixels
(metadata ``rlbench:min_text_px``), which the browser test checks against the width shown.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

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
RETURN_LABEL = "test return (reward summed per episode)"
CURVE_LABEL = "validation return (reward summed per episode)"
DPI = 110
SHOWN_WIDTH_PX = 1160  # the report's content width (HTML body 1200 px minus padding)
MAX_WIDTH_IN = SHOWN_WIDTH_PX / DPI  # 10.5 in: a figure is never shown smaller than drawn
MIN_FONT_PT = 8.0  # 12 px at DPI; the smallest text anywhere in a figure
DECISION_COLUMNS = 3  # algorithms side by side in a decisions figure
MIN_TEXT_KEY = "rlbench:min_text_px"  # PNG metadata: the figure's smallest text, in pixels
STYLE = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 11,
}


def normalised_label(baseline: str = "random") -> str:
    """The axis label of normalised scores: 0 is ``baseline``'s mean (the report's setting)."""
    return f"normalised score (0 = {baseline}, 1 = best mean)"


def _styled(fn: Callable[..., list[Path]]) -> Callable[..., list[Path]]:
    """Draw with :data:`STYLE`: every plot function's text at a legible size."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> list[Path]:
        import matplotlib

        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


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


def min_text_px(fig: Figure) -> float:
    """The smallest visible, non-empty text of ``fig`` in pixels at :data:`DPI`."""
    from matplotlib.text import Text

    def shown(t: Text) -> bool:
        visible = t.get_visible() and (t.axes is None or t.axes.get_visible())
        return bool(visible and t.get_text().strip())

    sizes = [t.get_fontsize() for t in fig.findobj(Text) if shown(t)]
    return min(sizes, default=MIN_FONT_PT) * DPI / 72


def _save(fig: Figure, out_dir: str | Path, name: str) -> Path:
    """Write ``fig`` as PNG, recording its smallest text (:data:`MIN_TEXT_KEY`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{_safe(name)}.png"
    metadata = {MIN_TEXT_KEY: f"{min_text_px(fig):.1f}"}
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata=metadata)
    return path


def _grid(n: int, ncols: int, size: tuple[float, float], **kwargs) -> tuple[Figure, list]:
    """``n`` panels of about ``size`` inches, ``ncols`` a row, at most :data:`MAX_WIDTH_IN`."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    width = min(size[0] * ncols, MAX_WIDTH_IN)
    height = size[1] * nrows * width / (size[0] * ncols)
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _group_cols(frame: pd.DataFrame, known: Iterable[str]) -> list[str]:
    """The grouping columns of a stats table: every column that is not one of its own."""
    return [c for c in frame.columns if c not in set(known)]


def _label(cols: Sequence[str], key: tuple) -> str:
    """A panel's title: ``env=autoscaling, load=spike``; an env without load patterns (its load
    is analysis.NO_LOAD, "-") is named alone, ``env=scheduler``, not ``load=-``."""
    shown = [(c, v) for c, v in zip(cols, key, strict=True) if not (c == "load" and v == "-")]
    return ", ".join(f"{c}={v}" for c, v in shown) or "all tasks"


def _groups(frame: pd.DataFrame, cols: list[str]) -> list[tuple[tuple, pd.DataFrame]]:
    if not cols:
        return [((), frame)]
    return [
        (k if isinstance(k, tuple) else (k,), g)
        for k, g in frame.groupby(cols, sort=True, observed=True)
    ]


def _legend(
    fig: Figure,
    colors: Mapping[str, str],
    algos: Iterable[str],
    dashed: Iterable[str] = (),
    styles: Mapping[str, str] | None = None,
) -> None:
    """One legend below the panels, each algorithm in its line style as drawn: ``styles``
    (algorithm -> matplotlib line style), else ``dashed`` algorithms dashed."""
    from matplotlib.lines import Line2D

    dashed = set(dashed)
    styles = styles or {a: "--" if a in dashed else "-" for a in colors}
    handles = [
        Line2D([], [], color=colors[a], lw=2.5, ls=styles.get(a, "-"), label=a) for a in algos
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6))


# --------------------------------------------------------------------------- learning curves
@_styled
def plot_learning_curves(
    curves: pd.DataFrame,
    out_dir: str | Path,
    *,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
    colors: Mapping[str, str] | None = None,
    ylabel: str = CURVE_LABEL,
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
        # one panel alone gets room for the figure's title and axis label beside it
        fig, axes = _grid(len(loads), 3, (3.5, 2.8) if len(loads) > 1 else (6.0, 3.6))
        levels = set()
        for ax, load in zip(axes, loads, strict=True):
            panel = env_bands[env_bands["load"] == load]
            for algo, line in panel.groupby("algo", sort=True):
                if len(line) == 1:  # an agent that does not learn: its one score as a level
                    levels.add(algo)
                    ax.axhline(line["estimate"].iloc[0], color=colors[algo], lw=1.4, ls="--")
                    ax.axhspan(
                        line["lo"].iloc[0], line["hi"].iloc[0], color=colors[algo], alpha=0.1
                    )
                    continue
                ax.plot(line["step"], line["estimate"], color=colors[algo], lw=1.8)
                ax.fill_between(line["step"], line["lo"], line["hi"], color=colors[algo], alpha=0.2)
            ax.set_title(f"load = {load}")
            ax.set_xlabel("environment steps")
            ax.grid(alpha=0.3)
        fig.supylabel(f"IQM {ylabel}")
        fig.suptitle(f"Learning curves on {env}: IQM over seeds, 95% bootstrap CI")
        _legend(fig, colors, sorted(env_bands["algo"].unique()), dashed=levels)
        paths.append(_save(fig, out_dir, f"learning_curves_{env}"))
    return paths


# --------------------------------------------------------------------------- interval plot
ZOOM_WHEN = 4.0  # zoom a panel to its contenders when all intervals span this many times theirs


def _contender_limits(group: pd.DataFrame, metric: str) -> tuple[float, float] | None:
    """x limits around the rank-1 and rank-2 algorithms' intervals, or None when every
    algorithm fits without crushing them (the far ones are then drawn at the edge)."""
    near = group[group["rank"] <= 2] if (group["rank"] <= 2).sum() >= 2 else group.head(2)
    lo, hi = near[f"{metric}_lo"].min(), near[f"{metric}_hi"].max()
    all_lo, all_hi = group[f"{metric}_lo"].min(), group[f"{metric}_hi"].max()
    span = max(hi - lo, 1e-9 * max(1.0, abs(hi)))
    if (all_hi - all_lo) <= ZOOM_WHEN * span:
        return None
    pad = 0.25 * span
    return lo - pad, hi + pad


@_styled
def plot_intervals(
    summary: pd.DataFrame,
    out_dir: str | Path,
    *,
    name: str = "intervals",
    colors: Mapping[str, str] | None = None,
    baseline: str = "random",
) -> list[Path]:
    """IQM, mean and median with 95 % CI whiskers from :func:`~rlbench.results.stats.compare`
    (``baseline``: the algorithm at 0 of normalised scores).

    One row of panels per group of the summary (per load pattern, or one row overall), algorithms
    listed best first with their rank (shared ranks mark algorithms that cannot be told apart).
    A panel whose far algorithms (a random baseline) would crush the contenders into one point
    zooms to the rank-1 and rank-2 intervals and marks the others at its edge with their value.
    """
    stat_cols = [c for m in METRICS for c in (m, f"{m}_lo", f"{m}_hi")]
    own = {"algo", "rank", "behind", "tied_with", "n_runs", "n_tasks", "normalised", "p_claim"}
    own |= set(stat_cols)
    _require(summary, ["algo", "rank", *stat_cols], "the comparison table")
    colors = dict(colors or algo_colors(summary["algo"]))
    cols = _group_cols(summary, own)
    groups = _groups(summary, cols)
    normalised = bool(summary["normalised"].any()) if "normalised" in summary else False
    unit = normalised_label(baseline) if normalised else RETURN_LABEL
    n_algos = max(len(g) for _, g in groups)
    height = (0.3 * n_algos + 1.0) * len(groups) + 0.8
    fig = Figure(figsize=(MAX_WIDTH_IN, height), layout="constrained")
    axes = fig.subplots(len(groups), len(METRICS), squeeze=False)
    for row, (key, group) in zip(axes, groups, strict=True):
        group = group.sort_values(["rank", "iqm"], ascending=[True, False])
        y = np.arange(len(group))[::-1]
        labels = [f"{r}. {a}" for r, a in zip(group["rank"], group["algo"], strict=True)]
        for ax, metric in zip(row, METRICS, strict=True):
            limits = _contender_limits(group, metric)
            for yi, (_, r) in zip(y, group.iterrows(), strict=True):
                value = r[metric]
                if limits is not None and not limits[0] <= value <= limits[1]:
                    edge = limits[0] if value < limits[0] else limits[1]
                    marker, ha = ("<", "left") if value < limits[0] else (">", "right")
                    ax.plot(edge, yi, marker=marker, color=colors[r["algo"]], ms=8, clip_on=False)
                    ax.annotate(
                        f"{value:.4g}", (edge, yi), xytext=(8 if ha == "left" else -8, 0),
                        textcoords="offset points", ha=ha, va="center", fontsize=MIN_FONT_PT,
                    )  # fmt: skip
                    continue
                err = [[value - r[f"{metric}_lo"]], [r[f"{metric}_hi"] - value]]
                ax.errorbar(value, yi, xerr=err, fmt="o", color=colors[r["algo"]], capsize=4, lw=2)
            if limits is not None:
                ax.set_xlim(*limits)
            ax.set_yticks(y, labels if metric == METRICS[0] else [""] * len(y))
            ax.set_ylim(-0.7, len(group) - 0.3)
            ax.set_title(f"{_label(cols, key)}: {METRIC_LABELS[metric]}")
            ax.set_xlabel(METRIC_LABELS[metric] + (" (zoomed to the leaders)" if limits else ""))
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.grid(axis="x", alpha=0.3)
    fig.suptitle(
        f"Final scores with 95% stratified bootstrap CIs: {unit}\n"
        "shared rank: not told apart; ◀ ▶ algorithms beyond a zoomed panel, with their value"
    )
    _legend(fig, colors, sorted(summary["algo"].unique()))
    return [_save(fig, out_dir, name)]


# --------------------------------------------------------------------------- profiles
@_styled
def plot_performance_profiles(
    profiles: pd.DataFrame,
    out_dir: str | Path,
    *,
    name: str = "performance_profiles",
    colors: Mapping[str, str] | None = None,
    baseline: str = "random",
) -> list[Path]:
    """Fraction of runs above each normalised-score threshold τ, with 95 % bands; panel per group
    (``baseline``: the algorithm at 0).

    ``profiles`` is :func:`~rlbench.results.stats.performance_profile`'s output.
    """
    _require(profiles, ["algo", "tau", "fraction", "lo", "hi"], "the profile frame")
    colors = dict(colors or algo_colors(profiles["algo"]))
    cols = _group_cols(profiles, {"algo", "tau", "fraction", "lo", "hi"})
    groups = _groups(profiles, cols)
    # curves that coincide at 1 (every run above tau) or 0 stay apart by their line style
    styles = {a: ("-", "--", ":", "-.")[i % 4] for i, a in enumerate(sorted(colors))}
    fig, axes = _grid(len(groups), 2, (5.0, 3.6))
    for ax, (key, group) in zip(axes, groups, strict=True):
        for algo, line in group.groupby("algo", sort=True):
            ax.plot(line["tau"], line["fraction"], color=colors[algo], lw=1.8, ls=styles[algo])
            ax.fill_between(line["tau"], line["lo"], line["hi"], color=colors[algo], alpha=0.2)
        moving = group[(group["fraction"] < 0.995) & (group["fraction"] > 0.005)]["tau"]
        if len(moving):  # zoom to where the curves fall: flat ends say nothing
            pad = 0.05 * max(float(moving.max() - moving.min()), 1e-9)
            ax.set_xlim(float(moving.min()) - pad, float(moving.max()) + pad)
        ax.set_title(_label(cols, key))
        ax.set_xlabel("threshold τ on the " + normalised_label(baseline))
        ax.set_ylabel("fraction of runs with score > τ")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    fig.suptitle("Performance profiles with 95% stratified bootstrap bands")
    _legend(fig, colors, sorted(profiles["algo"].unique()), styles=styles)
    return [_save(fig, out_dir, name)]


# --------------------------------------------------------------------------- P(X > Y) matrix
@_styled
def plot_probability_of_improvement(
    poi: pd.DataFrame,
    out_dir: str | Path,
    *,
    name: str = "probability_of_improvement",
) -> list[Path]:
    """Heatmap of P(row > column) per group, annotated with the value and its 95 % CI.

    ``poi`` is :func:`~rlbench.results.stats.probability_of_improvement_table`'s output. Bold
    values are distinguishable (the permutation test's verdict); rows are ordered by average P,
    best first.
    """
    own = {"algo_x", "algo_y", "p", "p_lo", "p_hi", "n_tasks", "p_value", "distinguishable"}
    _require(poi, ["algo_x", "algo_y", "p", "p_lo", "p_hi"], "the probability-of-improvement frame")
    cols = _group_cols(poi, own)
    groups = _groups(poi, cols)
    n_algos = max(len(set(g["algo_x"]) | set(g["algo_y"])) for _, g in groups)
    side = 1.0 + n_algos  # an inch a cell: room for "[0.00, 0.00]" on one line
    fig, axes = _grid(len(groups), 2, (side + 0.4, side + 1.0))  # + the colour bar below
    image = None
    cells = []  # (text, the same on three lines) of every cell
    # one row order for every panel: by P averaged over all panels, best first
    every = list(poi.groupby("algo_x")["p"].mean().sort_values(ascending=False).index)
    every += sorted(set(poi["algo_y"]) - set(every))
    for ax, (key, group) in zip(axes, groups, strict=True):
        present = set(group["algo_x"]) | set(group["algo_y"])
        order = [a for a in every if a in present]
        pos = {a: i for i, a in enumerate(order)}
        matrix = np.full((len(order), len(order)), np.nan)
        for _, r in group.iterrows():
            i, j = pos[r["algo_x"]], pos[r["algo_y"]]
            matrix[i, j] = r["p"]
            bold = bool(r.get("distinguishable", False))
            text = f"{r['p']:.2f}\n[{r['p_lo']:.2f}, {r['p_hi']:.2f}]"
            color = "white" if abs(r["p"] - 0.5) > 0.35 else "black"
            weight = "bold" if bold else "normal"
            drawn = ax.text(j, i, text, ha="center", va="center", fontsize=MIN_FONT_PT,
                            color=color, weight=weight)  # fmt: skip
            cells.append((drawn, text.replace(", ", ",\n")))
        image = ax.imshow(matrix, cmap="RdBu", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(len(order)), order, rotation=35, ha="right")
        ax.set_yticks(range(len(order)), order)
        ax.set_xlabel("algorithm Y (column)")
        ax.set_ylabel("algorithm X (row)")
        ax.set_title(_label(cols, key))
    # below the panels: a label along a short colour bar beside them ran into the title
    label = "P(X > Y): probability that a run of X beats one of Y"
    fig.colorbar(image, ax=axes, location="bottom", shrink=0.6, aspect=30, label=label)
    fig.suptitle("Probability of improvement with 95% CI (bold: told apart by a permutation test)")
    _fit_cells(fig, cells)
    return [_save(fig, out_dir, name)]


def _fit_cells(fig: Figure, cells: Sequence[tuple[Any, str]]) -> None:
    """Put every cell's interval on two lines when one cell's is wider than its cell (many
    algorithms, or panels side by side): neighbouring intervals ran together. The font stays
    :data:`MIN_FONT_PT`, the smallest legible."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not cells:
        return
    renderer = FigureCanvasAgg(fig).get_renderer()  # the canvas savefig draws PNGs on
    fig.draw_without_rendering()  # lays the figure out, so the sizes below are final

    def too_wide(text: Any) -> bool:
        cell = text.axes.get_window_extent(renderer).width / len(text.axes.get_xticks())
        return text.get_window_extent(renderer).width > 0.9 * cell

    if any(too_wide(text) for text, _ in cells):
        for text, wrapped in cells:
            text.set_text(wrapped)


# --------------------------------------------------------------------------- decisions panel
@_styled
def plot_decisions(
    trajectories: Mapping[str, pd.DataFrame],
    out_dir: str | Path,
    *,
    load: str,
    env: str = "autoscaling",
    colors: Mapping[str, str] | None = None,
    scores: Mapping[str, float] | None = None,
) -> list[Path]:
    """One evaluation episode per algorithm side by side: demand vs capacity, instances, queue.

    At most :data:`DECISION_COLUMNS` algorithms a row (more wrap below); ``scores`` (the run's
    score per algorithm) is shown in each panel's title.

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
    ncols = min(DECISION_COLUMNS, len(algos))
    blocks = math.ceil(len(algos) / ncols)
    fig = Figure(figsize=(MAX_WIDTH_IN, 5.4 * blocks + 0.6), layout="constrained")
    axes = fig.subplots(3 * blocks, ncols, squeeze=False, sharex=True, sharey="row")
    for hidden in range(len(algos), blocks * ncols):  # the last block's empty columns
        for ax in axes[3 * (hidden // ncols) : 3 * (hidden // ncols) + 3, hidden % ncols]:
            ax.set_visible(False)
    for k, algo in enumerate(algos):
        t = trajectories[algo].sort_values("step")
        block, col = divmod(k, ncols)
        top, mid, bottom = axes[3 * block : 3 * block + 3, col]
        top.plot(t["step"], t["influx"], color="black", lw=1.0)
        top.plot(t["step"], t["capacity"], color=colors[algo], lw=1.8)
        mid.step(t["step"], t["instances"], where="post", color=colors[algo], lw=1.8)
        bottom.fill_between(t["step"], 0, t["queue"], color=colors[algo], alpha=0.5, lw=0)
        bottom.plot(t["step"], t["queue"], color=colors[algo], lw=1.0)
        score = f" (score {scores[algo]:.4g})" if scores and algo in scores else ""
        top.set_title(f"{algo}{score}", color=colors[algo], weight="bold")
        bottom.set_xlabel("time step (5 min each)")
        for ax in (top, mid, bottom):
            ax.grid(alpha=0.3)
        if col == 0:
            top.set_ylabel("requests per step")
            mid.set_ylabel("running instances")
            bottom.set_ylabel("queued requests")
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color="black", lw=1.0, label="demand (requests arriving)"),
        Line2D([], [], color="grey", lw=1.8, label="capacity (algorithm's colour)"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2)
    fig.suptitle(f"Decisions on {env}, load = {load}: one evaluation episode per algorithm")
    return [_save(fig, out_dir, f"decisions_{env}_{load}")]
