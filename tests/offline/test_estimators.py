"""Every estimator against a log small enough to work out by hand.

Two actions, states 0 and 1, target pi = (0.2, 0.8) in every state, behaviour 0.5 each (one
decision logged at 0.8), gamma = 1. Ratios pi/mu: action 1 -> 1.6, action 0 -> 0.4.
"""

from __future__ import annotations

import numpy as np
import pytest
from logfakes import Fixed, constant, onehot2, write_episodes

from rlbench.errors import UserError
from rlbench.offline import ope

TARGET = Fixed([0.2, 0.8])
# (s, a, propensity, r, s')
EPISODES = [
    [(0, 1, 0.5, 1.0, 1), (1, 0, 0.5, 4.0, 1)],  # A: w = 1.6, 0.64; G = 5
    [(0, 0, 0.5, 2.0, 0)],  # B: w = 0.4 (carried to t=1 with r=0); G = 2
    [(1, 1, 0.5, 3.0, 1)],  # C: w = 1.6 (carried); G = 3
]


@pytest.fixture
def seq(tmp_path):
    log = write_episodes(tmp_path / "log", EPISODES)
    return ope.Evaluator(
        ope.make_batch(log, TARGET), gamma=1.0, features=onehot2, ridge=0.0, time_features=False
    )


def test_importance_sampling_family_by_hand(seq):
    # IS    = (0.64*5 + 0.4*2 + 1.6*3) / 3 = 8.8 / 3
    assert seq.point("is") == pytest.approx(8.8 / 3)
    # WIS   = 8.8 / (0.64 + 0.4 + 1.6) = 8.8 / 2.64
    assert seq.point("wis") == pytest.approx(8.8 / 2.64)
    # PDIS  = ((1.6*1 + 0.64*4) + 0.4*2 + 1.6*3) / 3 = 9.76 / 3
    assert seq.point("pdis") == pytest.approx(9.76 / 3)
    # PDWIS = t0: (1.6*1 + 0.4*2 + 1.6*3) / 3.6 = 2.0;  t1: 0.64*4 / (0.64 + 0.4 + 1.6) = 2.56/2.64
    assert seq.point("pdwis") == pytest.approx(2.0 + 2.56 / 2.64)


def test_fitted_q_and_doubly_robust_by_hand(seq):
    # tabular FQE: Q(1,0) = 4, Q(1,1) = 3, V(1) = 0.2*4 + 0.8*3 = 3.2
    #              Q(0,1) = 1 + V(1) = 4.2, Q(0,0) = 2, V(0) = 0.2*2 + 0.8*4.2 = 3.76
    # FQE = mean V(s0) over episodes = (3.76 + 3.76 + 3.2) / 3
    assert seq.point("fqe") == pytest.approx(10.72 / 3)
    # DR, episode A: t0 1.6*(1 - 4.2) + V(0) = -1.36; t1 0.64*(4 - 4) + 1.6*V(1) = 5.12 -> 3.76
    #     B: 0.4*(2 - 2) + 3.76;  C: 1.6*(3 - 3) + 3.2  -> (3.76 + 3.76 + 3.2) / 3
    assert seq.point("dr") == pytest.approx(10.72 / 3)
    # WDR: t0: -5.12/3.6 + 10.72/3;  t1: 0 + (1.6*3.2)/(1.6 + 0.4 + 1.6) = 5.12/3.6
    assert seq.point("wdr") == pytest.approx(-5.12 / 3.6 + 10.72 / 3 + 5.12 / 3.6)


def test_bounds_estimator_by_hand(seq):
    """clip 1.5; reward range [0, 4] (rewards 1..4, and 0: episodes differ in length).
    t0: min(w, 1.5) = 1.5, 0.4, 1.5 with r = 1, 2, 3: seen = 6.8/3, mass = 3.4/3 > 1 (no
        missing weight), point = 6.8/3.4 = 2; low = min(seen, point) = 2, high = 6.8/3.
    t1: min(w, 1.5) = 0.64, 0.4 (carried), 1.5 (carried) with r = 4, 0, 0: seen = 2.56/3,
        mass = 2.54/3, missing = 0.46/3; point = 2.56/2.54, low = 2.56/3 + 0.46/3 * 0,
        high = 2.56/3 + 0.46/3 * 4 = 4.4/3."""
    seq = ope.Evaluator(seq.b, gamma=1.0, features=onehot2, clip=1.5)
    assert seq.reward_range == (0.0, 4.0)
    ones = np.ones((1, 3))
    _, low, high = seq.bounds("pdis_bounds", ones)
    assert seq.point("pdis_bounds") == pytest.approx(2.0 + 2.56 / 2.54)
    assert low[0] == pytest.approx(2.0 + 2.56 / 3)
    assert high[0] == pytest.approx(6.8 / 3 + 4.4 / 3)


def test_bounds_say_everything_is_possible_without_support(tmp_path):
    """The log only ever took action 0; the target always takes 1: no weight at all, so the
    interval is the horizon times the reward range and the point the logged mean reward."""
    episodes = [[(0, 0, 0.5, -1.0, 1), (1, 0, 0.5, -3.0, 0)]] * 5
    log = write_episodes(tmp_path / "log", episodes)
    est, _ = ope.evaluate(log, Fixed([0.0, 1.0]), ["pdis_bounds"], n_boot=20, warn=False)
    e = est["pdis_bounds"]
    assert (e.low, e.value, e.high) == pytest.approx((-6.0, -4.0, -2.0))
    # the user knows better bounds: they are used, and checked against the log
    est, _ = ope.evaluate(
        log, Fixed([0.0, 1.0]), ["pdis_bounds"], n_boot=20, warn=False, reward_range=(-5, 0)
    )
    assert (est["pdis_bounds"].low, est["pdis_bounds"].high) == pytest.approx((-10.0, 0.0))
    with pytest.raises(UserError, match=r"reward_range \[-2, 0\] does not hold the logged"):
        ope.evaluate(log, Fixed([0.0, 1.0]), ["pdis_bounds"], warn=False, reward_range=(-2, 0))
    with pytest.raises(UserError, match="clip must be a positive weight"):
        ope.evaluate(log, Fixed([0.0, 1.0]), ["pdis_bounds"], warn=False, clip=0)


def test_the_model_knows_the_time_to_go_by_hand(tmp_path):
    """One observation at both steps (the time of day that wraps at the episode's end), target
    always action 1. With time-to-go features Q1(t=1) = (1 + 5) / 2 = 3 and Q1(t=0) = 1 + 3 = 4,
    so FQE = 4. Without them one Q1 for both steps: 3 Q1 - Q1 = 1 + 1 + 5, Q1 = 3.5 (the first
    step is read as a geometric continuation): FQE = 3.5, the time-blind model's bias."""
    log = write_episodes(
        tmp_path / "log",
        [[(0, 1, 0.5, 1.0, 0), (0, 1, 0.5, 1.0, 0)], [(0, 0, 0.5, 0.0, 0), (0, 1, 0.5, 5.0, 0)]],
    )
    batch = ope.make_batch(log, Fixed([0.0, 1.0]))
    kw = dict(gamma=1.0, features=constant, ridge=0.0)
    assert ope.Evaluator(batch, **kw).point("fqe") == pytest.approx(4.0)  # on by default
    assert ope.Evaluator(batch, **kw, time_features=False).point("fqe") == pytest.approx(3.5)
    assert not ope.Evaluator(batch, **kw | {"gamma": 0.9}).time_features  # discounted: off


def test_the_per_episode_sums_give_the_per_decision_fit(tmp_path):
    """Long episodes: a replicate's model is fitted from per-episode sums; the same theta as
    summing its decisions."""
    rng = np.random.default_rng(0)
    episodes = [
        [(int(rng.integers(2)), int(rng.integers(2)), 0.5, float(rng.normal()), 0)] * 6
        for _ in range(5)
    ]
    batch = ope.make_batch(write_episodes(tmp_path / "log", episodes), TARGET)
    model = ope.LinearQ(batch, onehot2, 1.0, 1e-4, True)
    assert model.per_episode is not None
    counts = rng.integers(0, 3, size=batch.n_episodes).astype(float)
    fast = model.fit(counts)
    model.per_episode = None
    assert np.allclose(fast, model.fit(counts), rtol=1e-10, atol=1e-10)


# one decision per session: s, a, propensity, r
BANDIT = [
    [(0, 1, 0.5, 1.0, 0)],  # rho 1.6
    [(0, 0, 0.5, 0.0, 0)],  # rho 0.4
    [(1, 1, 0.5, 2.0, 1)],  # rho 1.6
    [(1, 0, 0.8, 1.0, 1)],  # rho 0.2 / 0.8 = 0.25
]


def test_bandit_estimators_by_hand(tmp_path):
    log = write_episodes(tmp_path / "log", BANDIT)
    batch = ope.make_batch(log, TARGET)
    ev = ope.Evaluator(batch, gamma=0.0, features=onehot2, ridge=0.0)
    # IPS = (1.6*1 + 0.4*0 + 1.6*2 + 0.25*1) / 4 = 5.05 / 4
    assert ev.point("ips") == pytest.approx(5.05 / 4)
    # SNIPS = 5.05 / (1.6 + 0.4 + 1.6 + 0.25)
    assert ev.point("snips") == pytest.approx(5.05 / 3.85)
    # DM, tabular: r(0,0)=0, r(0,1)=1, r(1,0)=1, r(1,1)=2; v(0) = 0.8, v(1) = 0.2 + 1.6 = 1.8
    assert ev.point("dm") == pytest.approx((0.8 + 0.8 + 1.8 + 1.8) / 4)
    # with a per-action constant model: r(0) = 0.5, r(1) = 1.5, v = 0.1 + 1.2 = 1.3 everywhere
    ev1 = ope.Evaluator(batch, gamma=0.0, features=constant, ridge=0.0)
    assert ev1.point("dm") == pytest.approx(1.3)
    # DR = 1.3 + (1.6*(1-1.5) + 0.4*(0-0.5) + 1.6*(2-1.5) + 0.25*(1-0.5)) / 4 = 1.3 - 0.075/4
    assert ev1.point("dr_bandit") == pytest.approx(1.3 - 0.075 / 4)
    # bounds, rewards in [0, 2], clip sqrt(4) = 2 (no ratio clipped): seen = 5.05/4, mass
    # 3.85/4, missing 0.15/4: point = SNIPS, low = seen + 0, high = seen + 0.15/4 * 2
    ones = np.ones((1, 4))
    assert ev.point("ips_bounds") == pytest.approx(5.05 / 3.85)
    assert np.r_[ev.bounds("ips_bounds", ones)[1:]] == pytest.approx([5.05 / 4, 5.35 / 4])
    # clip 1: min(rho, 1) = 1, 0.4, 1, 0.25: seen = 3.25/4, mass 2.65/4, missing 1.35/4
    ev2 = ope.Evaluator(batch, gamma=0.0, features=onehot2, clip=1.0)
    assert ev2.point("ips_bounds") == pytest.approx(3.25 / 2.65)
    assert np.r_[ev2.bounds("ips_bounds", ones)[1:]] == pytest.approx([3.25 / 4, 5.95 / 4])


def test_intervals_are_reproducible_and_hold_the_estimate(tmp_path):
    log = write_episodes(tmp_path / "log", EPISODES * 20)
    kw = dict(estimators=ope.ESTIMATORS, features=onehot2, n_boot=50, seed=3, warn=False)
    first, diag = ope.evaluate(log, TARGET, **kw)
    again, _ = ope.evaluate(log, TARGET, **kw)
    other, _ = ope.evaluate(log, TARGET, **(kw | {"seed": 4}))
    for name, est in first.items():
        assert (est.low, est.high) == (again[name].low, again[name].high), name
        assert est.low <= est.value <= est.high, name
        assert est.width > 0, name
    assert any(first[n].low != other[n].low for n in first)
    assert diag.n_episodes == 60 and diag.unsupported_actions == []


def test_paired_difference_of_a_policy_with_itself_is_exactly_zero(tmp_path):
    log = write_episodes(tmp_path / "log", EPISODES * 10)
    diff = ope.compare(log, TARGET, Fixed([0.2, 0.8]), features=onehot2, n_boot=30)
    for name, est in diff.items():
        if name in ope.BOUNDED:  # what the log cannot show may differ by the reward range
            assert est.value == 0 and est.low == pytest.approx(-est.high) and est.high > 0
        else:
            assert est.value == 0 and est.low == 0 and est.high == 0
    better = ope.compare(log, Fixed([0.0, 1.0]), TARGET, ["pdis"], n_boot=30)["pdis"]
    worse = ope.compare(log, TARGET, Fixed([0.0, 1.0]), ["pdis"], n_boot=30)["pdis"]
    assert better.value == pytest.approx(-worse.value)
    assert (better.low, better.high) == pytest.approx((-worse.high, -worse.low))


def test_missing_support_is_a_clear_warning(tmp_path):
    log = write_episodes(tmp_path / "log", [[(0, 0, 0.5, 1.0, 0)], [(1, 0, 0.5, 0.0, 1)]])
    with pytest.warns(
        ope.SupportWarning,
        match=r"80\.0% of its probability on actions the logging policy never took \(1\).*"
        r"bounds estimators assume their rewards lie in the logged range \[0, 1\]",
    ):
        _, diag = ope.evaluate(log, TARGET, ["ips"], n_boot=10)
    assert diag.unsupported_actions == [1] and diag.unsupported_mass == pytest.approx(0.8)


def test_effective_sample_size(tmp_path):
    log = write_episodes(tmp_path / "log", EPISODES)
    _, diag = ope.evaluate(log, TARGET, ["is"], n_boot=10, warn=False)
    w = np.array([0.64, 0.4, 1.6])
    assert diag.ess_episodes == pytest.approx(w.sum() ** 2 / (w**2).sum())
    assert diag.max_ratio == pytest.approx(1.6)


def test_poly2_features_are_the_full_second_degree_polynomial():
    """[1, s1, s2, s1*s1, s1*s2, s2*s2] for two-dimensional observations, by hand."""
    from rlbench.offline.ope import poly2

    out = poly2(np.array([[2.0, 3.0], [0.5, -1.0]]))
    assert out.tolist() == [[1, 2, 3, 4, 6, 9], [1, 0.5, -1, 0.25, -0.5, 1]]


def test_the_bounds_difference_is_decisive_only_where_the_log_shows_both_policies(tmp_path):
    """What a promotion gate on ``pdis_bounds`` relies on. Action 1 earns 1, action 0 earns 0.
    Logged uniformly, a policy that mostly takes 1 is clearly better than one that mostly takes
    0 (lower bound above 0); logged by a policy that never took 1, the same comparison cannot
    exclude 'worse' (the bounds say so), where plain PDIS reports 'no difference' with
    certainty. (That log never shows a reward of 1, so the range is given: the logged range
    would be [0, 0].)"""
    rng = np.random.default_rng(0)
    both = [[(0, int(a), 0.5, float(a), 0)] for a in rng.integers(0, 2, 400)]
    good, bad = Fixed([0.1, 0.9]), Fixed([0.9, 0.1])
    diff = ope.compare(write_episodes(tmp_path / "both", both), good, bad, ["pdis_bounds"],
                       n_boot=100)["pdis_bounds"]  # fmt: skip
    assert 0.5 < diff.low <= diff.value == pytest.approx(0.8, abs=0.1)
    only0 = [[(0, 0, 1.0, 0.0, 0)]] * 400
    log0 = write_episodes(tmp_path / "only0", only0)
    diff = ope.compare(log0, good, bad, ["pdis_bounds", "pdis"], n_boot=100, reward_range=(0, 1))
    assert diff["pdis_bounds"].low < 0 < diff["pdis_bounds"].high
    assert diff["pdis"].low == diff["pdis"].high == 0  # the truth is +0.8


def test_ordinary_is_without_weight_is_zero_and_self_normalised_ones_say_they_have_no_interval(
    tmp_path,
):
    """20 two-step episodes, target always action 1; only episode 0 took it twice (W = 4,
    G = 3). IS = 4 * 3 / 20 = 0.6; a resample without episode 0 (a share (19/20)^20 = 36% of
    them) has every weight 0, so IS is 0 there (not undefined: dropping those replicates made
    the interval cover the truth half of the time). WIS = 3, but undefined in those resamples:
    no interval, and the share is said."""
    eps = [[(0, 1, 0.5, 1.0, 1), (1, 1, 0.5, 2.0, 0)]]
    eps += [[(0, 0, 0.5, 0.0, 1), (1, 1, 0.5, 1.0, 0)]] * 19
    log = write_episodes(tmp_path / "log", eps)
    names = ["is", "pdis", "wis", "pdwis", "wdr"]
    est, _ = ope.evaluate(log, Fixed([0.0, 1.0]), names, n_boot=200, warn=False, features=onehot2)
    assert est["is"].value == pytest.approx(0.6)
    assert est["is"].undefined_share == 0 and est["is"].low == 0 < est["is"].high
    assert est["pdis"].undefined_share == 0 and est["pdis"].low == 0 < est["pdis"].high
    for name in ("wis", "pdwis", "wdr"):
        e = est[name]
        assert e.value == pytest.approx(3.0), name
        assert 0.2 < e.undefined_share < 0.5, name
        assert np.isnan(e.low) and np.isnan(e.high), name
        assert e.notes[0].startswith(f"no interval: undefined in {100 * e.undefined_share:.0f}%")


def test_no_weight_at_all_is_zero_with_no_interval(tmp_path):
    """No logged episode took the target's action: IS and PDIS are 0 (every weight is 0), but a
    [0, 0] interval would claim certainty; WIS is undefined. The log earns -4 an episode, so 0
    is also outside the returns it can produce, [-6, -2]: said, as FQE's 0 (its model has no
    data on action 1 and extrapolates)."""
    log = write_episodes(tmp_path / "log", [[(0, 0, 0.5, -1.0, 1), (1, 0, 0.5, -3.0, 0)]] * 5)
    names = ["is", "pdis", "wis", "fqe"]
    est, _ = ope.evaluate(log, Fixed([0.0, 1.0]), names, n_boot=20, warn=False, features=onehot2)
    for name in ("is", "pdis"):
        e = est[name]
        assert e.value == 0 and np.isnan(e.low) and np.isnan(e.high), name
        assert e.notes[0].startswith("no interval: no logged decision"), name
        assert (
            "0 is outside the returns the log can produce [-6, -2]: the importance weights"
            in (e.notes[1])
        )
    assert np.isnan(est["wis"].value) and est["wis"].undefined_share == 1.0
    assert est["fqe"].value == pytest.approx(0.0, abs=1e-6)
    assert est["fqe"].notes == [
        f"{est['fqe'].value:.4g} is outside the returns the log can produce [-6, -2]: the "
        "model extrapolates"
    ]
    diff = ope.compare(log, Fixed([0.0, 1.0]), Fixed([1.0, 0.0]), ["is", "fqe"], n_boot=20,
                       features=onehot2)  # fmt: skip
    assert np.isnan(diff["is"].low)  # one side has no weight: no interval of the difference
    # 0 - (-4) = 4 is the largest difference [-6, -2] allows: on the edge, not outside
    assert diff["fqe"].value == pytest.approx(4.0, abs=0.01) and diff["fqe"].notes == []


def test_ips_outside_the_logged_rewards_is_said(tmp_path):
    """Every session took action 1 at 0.5 and earned 1; the target always takes 1: IPS = 2,
    which no policy can earn here (rewards [1, 1]): the weights average 2, not 1."""
    log = write_episodes(tmp_path / "log", [[(0, 1, 0.5, 1.0, 0)]] * 8)
    est, _ = ope.evaluate(log, Fixed([0.0, 1.0]), ["ips", "snips"], n_boot=20, warn=False)
    assert est["ips"].value == pytest.approx(2.0)
    assert est["ips"].notes == [
        "2 is outside the rewards the log can produce [1, 1]: the importance weights do not "
        "average 1 on this log"
    ]
    assert est["snips"].value == pytest.approx(1.0) and est["snips"].notes == []
