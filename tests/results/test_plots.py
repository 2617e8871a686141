"""Each figure function writes a readable, non-empty PNG and keeps algorithm colours fixed."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rlbench.errors import UserError
from rlbench.results import plots
from rlbench.results.stats import compare, performance_profile, probability_of_improvement_table

ALGOS = {"ppo": -10.0, "threshold": -12.0, "random": -50.0}
LOADS = ("spike", "steady")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [
        {"env": "autoscaling", "load": load, "algo": algo, "seed": s, "score": mu + rng.normal()}
        for load in LOADS
        for algo, mu in ALGOS.items()
        for s in range(4)
    ]
    return pd.DataFrame(rows)


def assert_png(paths: list[Path], count: int = 1) -> None:
    assert len(paths) == count
    for path in paths:
        data = Path(path).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 10_000  # a drawn figure, not an empty canvas
        legible(Path(path))


def legible(path: Path) -> None:
    """No text below 9 px where the report shows the figure (at most SHOWN_WIDTH_PX wide)."""
    from PIL import Image

    image = Image.open(path)
    shown = min(1.0, plots.SHOWN_WIDTH_PX / image.width)
    smallest = float(image.info[plots.MIN_TEXT_KEY]) * shown
    assert smallest >= 9.0, (path.name, image.width, image.info[plots.MIN_TEXT_KEY])


def test_learning_curves(frame, tmp_path):
    curves = pd.DataFrame(
        [
            {**run, "run_id": f"{run['load']}-{run['algo']}-{run['seed']}", "step": step,
             "value": run["score"] * (2 - step / 4000)}
            for run in frame.to_dict("records")
            for step in range(0, 4001, 1000)
        ]
    )  # fmt: skip
    paths = plots.plot_learning_curves(curves, tmp_path, reps=100)
    assert [p.name for p in paths] == ["learning_curves_autoscaling.png"]
    assert_png(paths)


def test_interval_plots_per_load_and_overall(frame, tmp_path):
    assert_png(plots.plot_intervals(compare(frame, reps=100), tmp_path))
    overall = compare(frame, by=["env"], reps=100)
    assert_png(plots.plot_intervals(overall, tmp_path, name="intervals_overall"))
    assert {p.name for p in tmp_path.iterdir()} == {"intervals.png", "intervals_overall.png"}


@pytest.fixture
def figures(monkeypatch) -> list:
    """The figures the plot functions save (after saving: laid out as in the PNG)."""
    kept = []
    save = plots._save

    def keep(fig, out_dir, name):
        path = save(fig, out_dir, name)
        kept.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    return kept


def extents(fig, texts) -> list:
    """Where ``texts`` are drawn in ``fig``, in pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()
    return [t.get_window_extent(renderer) for t in texts]


def scores(n_algos: int, loads: tuple[str, ...]) -> pd.DataFrame:
    """``n_algos`` algorithms 10 apart, each seed of one beating every seed of the next."""
    algos = ["ppo", "dqn", "threshold", "random", "qlearning", "static", "a", "b"][:n_algos]
    rows = [{"env": "autoscaling", "load": load, "algo": a, "seed": s, "score": -10.0 * i + s}
            for load in loads for i, a in enumerate(algos) for s in range(4)]  # fmt: skip
    return pd.DataFrame(rows)


def test_the_interval_title_names_the_score_without_nested_brackets(frame, tmp_path, figures):
    """It read "Final scores (test return (reward summed per episode)) with ..."."""
    plots.plot_intervals(compare(frame, reps=100), tmp_path)
    title = figures[0].get_suptitle()
    assert plots.RETURN_LABEL in title
    depth = list(itertools.accumulate({"(": 1, ")": -1}.get(c, 0) for c in title))
    assert max(depth) == 1 and depth[-1] == 0, title


@pytest.mark.parametrize(("n_algos", "loads"), [(2, ("spike",)), (4, ("spike", "steady")),
                                                (8, ("spike", "steady"))])  # fmt: skip
def test_no_text_of_the_improvement_matrix_runs_into_another(n_algos, loads, tmp_path, figures):
    """With 2 algorithms the colour bar's label ran into the title; with 4 side by side the
    bold "[0.00, 0.00]" of neighbouring cells ran together."""
    from matplotlib.text import Text

    poi = probability_of_improvement_table(scores(n_algos, loads), reps=100)
    assert_png(plots.plot_probability_of_improvement(poi, tmp_path))
    (fig,) = figures
    shown = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    title = next(t for t in shown if t.get_text() == fig.get_suptitle())
    others = [t for t in shown if t is not title]
    box, *boxes = extents(fig, [title, *others])
    assert not [t.get_text() for t, b in zip(others, boxes, strict=True) if box.overlaps(b)]
    for ax in fig.axes:
        cells = extents(fig, ax.texts)
        assert len(ax.texts) in (0, n_algos * (n_algos - 1))
        for i, a in enumerate(cells):
            assert not [ax.texts[j].get_text() for j in range(i) if a.overlaps(cells[j])]


def test_performance_profiles(frame, tmp_path):
    assert_png(plots.plot_performance_profiles(performance_profile(frame, reps=100), tmp_path))


def test_probability_of_improvement_matrix(frame, tmp_path):
    poi = probability_of_improvement_table(frame, reps=100)
    assert_png(plots.plot_probability_of_improvement(poi, tmp_path))


def test_decisions_panel(tmp_path):
    t = np.arange(50)
    episode = pd.DataFrame(
        {"step": t, "influx": 2000 + 500 * np.sin(t / 8), "capacity": 87.0 * 25,
         "instances": 25, "queue": np.maximum(0, 300 * np.sin(t / 8))}
    )  # fmt: skip
    paths = plots.plot_decisions({"ppo": episode, "random": episode}, tmp_path, load="spike")
    assert [p.name for p in paths] == ["decisions_autoscaling_spike.png"]
    assert_png(paths)
    with pytest.raises(UserError, match="queue"):
        plots.plot_decisions({"ppo": episode.drop(columns="queue")}, tmp_path, load="spike")


def test_colours_are_fixed_per_algorithm_across_subsets():
    everything = plots.algo_colors(["ppo", "dqn", "random", "mine", "zeta"])
    subset = plots.algo_colors(["random", "ppo"])
    assert subset == {"random": everything["random"], "ppo": everything["ppo"]}
    assert len(set(everything.values())) == 5


def test_a_panel_of_an_env_without_load_patterns_is_titled_by_the_env_alone():
    """scheduler, recommender and self-healing have no load patterns (load "-"): their panels
    read env=scheduler, not env=scheduler, load=-."""
    assert plots._label(["env", "load"], ("scheduler", "-")) == "env=scheduler"
    assert plots._label(["env", "load"], ("autoscaling", "spike")) == "env=autoscaling, load=spike"
    assert plots._label([], ()) == "all tasks"


def test_normalised_axes_name_the_reports_baseline(frame, tmp_path, monkeypatch):
    """baseline=threshold: the profile's axis said "0 = random" all the same."""
    drawn = []
    save = plots._save

    def keep(fig, out_dir, name):
        drawn.append(fig)
        return save(fig, out_dir, name)

    monkeypatch.setattr(plots, "_save", keep)
    plots.plot_performance_profiles(
        performance_profile(frame, reps=50), tmp_path, baseline="threshold"
    )
    labels = [ax.get_xlabel() for ax in drawn[0].axes]
    assert any("0 = threshold" in label for label in labels), labels
    assert not any("random" in label for label in labels)
