"""Training that diverges stops with one clear line (exit 3); in a sweep the trial fails and the
sweep goes on. Divergence: a NaN loss or weights, or a NaN observation or reward."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

NAN_ENV = "rlbench_tests/NaNAfter-v0"


class NaNAfter(gym.Env):
    """Observation 0.5 and reward 1 at every step, until step ``at``: then NaN in ``nan_in``."""

    observation_space = spaces.Box(0.0, 1.0, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, nan_in: str = "obs", at: int = 5) -> None:
        self.nan_in, self.at, self.t = nan_in, int(at), 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.full(2, 0.5, np.float32), {}

    def step(self, action):
        self.t += 1
        obs, reward = np.full(2, 0.5, np.float32), 1.0
        if self.t >= self.at:
            if self.nan_in == "obs":
                obs[1] = np.nan
            else:
                reward = float("nan")
        return obs, reward, False, False, {}


if NAN_ENV not in gym.registry:
    gym.register(NAN_ENV, entry_point=NaNAfter)


@pytest.mark.slow
def test_a_nan_loss_stops_the_run_with_one_line(cli, mlflow_store):
    result = cli(
        *mlflow_store.overrides(), "algo=ppo", "algo.n_steps=128", "algo.learning_rate=1e30",
        "debug=fast",
    )  # fmt: skip
    assert result.code == 3, result.err[-2000:]
    (line,) = result.error_lines()
    # the first report after one rollout of 128 steps x 4 copies: a NaN loss or NaN weights
    assert line.startswith("error: ppo diverged at step 512: "), line
    assert "became NaN or inf;" in line
    assert "lower algo.learning_rate" in line and "Traceback" not in result.err
    (run,) = mlflow_store.runs()
    assert run.info.status == "FAILED"
    assert run.data.tags["rlbench.diverged"] == "true"
    assert run.data.tags["error"].startswith("TrainingDiverged: ppo diverged at step 512")


@pytest.mark.parametrize(
    ("algo", "nan_in", "said"),
    [
        ("qlearning", "obs", "a NaN or inf observation at step 20"),  # 4 copies x step 5
        ("qlearning", "reward", "a NaN or inf reward at step 20"),
        ("random", "obs", "observation (during evaluation)"),  # random never steps to learn
    ],
)
def test_a_nan_from_the_environment_stops_the_run(algo, nan_in, said, cli, tmp_path):
    result = cli(
        "env=gym", f"env.id={NAN_ENV}", f"+env.nan_in={nan_in}", f"algo={algo}", "debug=fast",
        "tracking.enabled=false",
    )  # fmt: skip
    assert result.code == 3, result.err[-2000:]
    (line,) = result.error_lines()
    assert line.startswith("error: the environment returned a NaN or inf ") and said in line
    assert not list((tmp_path / "outputs" / "checkpoints").rglob("*.npz"))


@pytest.mark.slow
def test_in_a_sweep_a_diverging_trial_fails_and_the_sweep_goes_on(cli, mlflow_store, tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    result = cli(
        "-m", "hydra/sweeper=rlbench_optuna", "algo=ppo", "debug=fast",
        "algo.learning_rate=choice(1e30, 3e-4)", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.enqueue_trials=[{algo.learning_rate:1e30},{algo.learning_rate:3e-4}]",
        "hydra.sweeper.pruner.name=none", f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.max_failure_rate=1.0",  # the default 0.0 stops at the first failure
        "hydra.sweeper.study_name=diverging", *mlflow_store.overrides(),
    )  # fmt: skip
    assert result.code == 0, result.err[-3000:]
    assert "1 complete, 0 pruned, 1 failed" in result.out

    import optuna

    trials = optuna.load_study(study_name="diverging", storage=storage).get_trials()
    assert [(t.params["algo.learning_rate"], t.state.name) for t in trials] == [
        (1e30, "FAIL"),
        (3e-4, "COMPLETE"),
    ]
    children = {
        r.data.tags["rlbench.sweep.trial_number"]: r
        for r in mlflow_store.runs()
        if "mlflow.parentRunId" in r.data.tags
    }
    assert children["0"].info.status == "FAILED"
    assert children["0"].data.tags["rlbench.diverged"] == "true"
    assert children["1"].info.status == "FINISHED"
