"""The hybrid scheduler agent: the MLP learns the seed's synthetic target, its prediction forms
the Q-table's state and the untrained policy, and its model file keeps both."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlbench.agents import build_agent, load_agent
from rlbench.envs import make_vec
from rlbench.errors import UserError

SCHEDULER = "rlbench/ScriptScheduler-v0"
LOG_SPAN = math.log(1440 / 3)  # the env's default interval range, 3 minutes to one day


def hybrid(n: int = 2, **settings):
    return build_agent({"name": "hybrid", **settings}, make_vec(SCHEDULER, n, seed=0), seed=0)


def scale(minutes: float) -> float:
    """Minutes on the observation's log scale (as ScriptSchedulerEnv documents it)."""
    return math.log(minutes / 3) / LOG_SPAN


def obs(avg: float, pref: int, manual: int, interval: float) -> list[float]:
    return [scale(avg), (pref + 1) / 2, manual / 8, scale(interval)]


@pytest.fixture(scope="module")
def trained_mlp():
    agent = hybrid()
    agent.fit_mlp()
    return agent


@pytest.mark.parametrize(
    ("avg", "pref", "manual"),
    [(60, 0, 0), (60, 1, 4), (240, 0, 2), (10, 0, 0), (120, -1, 8)],
)
def test_mlp_predicts_the_seeds_synthetic_target(trained_mlp, avg, pref, manual):
    # the seed's target without noise: max(3, avg - manual - 1.5 * pref), e.g. 60 - 4 - 1.5 = 54.5
    expected = max(3.0, avg - manual - 1.5 * pref)
    got = trained_mlp.baseline_minutes(np.array([obs(avg, pref, manual, 60)]))[0]
    assert got == pytest.approx(expected, rel=0.1)


def test_mlp_training_is_seeded_and_leaves_the_global_torch_stream_alone(trained_mlp):
    before = torch.get_rng_state()
    again = hybrid()
    again.fit_mlp()
    assert torch.equal(torch.get_rng_state(), before)
    for key, value in trained_mlp.mlp.items():
        np.testing.assert_array_equal(again.mlp[key], value)


def test_state_is_the_interval_to_baseline_ratio_bin_preference_and_manual_runs(trained_mlp):
    agent = trained_mlp
    base = agent.baseline_minutes(np.array([obs(60, 0, 0, 60)]))[0]
    # 7 bins over log ratios [-ln 2, ln 2], width 2 ln 2 / 7 = 0.198; state index
    # (ratio_bin * 3 + pref + 1) * 3 + min(manual, 2)
    cases = [
        (obs(60, 0, 0, base), (3 * 3 + 1) * 3 + 0),  # ratio 1: middle bin 3
        # ratio 1 / 1.3: log -0.262 -> (-0.262 + 0.693) / 0.198 = 2.18 -> bin 2
        (obs(60, 0, 0, base / 1.3), (2 * 3 + 1) * 3 + 0),
        # ratio 2.5 is beyond the range: top bin 6; pref +1 -> 2; 5 manual runs capped at 2
        (obs(60, 1, 5, base * 2.5), (6 * 3 + 2) * 3 + 2),
        (obs(60, -1, 1, base / 9), (0 * 3 + 0) * 3 + 1),  # far below: bin 0
    ]
    states = agent.discretise(np.array([o for o, _ in cases]))
    assert states.tolist() == [s for _, s in cases]


def test_untrained_policy_moves_the_interval_toward_the_mlps_baseline(trained_mlp):
    base = trained_mlp.baseline_minutes(np.array([obs(60, 0, 0, 60)]))[0]
    batch = np.array([obs(60, 0, 0, base * 1.6), obs(60, 0, 0, base), obs(60, 0, 0, base / 1.6)])
    # x0.85 (0) when the interval is above the baseline, keep (1) at it, x1.15 (2) below it
    assert trained_mlp.predict(batch).tolist() == [0, 1, 2]
    no_prior = hybrid(prior_bonus=0.0)
    no_prior.mlp = trained_mlp.mlp
    assert no_prior.predict(batch).tolist() == [0, 0, 0]  # all ties: the lowest index


def test_learning_updates_only_the_visited_entries_and_reports(trained_mlp):
    agent = hybrid(n=4)
    agent.mlp = trained_mlp.mlp
    start = agent.q.copy()
    reports = []
    agent.learn(768, lambda steps, stats: reports.append(steps))  # 2 episodes of 96 x 4 copies
    assert agent.num_steps == 768 and reports[-1] == 768
    changed = (agent.q != start).any(axis=1)
    assert changed.any() and not changed[~agent.visited].any()
    # epsilon 0.5 x 0.98 per finished episode: 4 copies x 2 episodes = 8 decays
    assert agent.epsilon == pytest.approx(0.5 * 0.98**8)


def test_model_file_holds_table_and_mlp_and_acts_identically(tmp_path):
    agent = hybrid(n=4)
    agent.learn(800)
    path = tmp_path / "hybrid.npz"
    agent.save(path)
    with np.load(path, allow_pickle=False) as npz:
        assert {"q.npy", "mlp_w1.npy", "mlp_b2.npy"} <= {f"{k}.npy" for k in npz.files}
    loaded = load_agent(path, make_vec(SCHEDULER, 4, seed=0))
    for key, value in agent.mlp.items():  # loaded, not trained again
        np.testing.assert_array_equal(loaded.mlp[key], value)
    batch = make_vec(SCHEDULER, 32, seed=5).reset()
    batch[:, 1] = np.tile([0.0, 0.5, 1.0, 0.5], 8)  # some requests, to reach other states
    np.testing.assert_array_equal(loaded.predict(batch), agent.predict(batch))
    loaded.learn(1600)
    assert loaded.num_steps == 1600


def test_wrong_env_and_bad_settings_are_one_clear_error():
    with pytest.raises(UserError) as err:
        build_agent({"name": "hybrid"}, make_vec("rlbench/Recommender-v0", 1), seed=0)
    assert str(err.value) == (
        "hybrid needs the scheduler environment (env=scheduler); got rlbench/Recommender-v0"
    )
    with pytest.raises(UserError, match=r"algo.ratio_range must be > 1"):
        hybrid(ratio_range=0.5)
    with pytest.raises(UserError, match=r"did you mean algo.ratio_bins"):
        hybrid(ratio_bin=5)
