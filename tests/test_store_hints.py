"""Every command's store hints name that command's own options.

An unreachable tracking server used to end every command with "... or
tracking.uri=sqlite:///outputs/mlflow.db, or tracking.enabled=false": rlbench-report has no
``tracking.enabled``, rlbench-live refuses ``tracking.enabled=false``, and the argparse commands
take ``--tracking-uri`` (and ``--no-track`` or ``--no-tracking``). Each command here is run
against a port nothing listens on, and every option its hint names is checked against what the
command accepts: an argparse command's ``--help`` of the (sub)command that ran, a Hydra app's
composed config, and for a Hydra app's switch that turns tracking off, the app itself run with
it (rlbench-live composes ``tracking.enabled=false`` and then refuses it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
UNREACHABLE = "http://127.0.0.1:9"
MODEL = "models:/nothing@champion"
SERVER_LINE = "start it (mlflow server --host 127.0.0.1 --port PORT)"

# command line (without the store), the store's option, the arguments of its --help
ARGPARSE: dict[str, tuple[list[str], list[str], list[str]]] = {
    "verify": (["rlbench-verify"], ["--tracking-uri", UNREACHABLE], ["rlbench-verify"]),
    "ope": (
        ["rlbench-ope", "a-log", "--policy", "threshold"],
        ["--tracking-uri", UNREACHABLE],
        ["rlbench-ope"],
    ),
    "collect": (
        ["rlbench-collect", "--policy", MODEL, "--episodes", "1", "--out", "log"],
        ["--tracking-uri", UNREACHABLE],
        ["rlbench-collect"],
    ),
    "forecast train": (
        ["rlbench-forecast", "train"],
        ["--tracking-uri", UNREACHABLE],
        ["rlbench-forecast", "train"],
    ),
    "forecast evaluate": (
        ["rlbench-forecast", "evaluate", MODEL],
        ["--tracking-uri", UNREACHABLE],
        ["rlbench-forecast", "evaluate"],
    ),
    "registry, store after the subcommand": (
        ["rlbench-registry", "list"],
        ["--tracking-uri", UNREACHABLE],
        ["rlbench-registry", "list"],
    ),
    "serve": (["rlbench-serve", MODEL], ["--tracking-uri", UNREACHABLE], ["rlbench-serve"]),
    "live-demo": (
        ["rlbench-live-demo", "--model", f"ppo={MODEL}", "--no-render"],
        ["--tracking-uri", UNREACHABLE],
        ["rlbench-live-demo"],
    ),
}
HYDRA: dict[str, list[str]] = {
    "train": ["rlbench-train", "debug=fast", "algo=threshold", "train.progress=off"],
    "report": ["rlbench-report"],
    "live": ["rlbench-live"],
}


def run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env |= {"OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def hint_of(result: subprocess.CompletedProcess) -> str:
    """What the unreachable-server line suggests after "start it (mlflow server ...)"."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert f"MLflow tracking server {UNREACHABLE} is unreachable" in errors[0]
    assert SERVER_LINE in errors[0]
    return errors[0].partition(SERVER_LINE)[2]


@pytest.mark.parametrize("case", ARGPARSE)
def test_an_argparse_commands_store_hint_names_its_own_flags(case, tmp_path):
    command, store, help_args = ARGPARSE[case]
    hint = hint_of(run([*command, *store], tmp_path))
    assert "--tracking-uri sqlite:///outputs/mlflow.db" in hint
    assert not re.search(r"\b[a-z_]+\.[a-z_]+=", hint), f"a Hydra key in {hint!r}"
    shown = run([*help_args, "--help"], tmp_path).stdout
    accepted = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", shown))
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", hint))
    assert named <= accepted, f"{case}: {hint!r} names {named - accepted}, not in its --help"


def test_registry_takes_the_store_before_or_after_the_subcommand(tmp_path):
    before = hint_of(run(["rlbench-registry", "--tracking-uri", UNREACHABLE, "list"], tmp_path))
    after = hint_of(run(["rlbench-registry", "list", "--tracking-uri", UNREACHABLE], tmp_path))
    assert before == after == ", or --tracking-uri sqlite:///outputs/mlflow.db"


@pytest.mark.parametrize(
    ("case", "off"),
    [("ope", "--no-track"), ("forecast train", "--no-tracking"), ("verify", None)],
)
def test_the_way_to_run_without_a_store_is_named_where_a_command_has_one(case, off, tmp_path):
    command, store, _ = ARGPARSE[case]
    hint = hint_of(run([*command, *store], tmp_path))
    if off is None:
        assert "--no-" not in hint
    else:
        assert hint.endswith(f", or {off}")


@pytest.mark.parametrize("case", HYDRA)
def test_a_hydra_apps_store_hint_names_only_keys_it_accepts(case, tmp_path):
    command = HYDRA[case]
    hint = hint_of(run([*command, f"tracking.uri={UNREACHABLE}"], tmp_path))
    assert "--" not in hint, f"an argparse flag in {hint!r}"
    overrides = [o.rstrip(",") for o in re.findall(r"\b[a-z_]+(?:\.[a-z_]+)+=\S+", hint)]
    assert "tracking.uri=sqlite:///outputs/mlflow.db" in overrides
    for override in overrides:
        composed = run([*command, override, "--cfg", "job"], tmp_path)
        assert composed.returncode == 0, f"{case}: {override}: {composed.stderr}"
    for override in overrides:  # a switch that turns tracking off: the app must take it
        if override.startswith("tracking.uri="):
            continue
        followed = run([*command, override, f"tracking.uri={UNREACHABLE}"], tmp_path)
        assert followed.returncode == 0, f"{case}: following {override}: {followed.stderr}"


def test_a_missing_store_file_is_named_with_the_commands_own_option(tmp_path):
    missing = f"sqlite:///{tmp_path}/none.db"
    said = {
        "report": run(["rlbench-report", f"tracking.uri={missing}"], tmp_path).stderr,
        "verify": run(["rlbench-verify", "--tracking-uri", missing], tmp_path).stderr,
        "registry": run(["rlbench-registry", "list", "--tracking-uri", missing], tmp_path).stderr,
        "forecast evaluate": run(
            ["rlbench-forecast", "evaluate", MODEL, "--tracking-uri", missing], tmp_path
        ).stderr,
    }
    assert "point tracking.uri / MLFLOW_TRACKING_URI at your store" in said["report"]
    for case in ("verify", "registry"):
        assert "point --tracking-uri / MLFLOW_TRACKING_URI at your store" in said[case], said
    # its own hint (register a forecaster first) used to send the user to the variable alone
    assert "point --tracking-uri / MLFLOW_TRACKING_URI at the store" in said["forecast evaluate"]


def test_the_ui_hint_names_the_store_the_run_went_to(monkeypatch, tmp_path):
    """MLFLOW_TRACKING_URI set but empty: the run went to the embedded store, and the hint
    said "the tracking server's UI" (no server) instead of how to start the UI on it."""
    from omegaconf import OmegaConf

    from rlbench.run.main import ui_hint

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    hint = ui_hint(OmegaConf.create({"tracking": {"uri": ""}}))
    assert hint.startswith("start it with: ") and f"sqlite:///{tmp_path}/outputs/mlflow.db" in hint
    assert ui_hint(OmegaConf.create({"tracking": {"uri": "http://mlflow:5000"}})) == (
        "the tracking server's UI"
    )
