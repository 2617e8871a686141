"""The sweeper's structured config, registered as ``hydra/sweeper=rlbench_optuna``.

The keys and defaults are hydra-optuna-sweeper's (``sampler`` from the ``hydra/sweeper/sampler``
group, TPE by default; ``direction`` minimize, ``storage`` null = in memory, ``n_trials`` 20,
``n_jobs`` 2, ``max_failure_rate`` 0.0, ``params``, ``custom_search_space`` and the deprecated
``search_space``), so its documented configs work with only the sweeper's name changed. rlbench's
own keys sit beside them: ``pruner``, ``trial_seeds``, the heartbeat and ``enqueue_trials``;
``sampler`` and ``pruner`` also take rlbench's short form ``{name, seed, kwargs}``. The
``search=`` presets set storage, direction, pruner, n_jobs and failure rate explicitly.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

#: the ``hydra/sweeper/sampler`` group: Optuna's constructor arguments with Optuna's defaults.
#: Plain (not structured) nodes, so that rlbench's ``{name, seed, kwargs}`` form can be merged
#: over the default one and be told apart from it (see ``_study.sampler_factory``).
SAMPLER_GROUP: dict[str, dict[str, Any]] = {
    "tpe": {
        "_target_": "optuna.samplers.TPESampler",
        "seed": None,
        "n_startup_trials": 10,
        "n_ei_candidates": 24,
        "multivariate": False,
    },
    "random": {"_target_": "optuna.samplers.RandomSampler", "seed": None},
    "cmaes": {
        "_target_": "optuna.samplers.CmaEsSampler",
        "seed": None,
        "x0": None,
        "sigma0": None,
        "n_startup_trials": 1,
        "independent_sampler": None,
        "warn_independent_sampling": True,
        "consider_pruned_trials": False,
        "popsize": None,
        "use_separable_cma": False,
        "with_margin": False,
        "lr_adapt": False,
        "source_trials": None,
    },
    "nsgaii": {
        "_target_": "optuna.samplers.NSGAIISampler",
        "seed": None,
        "population_size": 50,
        "mutation_prob": None,
        "crossover_prob": 0.9,
        "swapping_prob": 0.5,
        "constraints_func": None,
    },
    # the grid comes from the search space (``search_space: null``), as upstream builds it
    "grid": {"_target_": "optuna.samplers.GridSampler", "seed": None, "search_space": None},
    "qmc": {
        "_target_": "optuna.samplers.QMCSampler",
        "seed": None,
        "qmc_type": "sobol",
        "scramble": False,
        "independent_sampler": None,
        "warn_asynchronous_seeding": True,
        "warn_independent_sampling": True,
    },
    # ours: Gaussian-process Bayesian optimisation and exhaustive search of discrete spaces
    "gp": {
        "_target_": "optuna.samplers.GPSampler",
        "seed": None,
        "n_startup_trials": 10,
        "deterministic_objective": False,
    },
    "bruteforce": {"_target_": "optuna.samplers.BruteForceSampler", "seed": None},
    # removed in Optuna 4: kept as an option so that choosing it says what to use instead
    "motpe": {"_target_": "optuna.samplers.MOTPESampler", "seed": None},
}


@dataclass
class RlbenchOptunaSweeperConf:
    _target_: str = (
        "hydra_plugins.rlbench_optuna_sweeper.rlbench_optuna_sweeper.RlbenchOptunaSweeper"
    )
    # the sampler and pruner nodes reach the sweeper as config: it builds one sampler per trial
    _recursive_: bool = False
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    # an Optuna sampler as {_target_: optuna.samplers.X, seed, <constructor arguments>}, chosen
    # with hydra/sweeper/sampler=tpe|random|cmaes|nsgaii|grid|qmc|gp|bruteforce; or rlbench's
    # {name: tpe, seed: 0, kwargs: {...}}. With a seed, trial n samples with a seed made of seed
    # and n: reproducible, and never repeating a draw when a stored study resumes.
    sampler: Any = MISSING
    # minimize | maximize, or a list of them for several objectives (the job returns a tuple)
    direction: Any = "minimize"
    # null: the study lives in memory (no resume, no pruning through the storage, no heartbeat);
    # any SQLAlchemy URL keeps it (postgresql://user@host/db shares it between machines)
    storage: Any = None
    # null: the Hydra job name (e.g. "train"); the search presets name studies by algo and env
    study_name: Any = None
    # the TOTAL for the study: rerunning the command on a stored study continues it up to this
    n_trials: int = 20
    # trials launched at a time through the configured Hydra launcher
    n_jobs: int = 2
    # share of failed trials in a batch above which the sweep stops (non-zero exit); 0.0: the
    # first failed trial stops it, 1.0: failures never stop it
    max_failure_rate: float = 0.0
    # search space: key -> override expression, e.g. algo.gamma: tag(log, interval(0.9, 0.9999))
    params: Any = None
    # deprecated form of params: key -> {type: int|float|categorical, low, high, step, log, choices}
    search_space: Any = None
    # dotted path to fn(cfg, trial) that suggests more parameters (".module.fn": beside the app)
    custom_search_space: Any = None
    # {_target_: optuna.pruners.X, <arguments>} or rlbench's {name: median|percentile|hyperband|
    # successive_halving|threshold|none, kwargs: {...}}; none (or null): no pruning
    pruner: Any = field(default_factory=lambda: {"name": "none", "kwargs": {}})
    # train each configuration on this many seeds (seed, seed+1, ...); the objective is their mean
    trial_seeds: int = 1
    # the config key that holds the training seed
    seed_key: str = "seed"
    # seconds between heartbeats of running trials; a trial silent for grace_period is retried
    heartbeat_interval: int = 10
    grace_period: Any = None  # null: 3 * heartbeat_interval
    # how often one configuration is retried after its process died
    max_retry: int = 2
    # configurations to try first, once per study (e.g. the defaults): [{algo.upper: 80.0, ...}]
    enqueue_trials: list[Any] = field(default_factory=list)
    # upstream main's streaming interface for Hydra 1.4 launchers: accepted, and ignored (trials
    # go out in batches of n_jobs through any launcher)
    experiment_sequence: Any = None


store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="rlbench_optuna", node=RlbenchOptunaSweeperConf,
            provider="rlbench")  # fmt: skip
for _name, _node in SAMPLER_GROUP.items():
    store.store(
        group="hydra/sweeper/sampler",
        name=_name,
        node=OmegaConf.create(_node, flags={"struct": False}),
        provider="rlbench",
    )
