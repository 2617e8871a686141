"""Episode pictures: a redrawn figure (what runs write) shows exactly what a new one shows."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from rlbench.envs.render import episode_figure, episode_figure_rgb, save_episode_figure

KEYS = ("influx", "capacity", "instances", "action")


def _episode(rng: np.random.Generator, steps: int, missing: str | None = None) -> list[dict]:
    return [
        {k: np.nan if k == missing else float(rng.normal() * 10**i) for i, k in enumerate(KEYS)}
        for _ in range(steps)
    ]


def _pixels(fig) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def test_redrawn_pictures_equal_new_ones_after_any_episode() -> None:
    rng = np.random.default_rng(0)
    # longer, shorter, a quantity never recorded, no step at all, scales that change by 1e3
    episodes = [
        _episode(rng, 288), _episode(rng, 40, missing="capacity"), _episode(rng, 0),
        _episode(rng, 3, missing="influx"), _episode(rng, 500),
    ]  # fmt: skip
    for i, history in enumerate(episodes):
        fresh = _pixels(episode_figure(history, KEYS, title=f"episode {i}"))
        assert np.array_equal(episode_figure_rgb(history, KEYS, title=f"episode {i}"), fresh), i


def test_saved_picture_is_the_episode(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    first, second = _episode(rng, 100), _episode(rng, 60)
    columns = {k: [step[k] for step in second] for k in KEYS}
    save_episode_figure({k: [s[k] for s in first] for k in KEYS}, KEYS, tmp_path / "a.png")
    path = save_episode_figure(columns, KEYS, tmp_path / "b.png", title="second")
    saved = (mpimg.imread(path)[..., :3] * 255).round().astype(np.uint8)
    assert np.array_equal(saved, _pixels(episode_figure(second, KEYS, title="second")))
