"""Moved to :mod:`rlbench.run` (the Hydra app is :mod:`rlbench.run.main`, the job
:mod:`rlbench.run.train`); this module keeps ``rlbench.train`` imports and
``python -m rlbench.train`` working."""

from rlbench.config import CONF_DIR, check_config, env_spec
from rlbench.run.main import app, main
from rlbench.run.train import TrainOutcome, build_env, train

__all__ = [
    "CONF_DIR",
    "TrainOutcome",
    "app",
    "build_env",
    "check_config",
    "env_spec",
    "main",
    "train",
]

if __name__ == "__main__":
    main()
