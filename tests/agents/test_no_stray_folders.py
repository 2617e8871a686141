"""Training leaves nothing behind outside its run: SB3's default logger made an empty
``$TMPDIR/SB3-<time>`` folder at every learn() (thousands after a test suite)."""

from __future__ import annotations

import pytest

from rlbench.agents import build_agent
from rlbench.envs import make_vec


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
@pytest.mark.parametrize("loop", ["numpy", "sb3"])
def test_learning_makes_no_sb3_log_folder(algo, loop, tmp_path, monkeypatch):
    folder = tmp_path / "sb3-logs"
    monkeypatch.setenv("SB3_LOGDIR", str(folder))  # where SB3's default logger would write
    venv = make_vec("rlbench/Autoscaling-v0", 2, seed=0)
    settings = {"name": algo, "loop": loop}
    settings |= {"n_steps": 64, "batch_size": 32} if algo == "ppo" else {"learning_starts": 0}
    agent = build_agent(settings, venv, seed=0, device="cpu")
    agent.learn(256)
    assert agent.num_steps >= 256
    assert not folder.exists()
    venv.close()
