"""What a sweeper checks of a job before its first one runs: the values rlbench-train refuses.

A sweep launched with a searched value that cannot work (``algo.n_epochs=choice(0,5)``) used to
find out at that trial, with the study already made and earlier trials spent. The sweepers
call :func:`check_job` on the jobs they compose up front (the grid: every value of every swept
key; Optuna: every choice and both ends of every range), so the command stops before anything
exists, with the same message the job would have given.
"""

from __future__ import annotations

from omegaconf import DictConfig

from rlbench.config import check_config


def check_job(job: DictConfig) -> None:
    """``UserError`` for what rlbench-train would refuse before building anything: the config's
    values (:func:`rlbench.config.check_config`) and the algorithm's settings, judged without an
    env (:meth:`rlbench.agents.Agent.check_settings`: SB3's ranges, Q-learning's, unknown keys).
    Imports the algorithm's module (torch for PPO/DQN), as the job itself will."""
    check_config(job)
    from rlbench.agents import agent_class

    name = job.algo.get("name")
    if name:
        agent_class(str(name)).check_settings(job.algo)
