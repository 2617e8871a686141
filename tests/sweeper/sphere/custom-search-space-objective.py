"""Part of the search space in the config, part in Python (``custom_search_space``).

z is searched within ``max_z_difference_from_x`` of the sampled x; +w is a new key, so its
parameter name carries the ``+`` its override needs.
"""

import hydra
from omegaconf import DictConfig
from optuna.trial import Trial


@hydra.main(version_base=None, config_path="custom-search-space", config_name="config")
def four_dimensional_sphere(cfg: DictConfig) -> float:
    return float(cfg.w) ** 2 + float(cfg.x) ** 2 + float(cfg.y) ** 2 + float(cfg.z) ** 2


def configure(cfg: DictConfig, trial: Trial) -> None:
    x = trial.params["x"]
    trial.suggest_float("z", x - cfg.max_z_difference_from_x, x + cfg.max_z_difference_from_x)
    trial.suggest_float("+w", 0.0, 1.0)


if __name__ == "__main__":
    four_dimensional_sphere()
