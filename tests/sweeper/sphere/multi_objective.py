"""Two objectives to minimise together (Binh and Korn's problem): a Pareto front, no optimum.

v0 = 4x^2 + 4y^2 pulls towards (0, 0), v1 = (x - 5)^2 + (y - 5)^2 towards (5, 5).
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="mo-conf", config_name="config")
def binh_and_korn(cfg: DictConfig) -> tuple[float, float]:
    x, y = float(cfg.x), float(cfg.y)
    return 4 * x**2 + 4 * y**2, (x - 5) ** 2 + (y - 5) ** 2


if __name__ == "__main__":
    binh_and_korn()
