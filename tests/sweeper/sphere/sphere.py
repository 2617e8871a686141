"""A Hydra app as a hydra-optuna-sweeper user writes one: a function to minimise, no rlbench.

f(x, y) = x^2 + y^2 has its minimum 0 at (0, 0). ``error=true`` makes every job raise, for the
failure-rate cases. Its configs (``conf/``) are the official docs' and tests' with only the
sweeper's name changed (``hydra/sweeper: rlbench_optuna``).
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="config")
def sphere(cfg: DictConfig) -> float:
    if cfg.get("error", False):
        raise RuntimeError("cfg.error is True")
    return float(cfg.x) ** 2 + float(cfg.y) ** 2


if __name__ == "__main__":
    sphere()
