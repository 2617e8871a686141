"""The report's first screen and the links it prints, on hand-made comparison tables."""

from __future__ import annotations

import pandas as pd

from rlbench.results.first_screen import degenerate_note, summary_table, verdict
from rlbench.tracking import links


def table(load: str, rows: list[tuple[str, int, float, float, float]]) -> pd.DataFrame:
    """A per-load comparison: (algo, rank, iqm, lo, hi) per row; a lone rank-1 algorithm's
    claim to beat the others has p = 0.001, the others' p = 1."""
    alone = sum(r == 1 for _, r, *_ in rows) == 1
    return pd.DataFrame(
        [{"env": "autoscaling", "load": load, "algo": a, "rank": r, "iqm": i, "iqm_lo": lo,
          "iqm_hi": hi, "p_claim": 0.001 if r == 1 and alone else 1.0}
         for a, r, i, lo, hi in rows]
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


def test_a_zero_width_interval_of_one_run_is_not_explained_as_agreeing_seeds():
    """One run per cell (rlbench-train -m env=a,b algo=x,y seed=0): the bootstrap has one value
    to draw, whatever the policy; it must not be put down to a deterministic policy."""
    per_load = pd.concat(
        [
            table("steady", [("threshold", 1, -241.3, -241.3, -241.3)]).assign(n_runs=3),
            table("spike", [("qlearning", 1, 64.5, 64.5, 64.5)]).assign(n_runs=1),
        ],
        ignore_index=True,
    )
    note = degenerate_note(per_load, pd.DataFrame({"std_return": [0.0, 1.5]}))
    assert note.startswith("**Zero-width intervals** (1: threshold on steady): a deterministic")
    assert "**Zero-width intervals of a single run** (1: qlearning on spike): one run" in note
    only_single = degenerate_note(per_load[per_load["n_runs"] == 1], pd.DataFrame())
    assert "deterministic" not in only_single and "Train more seeds" in only_single


def test_the_caveat_says_when_the_seed_count_can_never_show_a_difference():
    """3 runs against 3: the exact two-sided permutation test's smallest p-value is 2/20 = 0.1,
    so two algorithms are tied however far apart; the first screen says so (4 seeds can)."""
    three = verdict(PER_LOAD, None, pd.Series([3, 3, 3, 3]), min_seeds=3)
    assert "With 3 seeds against 3, no difference on one load pattern can be shown at 5%" in three
    assert "(the smallest p-value of the permutation test is 0.1): train 4 or more seeds." in three
    four = verdict(PER_LOAD, None, pd.Series([4, 4, 5, 4]), min_seeds=3)
    assert "can be shown" not in four
    two = verdict(PER_LOAD, None, pd.Series([2, 3, 3, 3]), min_seeds=3)
    assert "never called different" in two and "can be shown" not in two


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
    assert "no overall winner: not every algorithm ran on every load pattern" in sentence.lower()
    assert "best overall" not in sentence and "told apart overall" not in sentence


def test_the_sentences_winners_are_corrected_together():
    """Six load patterns, each with a lone rank-1 algorithm at p_claim = 0.02: uncorrected,
    the sentence named six winners (among identical algorithms half the reports named one);
    Holm over the six claims needs 0.05/6 for the first, so none is named. At p = 0.001 all are."""
    loads = ["a", "b", "c", "d", "e", "f"]

    def patterns(p_claim: float) -> pd.DataFrame:
        frames = [table(load, [("ppo", 1, -1, -2, 0), ("dqn", 2, -5, -6, -4)]) for load in loads]
        out = pd.concat(frames, ignore_index=True)
        out["p_claim"] = [p_claim if r == 1 else 1.0 for r in out["rank"]]
        return out

    seeds = pd.Series([5] * 12)
    weak = verdict(patterns(0.02), None, seeds, min_seeds=3)
    assert "clear winners" not in weak  # each still said to lead, with why it is not a win
    assert weak.startswith(
        "Ranked first alone but not shown once the 6 winner claims this "
        "sentence could make are corrected together: ppo on a, b, c, d, e and f"
    )
    strong = verdict(patterns(0.001), None, seeds, min_seeds=3)
    assert strong.startswith("Clear winners per load pattern: ppo on a, b, c, d, e and f.")


def test_a_first_overall_not_shown_after_correction_is_said_so():
    overall = pd.DataFrame(
        [{"env": "autoscaling", "algo": "ppo", "rank": 1, "iqm": 0.9, "iqm_lo": 0.8,
          "iqm_hi": 1.0, "mean": 0.9, "p_claim": 0.04},
         {"env": "autoscaling", "algo": "dqn", "rank": 2, "iqm": 0.5, "iqm_lo": 0.4,
          "iqm_hi": 0.6, "mean": 0.5, "p_claim": 1.0}]
    )  # fmt: skip
    per_load = pd.concat(
        [table(load, [("ppo", 1, -1, -2, 0), ("dqn", 1, -2, -3, -1)]) for load in ("a", "b")],
        ignore_index=True,
    )
    sentence = verdict(per_load, overall, pd.Series([5] * 4), min_seeds=3)
    # three claims (two patterns, overall): 0.04 > 0.05/3
    assert sentence.startswith("**ppo** ranks first overall but is not shown better than every")
    overall.loc[0, "p_claim"] = 0.001
    sentence = verdict(per_load, overall, pd.Series([5] * 4), min_seeds=3)
    assert sentence.startswith("**ppo** is best overall (normalised score 0.900 [0.800, 1.000]")


def test_each_env_covered_by_its_algorithms_gets_its_own_overall_verdict():
    """autoscaling compares random and x on two loads, the scheduler random and z on two: each
    env is covered, so each gets its overall verdict (the sentence used to say 'no overall
    winner' because x and z never met)."""
    per_load = pd.concat(
        [table(load, [("x", 1, -1, -2, 0), ("random", 2, -5, -6, -4)]) for load in ("a", "b")]
        + [table(load, [("z", 1, -1, -2, 0), ("random", 2, -5, -6, -4)]).assign(env="scheduler")
           for load in ("c", "d")],
        ignore_index=True,
    )  # fmt: skip
    overall = pd.DataFrame(
        [{"env": env, "algo": a, "rank": r, "iqm": i, "iqm_lo": i, "iqm_hi": i, "mean": i,
          "p_claim": 0.001 if r == 1 else 1.0}
         for env, best in (("autoscaling", "x"), ("scheduler", "z"))
         for a, r, i in ((best, 1, 1.0), ("random", 2, 0.0))]
    )  # fmt: skip
    sentence = verdict(per_load, overall, pd.Series([5] * 8), min_seeds=3)
    assert "no overall winner" not in sentence
    assert "**x** is best overall on autoscaling" in sentence
    assert "**z** is best overall on scheduler" in sentence
