"""Matplotlib pictures of an episode: one panel per quantity, shared time axis.

:func:`episode_figure` gives a new figure to keep (a notebook shows it). The pictures a run
writes (:func:`save_episode_figure`, :func:`episode_figure_rgb`) redraw one figure per panel
layout and thread instead: building the axes and their ticks was half of the ~0.15 s each
tracked run of a grid spent on its trajectory picture. The pixels are the same either way.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: zlib level of the PNGs: 1 encodes a trajectory picture in a quarter of the default's time
#: (6) for a file ~15% larger
PNG_COMPRESSION = 1
_reused = threading.local()  # figures are not thread-safe: one set per thread


def episode_figure(history: Sequence[dict[str, Any]], keys: Sequence[str], title: str = ""):
    """A new figure with one panel per ``key`` of the step ``history`` (a list of info dicts)."""
    keys = _keys(history, keys)
    fig = _empty_figure(keys)
    _draw(fig, keys, _columns(history, keys), title)
    return fig


def save_episode_figure(
    columns: Mapping[str, Sequence[float] | np.ndarray],
    keys: Sequence[str],
    path: Path,
    title: str = "",
) -> Path:
    """Write the picture of an episode given as ``columns`` (one sequence per key) to ``path``
    (PNG), redrawing this thread's figure for ``keys``."""
    keys = tuple(keys)
    fig = _figure_for(keys)
    _draw(fig, keys, columns, title)
    fig.savefig(path, pil_kwargs={"compress_level": PNG_COMPRESSION})
    return path


def episode_figure_rgb(
    history: Sequence[dict[str, Any]], keys: Sequence[str], title: str = ""
) -> np.ndarray:
    """The :func:`episode_figure` rendered to an ``(H, W, 3)`` uint8 array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    keys = _keys(history, keys)
    fig = _figure_for(keys)
    _draw(fig, keys, _columns(history, keys), title)
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _keys(history: Sequence[dict[str, Any]], keys: Sequence[str]) -> tuple[str, ...]:
    """``keys``, or every key the history recorded when none are given."""
    return tuple(keys) or tuple(sorted({k for step in history for k in step}))


def _columns(history: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, list[float]]:
    return {key: [step.get(key, np.nan) for step in history] for key in keys}


def _figure_for(keys: tuple[str, ...]):
    figures = _reused.__dict__.setdefault("figures", {})
    if keys not in figures:
        figures[keys] = _empty_figure(keys)
    return figures[keys]


def _empty_figure(keys: tuple[str, ...]):
    """The panels, labels and grid, with one empty line per panel for :func:`_draw` to fill."""
    from matplotlib.figure import Figure

    width, height = 8.0, 1.6 * max(len(keys), 1)
    fig = Figure(figsize=(width, height), dpi=80)
    # fixed margins in inches (room for 6-digit tick labels, the title, the x label): constrained
    # layout measured every label and took half of the ~0.3 s each run spent on this picture
    fig.subplots_adjust(
        left=1.0 / width, right=1 - 0.2 / width, bottom=0.5 / height, top=1 - 0.35 / height,
        hspace=0.25,
    )  # fmt: skip
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys, strict=True):
        ax.plot([], [], lw=1.2)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    # a panel without a finite value keeps these (a figure's first autoscale gives them; a
    # redrawn one would keep the last episode's)
    fig.empty_limits = axes[0].get_ylim()
    return fig


def _draw(fig, keys: tuple[str, ...], columns: Mapping[str, Any], title: str) -> None:
    """Put this episode's values into ``fig``'s lines and rescale every panel to them."""
    n = len(next(iter(columns.values()), ()))
    t = np.arange(1, n + 1)
    for ax, key in zip(fig.axes, keys, strict=True):
        values = columns.get(key)
        y = np.full(n, np.nan) if values is None else np.asarray(values, dtype=float)
        ax.lines[0].set_data(t, y)
        ax.relim()
        ax.autoscale()  # turns autoscaling back on and rescales to the new data limits
        if not np.isfinite(y).any():
            ax.set_ylim(fig.empty_limits)
    if n == 0:
        fig.axes[0].set_xlim(fig.empty_limits)  # shared by every panel
    fig.axes[0].set_title(title)
