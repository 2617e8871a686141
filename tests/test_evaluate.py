"""The evaluation protocol: seeds, episodes, and the environment closed whatever happens."""

from __future__ import annotations

import numpy as np
import pytest

from rlbench.run import evaluate as evaluation

ENV = "rlbench/Autoscaling-v0"
KWARGS = {"load": "poisson", "horizon": 50}  # random load: seeds matter


class Hold:
    def predict(self, obs, deterministic=True):
        return np.ones(len(obs), dtype=np.int64)  # action 1: hold


class Broken:
    def __init__(self, after: int) -> None:
        self.left = after

    def predict(self, obs, deterministic=True):
        self.left -= 1
        if self.left < 0:
            raise FloatingPointError("the network returned NaN")
        return np.ones(len(obs), dtype=np.int64)


@pytest.fixture
def closed(monkeypatch):
    """How many evaluation environments were closed."""
    count = []
    make_vec = evaluation.make_vec

    def tracked(*args, **kwargs):
        venv = make_vec(*args, **kwargs)
        close = venv.close
        venv.close = lambda: (count.append(1), close())
        return venv

    monkeypatch.setattr(evaluation, "make_vec", tracked)
    return count


def test_one_episode_per_seed_with_the_horizon(closed):
    result = evaluation.evaluate(Hold(), ENV, KWARGS, seeds=range(10, 14))
    assert result.seeds == [10, 11, 12, 13]
    assert result.lengths.tolist() == [50] * 4
    assert len(set(result.returns.tolist())) > 1  # seeded differently
    assert closed == [1]


def test_same_seeds_same_returns():
    a = evaluation.evaluate(Hold(), ENV, KWARGS, seeds=range(3))
    b = evaluation.evaluate(Hold(), ENV, KWARGS, seeds=range(3))
    assert np.array_equal(a.returns, b.returns)


def test_validation_without_the_trajectory_scores_the_same():
    full = evaluation.evaluate(Hold(), ENV, KWARGS, seeds=range(3))
    lean = evaluation.evaluate(Hold(), ENV, KWARGS, seeds=range(3), record_trajectory=False)
    np.testing.assert_array_equal(lean.returns, full.returns)
    assert lean.metrics() == full.metrics()
    assert len(full.trajectory["step"]) == full.lengths[0]
    assert all(len(column) == 0 for column in lean.trajectory.values())


def test_the_environment_is_closed_when_the_policy_raises(closed):
    with pytest.raises(FloatingPointError):
        evaluation.evaluate(Broken(after=5), ENV, KWARGS, seeds=range(4))
    assert closed == [1]


def test_the_environment_is_closed_when_an_episode_never_ends(closed):
    with pytest.raises(RuntimeError, match="max_steps=20"):
        evaluation.evaluate(Hold(), ENV, KWARGS, seeds=range(2), max_steps=20)
    assert closed == [1]


@pytest.mark.parametrize("seeds", [[], [0, 2]])
def test_bad_seed_lists_are_refused(seeds):
    with pytest.raises(ValueError, match=r"seeds|episode"):
        evaluation.evaluate(Hold(), ENV, KWARGS, seeds=seeds)


def test_a_continuous_action_is_passed_whole_and_recorded():
    """Pendulum's torque is a (1,) Box action: each copy gets its own array (gymnasium indexes
    it), and the trajectory keeps the number (it used to be flattened to a scalar and crash)."""

    class Torque:
        def predict(self, obs, deterministic=True):
            return np.full((len(obs), 1), 0.5, dtype=np.float32)

    result = evaluation.evaluate(Torque(), "Pendulum-v1", {"horizon": 20}, seeds=[0, 1])
    assert result.lengths.tolist() == [20, 20]
    assert result.trajectory["action"].tolist() == [0.5] * 20
