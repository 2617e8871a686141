"""The report's first screen and the links it prints, on hand-made comparison tables."""

from __future__ import annotations

import pandas as pd

from rlbench.results.first_screen import degenerate_note, summary_table, verdict
from rlbench.tracking import links


def table(load: str, rows: list[tuple[str, int, float, float, float]]) -> pd.DataFrame:
    """A per-load comparison: (algo, rank, iqm, lo, hi) per row."""
    return pd.DataFrame(
        [{"env": "autoscaling", "load": load, "algo": a, "rank": r, "iqm": i, "iqm_lo": lo,
          "iqm_hi": hi} for a, r, i, lo, hi in rows]
    )  # fmt: skip


PER_LOAD = pd.concat(
    [
        table("steady", [("threshold", 1, -241.3, -241.3, -241.3), ("ppo", 2, -250, -260, -245)]),
        table(
            "poisson",
            [
                ("qlearning", 1, -300, -974.8, -178.1),
                ("ppo", 1, -310, -330, -290),
                ("dqn", 2, -400, -420, -380),
            ],
        ),
    ],
    ignore_index=True,
)


def test_table_marks_each_columns_rank1_group_and_verdict_crowns_no_tied_member():
    header, rows = summary_table(PER_LOAD, None)
    assert header == ["algorithm", "poisson", "steady"]
    cells = {r[0]: r[1:] for r in rows}
    assert cells["qlearning"] == ["**-300.0 [-974.8, -178.1]** ★", "–"]
    assert cells["ppo"] == ["**-310.0 [-330.0, -290.0]** ★", "-250.0 [-260.0, -245.0]"]
    assert cells["dqn"][0] == "-400.0 [-420.0, -380.0]"
    seeds = pd.Series([5, 5, 5, 3])
    sentence = verdict(PER_LOAD, None, seeds, min_seeds=3)
    assert sentence.startswith("Clear winners per load pattern: threshold on steady; ")
    assert "no single winner on poisson" in sentence
    assert "qlearning" not in sentence  # the widest interval of a tied group is not a winner
    assert "Each cell rests on 3 to 5 seeds" in sentence


def test_zero_width_intervals_are_explained():
    scores = pd.DataFrame({"std_return": [0.0, 0.0, 1.5, 0.0]})
    note = degenerate_note(PER_LOAD, scores)
    assert note.startswith("**Zero-width intervals** (1: threshold on steady): a deterministic")
    assert "3 of 4 runs scored the same on every test episode" in note
    assert degenerate_note(PER_LOAD[PER_LOAD["load"] == "poisson"], scores) is None


def test_links_open_mlflow_on_the_runs_in_training_mode():
    assert links.ui_url(None, "sqlite:///outputs/mlflow.db") == "http://127.0.0.1:5000"
    assert links.ui_url(None, "http://alice:secret@host:5000/") == "http://host:5000"
    assert links.ui_url("http://ui:8080/", "http://host:5000") == "http://ui:8080"
    assert (
        links.runs_url("http://h", "7")
        == "http://h/#/experiments/7/runs?workflowType=machine_learning"
    )
    assert links.run_url("http://h", "7", "abc") == (
        "http://h/#/experiments/7/runs/abc?workflowType=machine_learning"
    )
    assert links.number(5.684e-14) == "0.000" and links.number(-241.31) == "-241.3"
    assert (
        links.scored_name("ppo-autoscaling-spike-s3", -241.31)
        == "-241.3 · ppo-autoscaling-spike-s3"
    )


def test_no_overall_winner_is_named_among_algorithms_that_never_shared_a_task():
    """threshold ran on steady only, dqn on poisson only: the overall table ranks them, but
    the first sentence must not say one beats or ties the other."""
    overall = pd.DataFrame(
        [{"algo": a, "rank": 1, "mean": m, "mean_lo": m - 0.1, "mean_hi": m + 0.1}
         for a, m in (("threshold", 0.9), ("ppo", 0.5), ("qlearning", 0.4), ("dqn", 0.2))]
    )  # fmt: skip
    sentence = verdict(PER_LOAD, overall, pd.Series([5, 5, 5, 5, 5]), min_seeds=3)
    assert "no overall winner: not every algorithm ran on every task" in sentence.lower()
    assert "best overall" not in sentence and "told apart overall" not in sentence
