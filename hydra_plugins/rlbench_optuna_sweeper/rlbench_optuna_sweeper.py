"""The ``Sweeper`` Hydra instantiates; it hands over to ``_sweep``, which imports Optuna."""

from __future__ import annotations

import os
import sys
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class RlbenchOptunaSweeper(Sweeper):
    """Optuna study ↔ Hydra launcher: ask trials, launch them as jobs, tell the results.

    A bad setting stops the sweep with one line on stderr (``error: ...``) and exit code 2, as
    ``rlbench-train`` does for a single run; ``HYDRA_FULL_ERROR=1`` shows the traceback instead.
    """

    def __init__(self, **settings: Any) -> None:
        self._settings = settings
        self._impl: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        def start() -> None:
            from ._sweep import OptunaSweep

            self._impl = OptunaSweep(**self._settings)
            self._impl.setup(
                hydra_context=hydra_context, task_function=task_function, config=config
            )

        _reporting_user_errors(start)

    def sweep(self, arguments: list[str]) -> Any:
        return _reporting_user_errors(lambda: self._impl.sweep(arguments))


def _reporting_user_errors(work: Any) -> Any:
    try:
        return work()
    except Exception as err:
        from rlbench.errors import UserError  # not at module level: plugin scans stay light

        if not isinstance(err, UserError) or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
