"""The ``cli`` fixture: ``rlbench-train`` run in this process, as a user would run it."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from reliability_kit import CliResult


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., CliResult]:
    """``cli(*args)``: ``rlbench-train *args`` in this process (in ``tmp_path``), as a user
    would run it: returns the exit code and what it printed. A few ms instead of a 3 s process.
    """
    from rlbench.run import main as train

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["rlbench-train", *args])
        code = 0
        saved = _logging_state()
        try:
            train.main()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        finally:
            _restore_logging(saved)
            _forget_hydra()
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def _forget_hydra() -> None:
    """Hydra keeps the last job's config in process-wide singletons; in-process code run by a
    later test (``train(cfg)``) must not see this test's job."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


def _logging_state() -> dict[str, tuple]:
    """Handlers and levels of every logger: Hydra reconfigures logging for each job, with
    handlers bound to this test's captured streams, which later tests must not write to."""
    loggers = [logging.getLogger(), *map(logging.getLogger, list(logging.root.manager.loggerDict))]
    return {lg.name: (lg, lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in loggers}


def _restore_logging(saved: dict[str, tuple]) -> None:
    for name in list(logging.root.manager.loggerDict):
        if name not in saved:
            logging.getLogger(name).handlers[:] = []
    for logger, handlers, level, propagate, disabled in saved.values():
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate, logger.disabled = propagate, disabled
