"""``rlbench-report``: build the comparison report of finished runs (see ``conf/report.yaml``).

    rlbench-report benchmark=quick          # the runs of `rlbench-train experiment=quick`
    rlbench-report name=spike "filter=\"params.`env.load` = 'spike'\""

Bad input (no runs, no such metric, an unreachable store) is one line on stderr and exit code 2;
the report's path is printed last on success.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

from rlbench import cli
from rlbench.config import CONF_DIR
from rlbench.errors import UserError
from rlbench.tracking.redaction import MaskingStream
from rlbench.tracking.schema import BENCHMARK_TAG, SCORE_METRIC

if TYPE_CHECKING:
    from rlbench.results.report import ReportSettings

# ${coalesce:a,b}: the first value that is set (conf/report.yaml names the report after it)
OmegaConf.register_new_resolver(
    "coalesce", lambda *values: next((v for v in values if v is not None), None), replace=True
)


def settings_from(cfg: DictConfig) -> ReportSettings:
    """The :class:`~rlbench.results.report.ReportSettings` of a composed ``report`` config."""
    from rlbench.results.report import ReportSettings
    from rlbench.tracking.store import resolve_uri

    return ReportSettings(
        experiment=str(cfg.tracking.experiment),
        filter=run_filter(cfg),
        name=str(cfg.name),
        output_dir=_path(cfg, "output_dir"),
        tracking_uri=resolve_uri(cfg.tracking.uri),
        metric=str(cfg.metric) if cfg.metric else SCORE_METRIC,
        direction=str(cfg.direction),
        baseline=str(cfg.baseline),
        min_seeds=_number(cfg, "min_seeds", int),
        reps=_number(cfg, "bootstrap.reps", int),
        confidence=_number(cfg, "bootstrap.confidence", float),
        seed=_number(cfg, "seed", int),
        log_to_mlflow=_switch(cfg, "log_to_mlflow"),
        ui_url=cfg.tracking.get("ui_url"),
    )


def _path(cfg: DictConfig, key: str) -> str:
    value = OmegaConf.select(cfg, key)
    if not isinstance(value, str) or not value:
        raise UserError(f"{key} must be a folder path, got {value!r}")
    return value


def _number(cfg: DictConfig, key: str, kind: type) -> Any:
    """``cfg``'s ``key`` as an int (or float); its range is ReportSettings.check's to say."""
    value = OmegaConf.select(cfg, key)
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and (kind is float or float(value).is_integer())):
        raise UserError(
            f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}"
        )
    return kind(value)


def _switch(cfg: DictConfig, key: str) -> bool:
    value = OmegaConf.select(cfg, key)
    if not isinstance(value, bool):
        raise UserError(f"{key} must be true or false, got {value!r}")
    return value


def run_filter(cfg: DictConfig) -> str | None:
    """The MLflow filter: ``filter`` AND the ``benchmark`` tag shortcut, either optional."""
    parts = [str(cfg.filter)] if cfg.filter else []
    if cfg.get("benchmark"):
        parts.append(f"tags.{BENCHMARK_TAG} = '{cfg.benchmark}'")
    return " and ".join(parts) or None


def refuse_added_groups() -> None:
    """``+debug=fast`` composes one of rlbench-train's groups (conf/ is shared) into a config
    the report never reads: refused rather than silently ignored."""
    from hydra.core.hydra_config import HydraConfig

    added = [g for g in HydraConfig.get().runtime.choices if not g.startswith("hydra/")]
    if added:
        raise UserError(cli.no_such_group(added[0]))


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="report")
def app(cfg: DictConfig) -> None:
    """Build the report, print its path; user errors are one line and exit code 2."""
    cli.set_store_options(cli.HYDRA_STORE)  # a report reads runs: no running without a store
    for noisy in ("mlflow", "alembic", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        refuse_added_groups()
        from rlbench.results.report import build_report

        path = build_report(settings_from(cfg))
    except UserError as err:
        if cli.wants_traceback():
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(cli.EXIT_USER_ERROR)
    print(f"report: {path.resolve()}")


def main() -> None:
    """The ``rlbench-report`` console script."""
    cli.run_app(app, wrap_stdout=MaskingStream, config=(CONF_DIR, "report"))


def console() -> None:
    """The installed ``rlbench-report``: :func:`main`, then a quick exit (``cli.console``)."""
    cli.console(main)


if __name__ == "__main__":  # python -m: the ordinary exit (profilers write on it)
    main()
