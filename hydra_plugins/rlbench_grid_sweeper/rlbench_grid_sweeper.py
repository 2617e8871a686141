"""The grid ``Sweeper``: Hydra's ``BasicSweeper`` that checks a covering set of jobs up front."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig


@dataclass
class GridSweeperConf:
    """``BasicSweeperConf``'s keys and defaults (``max_batch_size``, ``params``)."""

    _target_: str = "hydra_plugins.rlbench_grid_sweeper.rlbench_grid_sweeper.GridSweeper"
    # no `from __future__ import annotations` here: OmegaConf reads these types, and Hydra's
    # plugin scan imports this module outside sys.modules, where dataclasses cannot resolve them
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[dict[str, str]] = None  # noqa: UP045


ConfigStore.instance().store(group="hydra/sweeper", name="rlbench_grid", node=GridSweeperConf)


def covering(batch: Sequence[Sequence[str]]) -> list[Sequence[str]]:
    """The jobs of ``batch``, in order, that bring an override no earlier kept job had.

    Every value of every swept key is composed at least once: a misspelt group option or a
    value of the wrong type still stops the grid before its first job. For a product of
    ``n1 x n2 x ...`` values that is at most ``n1 + n2 + ...`` jobs.
    """
    seen: set[str] = set()
    kept = []
    for overrides in batch:
        new = set(overrides) - seen
        if new:
            kept.append(overrides)
            seen |= new
    return kept


class GridSweeper(BasicSweeper):
    """Hydra's basic sweeper, validating :func:`covering` of each batch instead of all of it,
    and, for rlbench-train, the values of those jobs (:func:`rlbench.run.job_checks.check_job`).

    A failure that only a combination of values triggers is reported by that job where the
    launcher composes it, as with a launcher on another machine.
    """

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose :func:`covering` of ``batch``; for rlbench-train's config also check every
        value as the job will (a ``seed=-1`` stops the grid before ``seed=0`` trains)."""
        loader = self.hydra_context.config_loader
        for overrides in covering(batch):
            job = loader.load_sweep_config(self.config, sweep_overrides=list(overrides))
            _check_values(job, overrides)


def _check_values(job: DictConfig, overrides: Sequence[str]) -> None:
    from rlbench.config import is_train_config
    from rlbench.errors import UserError
    from rlbench.run.job_checks import check_job

    if is_train_config(job):
        try:
            check_job(job)
        except UserError as err:
            raise UserError(f"{err} (in the job with overrides {list(overrides)})") from None
