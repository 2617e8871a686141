"""``rlbench-live``'s mistakes: one ``error:`` line naming the setting, exit code 2, before the
session starts (not at its first retraining, minutes later)."""

from __future__ import annotations

import logging
import re
import sys

import pytest

CASES = {
    "unknown retrain algo": (["retrain.algo=nope"], r"retrain\.algo=nope: unknown algo option"),
    "unknown gate estimator": (["gate.estimator=xx"], r"gate\.estimator='xx': choose one of"),
    "unknown env": (["env=nope"], r"env=nope: unknown env option 'nope'"),
    "unknown source kind": (["source.kind=foo"], r"source\.kind='foo': choose one of sim"),
    "tracking off": (["tracking.enabled=false"], r"needs a tracking store"),
    "no decisions": (["decisions=0"], r"decisions must be >= 1"),
    "a wrong key": (["gate.estimatr=dr"], r"gate\.estimatr"),
    "a schedule that is not there": (
        ["env=scheduler", "source=scheduler", "source.schedule=missing.yaml"],
        r"cannot read the schedule file missing\.yaml",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_mistake_is_one_line_and_exit_2(case, mlflow_store, tmp_path, monkeypatch, capsys):
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from rlbench.live import cli

    args, message = CASES[case]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["rlbench-live", *mlflow_store.overrides(), *args])
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with pytest.raises(SystemExit) as stop:
            cli.main()
    finally:
        root.handlers[:], root.level = handlers, level
        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2
    assert err[-1].startswith("error: ")
    assert re.search(message, err[-1]), err
    assert not (tmp_path / "outputs" / "live" / "default" / "log").exists()  # nothing decided
