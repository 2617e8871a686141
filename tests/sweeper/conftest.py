"""Run the toy Hydra app (``toy_app.py``) as a real multirun and read its Optuna study back."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

TOY_APP = Path(__file__).with_name("toy_app.py")


def toy_command(*overrides: str) -> list[str]:
    return [sys.executable, str(TOY_APP), "-m", *overrides]


def toy_env() -> dict[str, str]:
    env = os.environ.copy()
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture
def run_toy(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """``run_toy(*overrides)``: a multirun of the toy app in ``tmp_path`` (its outputs/ there)."""

    def run(
        *overrides: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            toy_command(*overrides),
            cwd=tmp_path,
            env=toy_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"toy sweep failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc

    return run


@pytest.fixture
def popen_toy(tmp_path: Path) -> Callable[..., subprocess.Popen]:
    """``popen_toy(*overrides)``: the same multirun started in the background (text pipes)."""

    def start(*overrides: str) -> subprocess.Popen:
        return subprocess.Popen(
            toy_command(*overrides),
            cwd=tmp_path,
            env=toy_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    return start


@pytest.fixture
def study(tmp_path: Path) -> Callable[..., object]:
    """``study(name="toy_app")``: the study the toy sweeps wrote to ``tmp_path/outputs``."""
    import optuna

    def load(name: str = "toy_app") -> optuna.Study:
        storage = f"sqlite:///{tmp_path / 'outputs' / 'optuna.db'}"
        return optuna.load_study(study_name=name, storage=storage)

    return load
