"""What the Hydra apps say about themselves: their help, a group they do not have, shell
completion without a subcommand, ``--version``; and the store default the argparse commands'
help states. Each is one ``error:`` line and exit 2 when it is a mistake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlbench import __version__, cli

BIN = Path(sys.executable).parent
HYDRA_APPS = ("rlbench-train", "rlbench-report", "rlbench-live")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env |= {"OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def one_error(result: subprocess.CompletedProcess) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert "Exception" not in errors[0] and "ValueError" not in errors[0], errors[0]
    return errors[0]


def test_the_reports_help_is_its_own(tmp_path):
    shown = run("rlbench-report", "--help", cwd=tmp_path).stdout
    for key in ("benchmark=", "filter=", "tracking.uri=", "output_dir=", "min_seeds",
                "bootstrap.reps", "rlbench-report benchmark=quick"):  # fmt: skip
        assert key in shown, key
    assert "powered by Hydra" not in shown
    assert "algo:" not in shown and "Configuration groups" not in shown  # rlbench-train's


def test_a_group_the_report_does_not_have_is_one_line_naming_its_settings(tmp_path):
    line = one_error(run("rlbench-report", "algo=ppo", cwd=tmp_path))
    assert "rlbench-report has no config group 'algo'" in line
    assert "benchmark=" in line and "bootstrap.*" in line and "min_seeds=" in line


def test_the_report_refuses_a_group_added_with_a_plus(tmp_path):
    """conf/ holds rlbench-train's groups: +debug=fast composed, and was silently ignored."""
    line = one_error(run("rlbench-report", "+debug=fast", cwd=tmp_path))
    assert "rlbench-report has no config group 'debug'" in line
    assert list(tmp_path.iterdir()) == []  # refused before any report work


def test_adding_a_group_train_already_has_says_drop_the_plus(tmp_path):
    line = one_error(run("rlbench-train", "+debug=fast", cwd=tmp_path))
    assert (
        line == "error: rlbench-train already has the config group 'debug': write debug=fast (no +)"
    )


def test_any_hydra_apps_missing_group_names_the_app(monkeypatch):
    from hydra.errors import ConfigCompositionException

    monkeypatch.setattr(sys, "argv", ["rlbench-live", "algo=ppo"])
    err = ConfigCompositionException("Could not override 'algo'. No match in the defaults list.")
    assert cli.describe(err) == "rlbench-live has no config group 'algo' (see rlbench-live --help)"
    assert cli.exit_code(err) == cli.EXIT_USER_ERROR


@pytest.mark.parametrize("app", HYDRA_APPS)
def test_shell_completion_without_a_subcommand_is_a_usage_line(app, tmp_path):
    line = one_error(run(app, "-sc", cwd=tmp_path))
    assert f'eval "$({app} -sc install=bash)"' in line
    unknown = one_error(run(app, "-sc", "install=tcsh", cwd=tmp_path))
    assert "no shell completion for 'tcsh': choose one of bash" in unknown


@pytest.mark.parametrize("app", HYDRA_APPS)
def test_version_names_rlbench_and_hydra(app, tmp_path):
    import hydra

    done = run(app, "--version", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == f"{app} {__version__} (Hydra {hydra.__version__})"


@pytest.mark.parametrize("command", [["rlbench-registry"], ["rlbench-registry", "list"],
                                     ["rlbench-serve"]])  # fmt: skip
def test_the_store_default_in_help_is_the_environment_first(command, tmp_path):
    shown = " ".join(run(*command, "--help", cwd=tmp_path).stdout.split())
    assert "default: MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db" in shown
    assert "embedded" not in shown
