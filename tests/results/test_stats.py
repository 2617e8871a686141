"""The comparison statistics against cases worked out by hand and against scipy's bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from rlbench.errors import UserError
from rlbench.results.stats import (
    compare,
    curve_intervals,
    holm,
    interval_estimates,
    iqm,
    normalise_scores,
    outlier_runs,
    performance_profile,
    permutation_p_value,
    probability_of_improvement,
    probability_of_improvement_table,
    rank_algorithms,
)


def runs(scores: dict[tuple[str, str], list[float]], env: str = "autoscaling") -> pd.DataFrame:
    """A tidy runs frame from {(load, algo): [score per seed]}."""
    rows = [
        {"env": env, "load": load, "algo": algo, "seed": seed, "score": float(score)}
        for (load, algo), values in scores.items()
        for seed, score in enumerate(values)
    ]
    return pd.DataFrame(rows)


def test_iqm_is_the_mean_of_the_middle_half_worked_by_hand():
    # Sorted: -50, 1, 2, 3, 7, 8, 9, 100. 25 % of 8 = 2 trimmed from each end, leaving
    # 2, 3, 7, 8, whose mean is 20 / 4 = 5 (the mean of all eight would be 10).
    assert iqm(np.array([1, 9, 2, 8, 3, 7, 100, -50])) == pytest.approx(5.0)
    # Five values: int(0.25 * 5) = 1 trimmed from each end of 1, 2, 3, 4, 10 -> (2+3+4)/3 = 3.
    assert iqm(np.array([10, 1, 4, 3, 2])) == pytest.approx(3.0)


def test_bootstrap_interval_of_two_values_worked_by_hand():
    # Resampling [0, 1] gives a mean of 0 (prob 1/4), 0.5 (1/2) or 1 (1/4); 2.5 % and 97.5 %
    # fall inside the outer quarters, so the 95 % percentile interval is [0, 1]; the estimate 0.5.
    table = interval_estimates(np.array([0.0, 1.0]), reps=2000, rng=np.random.default_rng(3))
    assert table.loc["mean"].tolist() == pytest.approx([0.5, 0.0, 1.0])


def test_bootstrap_is_stratified_by_task():
    # Task A always scores 1 and task B always 3: resampling seeds within each task cannot
    # change the mean of task means (2), so the interval collapses to [2, 2]. A bootstrap over
    # the pooled six runs would mix the tasks and give a wide interval.
    values = np.array([1.0, 1.0, 1.0, 3.0, 3.0, 3.0])
    strata = np.array(["a", "a", "a", "b", "b", "b"])
    table = interval_estimates(values, strata, reps=500, rng=np.random.default_rng(0))
    assert table.loc["mean"].tolist() == pytest.approx([2.0, 2.0, 2.0])
    assert table.loc["iqm"].tolist() == pytest.approx([2.0, 2.0, 2.0])


@pytest.mark.parametrize(
    ("metric", "statistic"),
    [("mean", np.mean), ("iqm", lambda x, axis: scipy.stats.trim_mean(x, 0.25, axis=axis))],
)
def test_single_stratum_interval_equals_scipy_bootstrap(metric, statistic):
    values = np.random.default_rng(11).normal(5.0, 2.0, size=12)
    ours = interval_estimates(values, reps=2000, rng=np.random.default_rng(7)).loc[metric]
    theirs = scipy.stats.bootstrap(
        (values,), statistic, n_resamples=2000, method="percentile", rng=np.random.default_rng(7)
    ).confidence_interval
    # Same generator, same index stream, same percentile rule: the same interval.
    assert [ours["lo"], ours["hi"]] == pytest.approx([theirs.low, theirs.high], rel=1e-12)
    # With independent generators, the two Monte Carlo intervals still agree closely.
    other = scipy.stats.bootstrap(
        (values,), statistic, n_resamples=2000, method="percentile", rng=np.random.default_rng(99)
    ).confidence_interval
    width = other.high - other.low
    assert abs(ours["lo"] - other.low) < 0.15 * width
    assert abs(ours["hi"] - other.high) < 0.15 * width


def test_probability_of_improvement_worked_by_hand():
    # [1,2,3] vs [2,2,2]: 1 loses 3 times (0), 2 ties 3 times (3 x 1/2), 3 wins 3 times (3):
    # (0 + 1.5 + 3) / 9 = 0.5.
    assert probability_of_improvement([1, 2, 3], [2, 2, 2]) == pytest.approx(0.5)
    # [3,4] vs [1,3,5]: 3 beats 1, ties 3, loses to 5 (1.5); 4 beats 1 and 3 (2): 3.5 / 6.
    assert probability_of_improvement([3, 4], [1, 3, 5]) == pytest.approx(3.5 / 6)
    u = scipy.stats.mannwhitneyu([3, 4], [1, 3, 5], alternative="greater").statistic
    assert probability_of_improvement([3, 4], [1, 3, 5]) == pytest.approx(u / 6)


def test_probability_of_improvement_table_is_complementary_and_averages_tasks():
    frame = runs(
        {
            # spike: x beats y in every pair -> 1. steady: [3,4] vs [1,3,5] -> 3.5/6 (above).
            ("spike", "x"): [10, 11, 12, 13],
            ("spike", "y"): [1, 2, 3, 4],
            ("steady", "x"): [3, 4],
            ("steady", "y"): [1, 3, 5],
            # sine: fully separated again, but two seeds each.
            ("sine", "x"): [10, 11],
            ("sine", "y"): [1, 2],
        }
    )
    per_task = probability_of_improvement_table(frame, reps=300).set_index(
        ["load", "algo_x", "algo_y"]
    )
    assert per_task.loc[("spike", "x", "y"), "p"] == pytest.approx(1.0)
    # Fully separated samples: every bootstrap replicate is 1; the permutation test: 2 of the
    # C(8, 4) = 70 splits are as extreme (x all high, or all low), p = 2/70 < 0.05.
    assert per_task.loc[("spike", "x", "y"), ["p_lo", "p_hi"]].tolist() == [1.0, 1.0]
    assert per_task.loc[("spike", "x", "y"), "p_value"] == pytest.approx(2 / 70)
    assert per_task.loc[("spike", "x", "y"), "distinguishable"]
    assert per_task.loc[("steady", "y", "x"), "p"] == pytest.approx(1 - 3.5 / 6)
    # On sine the interval is [1, 1] too, but two seeds are fewer than min_seeds=3.
    assert per_task.loc[("sine", "x", "y"), ["p_lo", "p_hi"]].tolist() == [1.0, 1.0]
    assert not per_task.loc[("sine", "x", "y"), "distinguishable"]
    overall = probability_of_improvement_table(frame, by=["env"], reps=300)
    row = overall[(overall["algo_x"] == "x") & (overall["algo_y"] == "y")].iloc[0]
    assert row["p"] == pytest.approx((1.0 + 3.5 / 6 + 1.0) / 3)
    assert row["n_tasks"] == 3


def test_three_seeds_against_three_can_never_be_told_apart():
    """Fully separated, yet 2 of C(6, 3) = 20 splits are as extreme: p = 0.1. The percentile
    bootstrap of P(X > Y) gave [1, 1] here and called the pair different."""
    frame = runs({("spike", "x"): [10, 11, 12], ("spike", "y"): [1, 2, 3]})
    row = probability_of_improvement_table(frame, reps=300).iloc[0]
    assert row["p_value"] == pytest.approx(0.1) and not row["distinguishable"]
    assert compare(frame, reps=300)["rank"].tolist() == [1, 1]


def test_identical_algorithms_are_told_apart_at_most_at_the_tests_level():
    """Two algorithms drawn from one distribution, 5 seeds, one task: the bootstrap rule told
    them apart 9% of the time (nominal 5%); the exact test's level is 8/252 = 3.2% at most."""
    rng = np.random.default_rng(7)
    told = 0
    for _ in range(300):
        a, b = rng.normal(size=5), rng.normal(size=5)
        table = probability_of_improvement_table(
            runs({("spike", "a"): list(a), ("spike", "b"): list(b)}), reps=100
        )
        told += bool(table["distinguishable"].iloc[0])
    assert told / 300 <= 0.05


def test_the_stratified_test_is_exact_or_drawn_and_both_hold_the_level():
    """Across tasks the labels are shuffled within each task: two tasks of 3 + 3 runs have
    20 * 20 splits (exact); six tasks of 5 + 5 have 252**6 (9,999 seeded draws)."""
    rng = np.random.default_rng(0)
    high, low = [np.array([10.0, 11, 12]), np.array([5.0, 6, 7])], [np.array([1.0, 2, 3])] * 2
    assert permutation_p_value(high, low, rng) == pytest.approx(2 / 400)  # both tasks extreme
    x = [rng.normal(size=5) + 3 for _ in range(6)]
    y = [rng.normal(size=5) for _ in range(6)]
    assert permutation_p_value(x, y, np.random.default_rng(1)) == pytest.approx(1 / 10_000)
    same = [
        permutation_p_value([rng.normal(size=5) for _ in range(6)],
                            [rng.normal(size=5) for _ in range(6)], rng)
        for _ in range(60)
    ]  # fmt: skip
    assert np.mean(np.array(same) <= 0.05) <= 0.12  # 5% nominal; 60 draws


def test_holm_rejects_in_order_until_one_fails():
    # m = 3: 0.01 <= 0.05/3 yes; 0.03 <= 0.05/2 no -> stop; 0.04 is not tested.
    assert holm([0.01, 0.04, 0.03], 0.05) == [True, False, False]
    assert holm([0.01, 0.02, 0.03], 0.05) == [True, True, True]


def test_rank_is_one_plus_the_algorithms_shown_better():
    # IQM order a > b > c. a and b are told apart; b ~ c and a ~ c are not.
    # a: nothing beats it -> 1; b: a beats it -> 2; c: tied with both, nothing beats it -> 1,
    # though its IQM is the lowest: it cannot be told apart from the best (its interval is wide).
    summary = pd.DataFrame({"algo": ["c", "a", "b"], "iqm": [1.0, 3.0, 2.0], "mean": [1.0] * 3})
    ranked = rank_algorithms(summary, {("a", "b"): True, ("b", "c"): False})
    assert ranked["algo"].tolist() == ["a", "c", "b"]
    assert ranked["rank"].tolist() == [1, 1, 2]
    assert ranked["behind"].tolist() == ["", "", "a"]
    assert ranked["tied_with"].tolist() == ["c", "a, b", "c"]
    # Now only b and c are told apart: a and b share rank 1; c is tied with a (rank 1) but
    # beaten by b, so it ranks 2nd, and says by whom.
    ranked = rank_algorithms(summary, {("c", "b"): True})
    assert ranked["rank"].tolist() == [1, 1, 2]
    assert ranked["behind"].tolist() == ["", "", "b"]
    assert ranked["tied_with"].tolist() == ["b, c", "a", "a"]
    # P(X > Y) decides the direction of a told-apart pair, not the IQM order
    ranked = rank_algorithms(summary, {("a", "b"): True}, {("a", "b"): 0.1, ("b", "a"): 0.9})
    assert ranked.set_index("algo").loc["a", "behind"] == "b"


def test_same_distribution_is_a_tie_and_a_clear_winner_ranks_first():
    rng = np.random.default_rng(2024)
    frame = runs(
        {
            ("spike", "a"): rng.normal(-20, 3, 10),
            ("spike", "b"): rng.normal(-20, 3, 10),  # the same distribution as a
            ("spike", "best"): rng.normal(-5, 3, 10),
            ("spike", "random"): rng.normal(-60, 3, 10),
        }
    )
    table = compare(frame, reps=1000).set_index("algo")
    assert table.loc["best", "rank"] == 1
    assert table.loc["best", "tied_with"] == ""
    assert table.loc["a", "rank"] == table.loc["b", "rank"] == 2
    assert table.loc["a", "tied_with"] == "b"
    assert table.loc["b", "tied_with"] == "a"
    assert table.loc["random", "rank"] == 4
    assert not table["normalised"].any()
    # Each aggregate's interval brackets its point estimate.
    for metric in ("iqm", "mean", "median"):
        assert (table[f"{metric}_lo"] <= table[metric]).all()
        assert (table[metric] <= table[f"{metric}_hi"]).all()


HAND = {
    # spike: random mean -60, best (ppo) mean -10 -> scale 50.
    ("spike", "ppo"): [-12, -8],  # (-12 + 60) / 50 = 0.96, (-8 + 60) / 50 = 1.04
    ("spike", "random"): [-70, -50],  # -0.2, 0.2
    ("spike", "static"): [-40, -40],  # 0.4
    # steady: random is the best (mean -5): the scale becomes -5 - (-15) = 10, the worst is -1.
    ("steady", "ppo"): [-15, -15],  # -1.0
    ("steady", "random"): [-6, -4],  # -0.1, 0.1
    ("steady", "static"): [-10, -10],  # -0.5
}


def test_normalisation_worked_by_hand():
    out = normalise_scores(runs(HAND)).set_index(["load", "algo", "seed"])["normalised_score"]
    expected = {
        ("spike", "ppo"): [0.96, 1.04],
        ("spike", "random"): [-0.2, 0.2],
        ("spike", "static"): [0.4, 0.4],
        ("steady", "ppo"): [-1.0, -1.0],
        ("steady", "random"): [-0.1, 0.1],
        ("steady", "static"): [-0.5, -0.5],
    }
    for (load, algo), values in expected.items():
        assert out.loc[(load, algo)].tolist() == pytest.approx(values)


def test_normalisation_with_all_means_equal_keeps_offsets():
    frame = runs({("spike", "random"): [1, 3], ("spike", "static"): [2, 2]})
    out = normalise_scores(frame).set_index(["algo", "seed"])["normalised_score"]
    assert out.tolist() == pytest.approx([-1.0, 1.0, 0.0, 0.0])  # scale 1, offset = mean 2


def test_overall_comparison_averages_normalised_task_means():
    table = compare(runs(HAND), by=["env"], reps=300, min_seeds=2).set_index("algo")
    assert table["normalised"].all()
    # Mean of per-task means: ppo (1.0 + -1.0) / 2 = 0; random (0 + 0) / 2 = 0;
    # static (0.4 + -0.5) / 2 = -0.05.
    assert table["mean"].to_dict() == pytest.approx({"ppo": 0.0, "random": 0.0, "static": -0.05})
    # IQM pools the four runs: static -0.5, -0.5, 0.4, 0.4 -> middle two -0.5, 0.4 -> -0.05.
    assert table.loc["static", "iqm"] == pytest.approx(-0.05)
    assert (table["n_tasks"] == 2).all()
    assert (table["n_runs"] == 4).all()


def test_normalisation_needs_the_baseline_on_every_task():
    frame = runs({("spike", "ppo"): [1, 2], ("spike", "random"): [0, 0], ("steady", "ppo"): [1]})
    with pytest.raises(UserError, match=r"'random'.*steady"):
        compare(frame, by=["env"])


def test_performance_profile_fractions_worked_by_hand():
    profile = performance_profile(runs(HAND), taus=np.array([0.0, 0.5]), reps=200)
    got = profile.set_index(["algo", "tau"])["fraction"]
    # Normalised runs (above): ppo 0.96, 1.04, -1, -1; random -0.2, 0.2, -0.1, 0.1;
    # static 0.4, 0.4, -0.5, -0.5. Fraction above 0: ppo 2/4, random 2/4, static 2/4;
    # above 0.5: ppo 2/4, random 0, static 0.
    assert got[("ppo", 0.0)] == got[("random", 0.0)] == got[("static", 0.0)] == 0.5
    assert [got[("ppo", 0.5)], got[("random", 0.5)], got[("static", 0.5)]] == [0.5, 0.0, 0.0]
    assert (profile["lo"] <= profile["fraction"]).all()
    assert (profile["fraction"] <= profile["hi"]).all()


def test_curve_iqm_per_step_and_interpolation():
    rows = [("r1", 0, 1.0), ("r1", 10, 1.0), ("r2", 0, 2.0), ("r2", 10, 2.0)]
    rows += [("r3", 0, 3.0), ("r3", 10, 3.0), ("r4", 0, 100.0), ("r4", 20, 120.0)]
    curves = pd.DataFrame(rows, columns=["run_id", "step", "value"]).assign(
        env="e", load="spike", algo="ppo"
    )
    out = curve_intervals(curves, reps=200).set_index("step")
    # Step 0: 1, 2, 3, 100 -> one trimmed from each end -> (2 + 3) / 2 = 2.5.
    # Step 10: r4 is interpolated halfway between 100 and 120 -> 110; the IQM is again 2.5.
    assert out.loc[0, "estimate"] == pytest.approx(2.5)
    assert out.loc[10, "estimate"] == pytest.approx(2.5)
    # Step 20: only r4 reaches it (the others stopped at 10).
    assert out.loc[20, "estimate"] == pytest.approx(120.0)
    assert out["n_runs"].tolist() == [4, 4, 1]


def test_bad_frames_are_user_errors():
    frame = runs({("spike", "ppo"): [1, 2]})
    with pytest.raises(UserError, match="score"):
        compare(frame.drop(columns="score"))
    with pytest.raises(UserError, match="algo"):
        compare(frame, by=["algo"])
    with pytest.raises(UserError, match="finite"):
        compare(frame.assign(score=[1.0, np.nan]))


def test_outlier_runs_worked_by_hand():
    frame = runs(
        {
            # median -170, |deviations| 0 4 10 3 1150 -> MAD 4: 5 x 1.4826 x 4 = 29.7, and
            # 25% of 170 = 42.5; only -1320 (gap -1150) is further than both
            ("steady", "qlearning"): [-170.0, -166.0, -160.0, -173.0, -1320.0],
            # near-deterministic: MAD 0, but the 0.01 spread is far below 25% of the median
            ("steady", "threshold"): [-241.3, -241.3, -241.31, -241.3, -241.3],
            # a majority that collapsed: the one good seed is the outlier (far above)
            ("spike", "qlearning"): [-1900.0, -1850.0, -1880.0, -300.0, -1910.0],
            ("spike", "random"): [-50.0, -900.0, -60.0],  # too few runs for a median
        }
    )
    found = outlier_runs(frame)
    assert list(zip(found["load"], found["algo"], found["seed"], strict=True)) == [
        ("spike", "qlearning", 3),
        ("steady", "qlearning", 4),
    ]  # worst first: gaps 1580 and 1150
    assert found["median"].tolist() == [-1880.0, -170.0]
    assert found["gap"].tolist() == [1580.0, -1150.0]
    assert found["runs"].tolist() == [5, 5]
    assert outlier_runs(frame, min_runs=3)["seed"].tolist() == [3, 4, 1]  # random's -900 now


def test_no_outlier_gives_an_empty_frame():
    frame = runs({("steady", "ppo"): [-5.0, -5.1, -5.2, -5.3, -5.4]})
    assert outlier_runs(frame).empty


def test_a_seed_given_twice_is_refused_not_counted_twice():
    """Two rows of one (task, algorithm, seed) are one run counted twice: its interval would
    be narrower than the evidence (a hand-made notebook frame did this silently)."""
    frame = runs({("spike", "a"): [1.0, 2.0, 3.0], ("spike", "b"): [0.0, 1.0, 2.0]})
    twice = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)
    with pytest.raises(UserError, match=r"2 rows repeat a \(env, load, algo, seed\) \(e\.g\. "
                                        r"autoscaling, spike, a, 0\)"):  # fmt: skip
        compare(twice)


def test_a_baseline_nearly_the_best_does_not_blow_up_the_normalised_scores():
    """spike: a beats random by 0.001 and b is 0.5 behind. best - random as the scale made b's
    normalised score about -500; the best-to-worst range keeps it near -1."""
    frame = runs({("spike", "random"): [0.0, 0.0], ("spike", "a"): [0.001, 0.001],
                  ("spike", "b"): [-0.5, -0.5]})  # fmt: skip
    out = normalise_scores(frame).groupby("algo")["normalised_score"].mean()
    assert out["b"] == pytest.approx(-0.5 / 0.501) and out["a"] == pytest.approx(0.001 / 0.501)
    assert out["random"] == 0.0
