"""The sweeper's structured config, registered as ``hydra/sweeper=rlbench_optuna``.

Keys follow hydra-optuna-sweeper (``storage``, ``study_name``, ``n_trials``, ``n_jobs``,
``direction``, ``sampler``, ``params``) plus ``pruner``, ``trial_seeds`` and the heartbeat that
detects trials whose process died.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class SamplerConf:
    # tpe | random | cmaes | gp | nsgaii; kwargs go to the Optuna sampler's constructor
    name: str = "tpe"
    # trial n samples with a seed made of seed and n: reproducible, never repeating a draw when a
    # study resumes or is shared; null = unseeded
    seed: Any = 0
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class PrunerConf:
    # median | percentile | hyperband | successive_halving | threshold | none
    name: str = "median"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class RlbenchOptunaSweeperConf:
    _target_: str = (
        "hydra_plugins.rlbench_optuna_sweeper.rlbench_optuna_sweeper.RlbenchOptunaSweeper"
    )
    # any SQLAlchemy URL (postgresql://user@host/db shares a study between machines)
    storage: str = "sqlite:///outputs/optuna.db"
    # null: the Hydra job name (e.g. "train"); the search presets name studies by algo and env
    study_name: Any = None
    # the TOTAL for the study: rerunning the command continues it up to this many trials
    n_trials: int = 20
    # trials launched at a time through the configured Hydra launcher
    n_jobs: int = 1
    # maximize | minimize, or a list of them for a multi-objective study (the job returns a tuple)
    direction: Any = "maximize"
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    # train each configuration on this many seeds (seed, seed+1, ...); the objective is their mean
    trial_seeds: int = 1
    # the config key that holds the training seed
    seed_key: str = "seed"
    # seconds between heartbeats of running trials; a trial silent for grace_period is retried
    heartbeat_interval: int = 10
    grace_period: Any = None  # null: 3 * heartbeat_interval
    # how often one configuration is retried after its process died
    max_retry: int = 2
    # search space: key -> override expression, e.g. algo.gamma: tag(log, interval(0.9, 0.9999))
    params: dict[str, Any] = field(default_factory=dict)
    # configurations to try first, once per study (e.g. the defaults): [{algo.upper: 80.0, ...}]
    enqueue_trials: list[Any] = field(default_factory=list)


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="rlbench_optuna",
    node=RlbenchOptunaSweeperConf,
    provider="rlbench",
)
