"""The promotion gate's verdicts on logs small enough to reason about.

One-decision episodes, behaviour 50/50; action 1 earns 1, action 0 earns 0. The challenger
takes 1 nine times in ten, the champion one time in ten: the challenger is truly better by 0.8.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from rlbench.live.gate import (
    MIN_EPISODES,
    canary_stop,
    canary_verdict,
    paired_gate,
    sequential_risk,
)
from rlbench.offline.log import LogWriter, read_log

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "offline"))
from logfakes import Fixed

DAY = 1_700_000_000


def log_of(tmp_path: Path, actions: list[int]):
    with LogWriter(tmp_path / "log", env_id="test/Tiny-v0", obs_shape=(1,), n_actions=2) as w:
        for e, a in enumerate(actions):
            w.append(
                {
                    "ts": DAY + 60 * e, "episode": f"ep{e}", "step": 0, "obs": [0.0],
                    "action": a, "propensity": 0.5, "reward": float(a), "next_obs": [0.0],
                    "done": True, "terminal": True, "policy": "hand", "policy_version": "1",
                    "context": {},
                }
            )  # fmt: skip
    return read_log(tmp_path / "log")


def gate(log, **kw):
    return paired_gate(log, Fixed([0.1, 0.9]), Fixed([0.9, 0.1]), estimator="is", n_boot=200, **kw)


def test_a_better_challenger_on_enough_episodes_is_promoted(tmp_path):
    actions = list(np.random.default_rng(0).integers(0, 2, size=40))
    result = gate(log_of(tmp_path, actions))
    assert result.promote and result.low > 0 and result.episodes == 40


def test_one_held_out_episode_never_promotes_though_its_interval_has_zero_width(tmp_path):
    """A bootstrap over one episode repeats it: low == high == the point estimate, here +1.6.
    The gate used to read that as a certain improvement."""
    result = gate(log_of(tmp_path, [1]))
    assert result.low == result.high == result.diff > 0
    assert not result.promote
    assert "fewer than gate.min_episodes" in result.why and "raise retrain.window" in result.why


def test_the_minimum_is_a_setting(tmp_path):
    log = log_of(tmp_path, [1, 1, 1, 0, 1])
    assert not gate(log).promote  # 5 < MIN_EPISODES
    assert MIN_EPISODES > 5
    assert gate(log, min_episodes=2).promote  # what a user who accepts the risk asks for


def test_a_gate_not_known_to_cover_on_episodes_is_named_with_the_alternative():
    """pdis_bounds is the default and the only sequential estimator whose interval covered;
    dr on 12-decision episodes gets one line naming the risk and pdis_bounds; one-decision
    episodes (the recommender's bandit estimators) get none."""
    warning = sequential_risk("dr", 12)
    assert "\n" not in warning and "12-decision" in warning
    assert "gate.estimator=pdis_bounds" in warning and "worse challenger" in warning
    assert "multi-decision" in sequential_risk("wdr", None)
    assert sequential_risk("pdis_bounds", 288) is None and sequential_risk("ips_bounds", 48) is None
    assert sequential_risk("dr_bandit", 1) is None


def test_the_default_gate_covers():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rlbench.config import CONF_LIVE_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_LIVE_DIR, version_base="1.3"):
        default = compose("live").gate.estimator
        drift = compose("live", overrides=["experiment=drift"]).gate.estimator
    GlobalHydra.instance().clear()
    assert (default, drift) == ("pdis_bounds", "dr")  # drift keeps the dr its README measured


def test_the_canary_errs_at_its_level_and_finds_a_real_gain():
    """canary_verdict on simulated episode returns: equally good arms (normal, or skewed like a
    cost, with unequal counts and spreads: canary.share 0.3) pass at most about alpha of the
    time; a challenger better by exactly gate.margin too; one better by two standard
    deviations nearly always; fewer than two episodes an arm never."""
    rng = np.random.default_rng(0)

    def rate(draw, n_ch: int, n_cp: int, gap: float, margin: float = 0.0, trials: int = 3000):
        wins = [
            canary_verdict(draw(n_ch) + gap, draw(n_cp), margin, 0.05)[0] for _ in range(trials)
        ]
        return float(np.mean(wins))

    def normal(n: int) -> np.ndarray:
        return rng.normal(-50.0, 10.0, n)

    def cost(n: int) -> np.ndarray:  # a skewed return: -(a gamma cost)
        return -rng.gamma(2.0, 10.0, n)

    assert rate(normal, 10, 10, 0.0) <= 0.065
    assert rate(cost, 10, 10, 0.0) <= 0.07
    assert rate(normal, 10, 23, 0.0) <= 0.065  # share 0.3: unequal arms
    assert rate(normal, 10, 10, 5.0, margin=5.0) <= 0.065
    assert rate(normal, 10, 10, 20.0, trials=300) >= 0.95
    assert rate(cost, 10, 10, 30.0, trials=300) >= 0.95
    promote, why, metrics = canary_verdict([1.0], [0.0, 0.0], 0.0, 0.05)
    assert not promote and "too few" in why and metrics["challenger_episodes"] == 1
    promote, why, metrics = canary_verdict([3.0, 5.0, 4.0], [1.0, 2.0, 0.0], 0.0, 0.05)
    assert promote and metrics["diff"] == 3.0 and "canary.alpha=0.05" in why


def test_the_canary_stops_a_worse_challenger_early_and_rarely_an_equal_one():
    """canary_stop after every episode of simulated 10-a-side canaries (arms drawn at 0.5):
    equally good arms are stopped in a few percent (repeated looks at 0.01); a challenger worse
    by 1.5 standard deviations is stopped in most canaries, before its arm is full."""
    rng = np.random.default_rng(7)

    def canary(gap: float) -> tuple[bool, int]:
        ch: list[float] = []
        cp: list[float] = []
        while min(len(ch), len(cp)) < 10:
            if rng.random() < 0.5:
                ch.append(rng.normal(-gap))
            else:
                cp.append(rng.normal())
            if canary_stop(ch, cp, 0.01):
                return True, len(ch)
        return False, len(ch)

    equal = [canary(0.0)[0] for _ in range(1500)]
    assert np.mean(equal) < 0.08
    worse = [canary(1.5) for _ in range(500)]
    assert np.mean([s for s, _ in worse]) > 0.75
    assert np.mean([n for s, n in worse if s]) < 9
    assert canary_stop([-9.0, -9.5], [0.0, 0.1], 0.01) is None  # 3 an arm first
    why = canary_stop([-9.0, -9.5, -9.2], [0.0, 0.1, -0.1], 0.01)
    assert why is not None and why.startswith("canary stopped early") and "0.01" in why
