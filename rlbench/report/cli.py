"""``rlbench-report``: build the comparison report of finished runs (see ``conf/report.yaml``).

    rlbench-report name=quick "filter=\"tags.benchmark = 'quick'\""

Bad input (no runs, no such metric, an unreachable store) is one line on stderr and exit code 2;
the report's path is printed last on success.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from rlbench.errors import UserError

if TYPE_CHECKING:
    from rlbench.report.build import ReportSettings

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def settings_from(cfg: DictConfig) -> ReportSettings:
    """The :class:`~rlbench.report.build.ReportSettings` of a composed ``report`` config."""
    from rlbench.report.build import ReportSettings
    from rlbench.tracking import resolve_uri

    return ReportSettings(
        experiment=str(cfg.tracking.experiment),
        filter=str(cfg.filter) if cfg.filter else None,
        name=str(cfg.name),
        output_dir=str(cfg.output_dir),
        tracking_uri=resolve_uri(cfg.tracking.uri),
        metric=str(cfg.metric),
        direction=str(cfg.direction),
        baseline=str(cfg.baseline),
        min_seeds=int(cfg.min_seeds),
        reps=int(cfg.bootstrap.reps),
        confidence=float(cfg.bootstrap.confidence),
        seed=int(cfg.seed),
        log_to_mlflow=bool(cfg.log_to_mlflow),
    )


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="report")
def main(cfg: DictConfig) -> None:
    """Build the report, print its path; user errors are one line and exit code 2."""
    for noisy in ("mlflow", "alembic", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        from rlbench.report.build import build_report

        path = build_report(settings_from(cfg))
    except UserError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"report: {path.resolve()}")


if __name__ == "__main__":
    main()
