"""What a sweeper checks of a job before its first one runs: the values rlbench-train refuses.

A sweep launched with a searched value that cannot work (``algo.n_epochs=choice(0,5)``) used to
find out at that trial, with the study already made and earlier trials spent. The sweepers
call :func:`check_job` on the jobs they compose up front (the grid: every value of every swept
key; Optuna: every choice and both ends of every range), so the command stops before anything
exists, with the same message the job would have given. :func:`learned_settings` is what a
continued study must share with its earlier trials.
"""

from __future__ import annotations

from collections.abc import Iterable

from omegaconf import DictConfig, OmegaConf

from rlbench.config import check_config, check_seed_overlap
from rlbench.tracking import schema


def check_job(job: DictConfig, *, env: bool = True) -> None:
    """``UserError`` for what rlbench-train would refuse before learning anything: the config's
    values (:func:`rlbench.config.check_config`), the algorithm's settings judged without an
    env (:meth:`rlbench.agents.Agent.check_settings`: SB3's ranges, Q-learning's, unknown keys)
    and, with ``env``, one copy of the environment built (``env.load=bogus`` is refused by its
    constructor). Imports the algorithm's module (torch for PPO/DQN), as the job itself will."""
    check_config(job)
    check_seed_overlap(job)
    from rlbench.agents import agent_class

    name = job.algo.get("name")
    if name:
        agent_class(str(name)).check_settings(job.algo)
    if env:
        from rlbench.config import env_spec
        from rlbench.envs.forecasters import with_local_model
        from rlbench.run.train import build_env

        env_id, env_kwargs = env_spec(job.env)
        store = OmegaConf.select(job, "tracking.uri", default=None)
        build_env(env_id, with_local_model(env_kwargs, store), 1, int(job.seed)).close()


#: settings that change what a run writes or how fast, not what it learns or scores
NOT_LEARNED = (
    "train.checkpoint_dir", "train.checkpoint_every", "train.threads", "eval.trajectory_plot",
)  # fmt: skip


def learned_settings(job: DictConfig, searched: Iterable[str]) -> dict[str, str]:
    """The job's settings that decide what its trials learn, minus the ``searched`` keys: what
    every trial of one study must share (a study continued with ``env.horizon`` changed would
    rank trials of two problems together). Where runs are stored, progress, resume and the
    checkpoint folder do not count (:data:`rlbench.run.checkpoints.VOLATILE_KEYS`). Values as
    written, interpolations unresolved (some name the job's number, unknown before it runs)."""
    from rlbench.run.checkpoints import VOLATILE_KEYS, without_keys
    from rlbench.run.inputs import input_digests
    from rlbench.tracking import flatten_config

    volatile = set(VOLATILE_KEYS) - {"tuned"}  # tuned=false trains without the env's preset
    skip = (*volatile, *NOT_LEARNED, "hydra", "reproduce", *searched)
    out = without_keys(flatten_config(job, resolve=False), skip)
    try:  # the files the config names, by content: a changed trace is another problem
        digests = input_digests(job)
    except Exception:  # an unresolvable interpolation: the job itself will say what is wrong
        digests = {}
    for key, digest in digests.items():  # by content: how its path is spelt does not count
        if digest != "missing":
            out.pop(key, None)
    return out | {f"{schema.INPUTS_PARAM_PREFIX}{k}": v for k, v in digests.items()}
