"""Matplotlib pictures of an episode: one panel per quantity, shared time axis."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def episode_figure(history: Sequence[dict[str, Any]], keys: Sequence[str], title: str = ""):
    """A figure with one panel per ``key`` of the step ``history`` (a list of info dicts)."""

    from matplotlib.figure import Figure

    keys = list(keys) or sorted({k for step in history for k in step})
    width, height = 8.0, 1.6 * max(len(keys), 1)
    fig = Figure(figsize=(width, height), dpi=80)
    # fixed margins in inches (room for 6-digit tick labels, the title, the x label): constrained
    # layout measured every label and took half of the ~0.3 s each run spends on this picture
    fig.subplots_adjust(
        left=1.0 / width, right=1 - 0.2 / width, bottom=0.5 / height, top=1 - 0.35 / height,
        hspace=0.25,
    )  # fmt: skip
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    t = np.arange(1, len(history) + 1)
    for ax, key in zip(axes, keys, strict=True):
        ax.plot(t, [step.get(key, np.nan) for step in history], lw=1.2)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    if title:
        axes[0].set_title(title)
    return fig


def episode_figure_rgb(
    history: Sequence[dict[str, Any]], keys: Sequence[str], title: str = ""
) -> np.ndarray:
    """The :func:`episode_figure` rendered to an ``(H, W, 3)`` uint8 array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = episode_figure(history, keys, title)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
