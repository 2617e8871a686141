"""``rlbench-forecast``: a tracked, registered training whose ``models:/`` reference the
environment's ``make_forecaster`` loads, and one-line mistakes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rlbench.envs import forecasters
from rlbench.envs.lstm_forecaster import load_forecaster
from rlbench.forecast import cli
from rlbench.tracking import schema

TINY = ["--patterns", "sine_curve", "--window", "8", "--hidden", "4", "--epochs", "1"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_train_tracks_registers_and_the_env_loads_it_by_alias(
    mlflow_store, console, tmp_path, cache, monkeypatch
):
    out = tmp_path / "f"
    store = ["--tracking-uri", mlflow_store.uri]
    args = ["train", *TINY, "--out", str(out), *store, "--register", "fc", "--alias", "prod"]
    proc = console(cli.main, *args)
    assert proc.returncode == 0, proc.stderr
    assert "sine_curve" in proc.stdout and "registered models:/fc/1 (alias prod)" in proc.stdout
    (run,) = mlflow_store.runs(schema.FORECAST_EXPERIMENT)
    assert run.info.status == "FINISHED"
    assert run.data.tags[schema.KIND_TAG] == schema.FORECAST_KIND
    assert run.data.params["window"] == "8"
    assert schema.forecast_metric("sine_curve", "lstm", "mae") in run.data.metrics
    assert schema.train_metric("loss") in run.data.metrics

    local = load_forecaster(out)
    history = np.random.default_rng(0).uniform(500, 3500, (5, 8))
    t = np.arange(100, 105)
    expected = local.predict(history, t, 288.0)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store.uri)
    for ref in ("models:/fc@prod", "models:/fc/1", "models:/fc@latest"):
        f = forecasters.make_forecaster("lstm", 6, 288, ref)
        np.testing.assert_array_equal(f.predict(history, t, 288.0), expected)
        assert (f.window, f.steps) == (8, 6)
    assert len(list((cache / "rlbench" / "forecasters").iterdir())) == 1  # one download

    for ref, words in [
        ("models:/fc@nope", "no alias 'nope'"),
        ("models:/missing@prod", "no registered model 'missing'"),
        ("models:/fc/7", "no version '7'"),
    ]:
        with pytest.raises(ValueError) as excinfo:
            forecasters.make_forecaster("lstm", 6, 288, ref)
        assert words in str(excinfo.value) and "\n" not in str(excinfo.value)

    proc = console(cli.main, "evaluate", "models:/fc@prod", "--patterns", "spike", *store)
    assert proc.returncode == 0, proc.stderr
    assert "spike" in proc.stdout and "last_value" in proc.stdout

    # the policy registry's commands name a forecaster version as such, not "No such file: MLmodel"
    from rlbench.errors import UserError
    from rlbench.tracking import registry

    for call in (registry.promote, registry.load_version):
        with pytest.raises(UserError, match="is a load forecaster") as excinfo:
            call("fc", "1", tracking_uri=mlflow_store.uri)
        assert "MLmodel" not in str(excinfo.value) and "\n" not in str(excinfo.value)

    # a training run whose observation carries the registered forecaster records its weights
    cmd = [str(Path(sys.executable).parent / "rlbench-train"), *mlflow_store.overrides()]
    cmd += [
        "algo=threshold",
        "debug=fast",
        "env.forecast=lstm",
        "env.forecast_model=models:/fc@prod",
        "env.period=288",  # the forecaster's (debug=fast's horizon, 64, would be refused)
    ]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = mlflow_store.runs()
    digest = json.loads((out / "forecaster.json").read_text())["weights_sha256"]
    assert run.data.tags[schema.FORECASTER_TAG] == f"sha256:{digest}"
    assert run.data.params["env.forecast_model"] == "models:/fc/1"  # pinned: the alias's now


def test_a_missing_store_is_one_line(tmp_path, cache):
    from rlbench.forecast.registry import local_model_dir

    with pytest.raises(ValueError, match="no MLflow store") as excinfo:
        local_model_dir("models:/fc@prod", f"sqlite:///{tmp_path}/none.db")
    assert "\n" not in str(excinfo.value)


def test_train_without_tracking_writes_the_folder(console, tmp_path):
    proc = console(
        cli.main, "train", *TINY, "--steps", "3", "--no-tracking", "--out", str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    f = load_forecaster(tmp_path)
    assert f.steps == 3 and f.meta["training"]["patterns"] == ["sine_curve"]
    assert set(f.meta["metrics"]["sine_curve"]) == {"lstm", "naive", "last_value"}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["train", "--window", "0"], "--window must be an integer >= 1"),
        (["train", "--window", "1200"], "--window 1200 leaves no window to learn or score"),
        (["train", "--learning-rate", "1e300"], "--learning-rate must be in (0, 1]"),
        (["train", "--tracking-uri", "foo://bar"], "MLflow has no foo:// store"),
        (["train", "--patterns", "trace"], "--traces FILE.csv"),
        (["train", "--patterns", "spikes"], "unknown pattern 'spikes'"),
        (["train", "--register", "x", "--no-tracking"], "drop --no-tracking"),
        (["train", "--alias", "prod"], "--alias needs --register"),
        (["train", "--register", "--alias", "latest"], "reserved"),
        (["train", "--traces", "nowhere.csv"], "no such file"),
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["evaluate", "nowhere"], "no such folder"),
        (["fly"], "invalid choice: 'fly'"),
        ([], "the following arguments are required"),
    ],
)
def test_mistakes_exit_2_with_one_line(console, args, words):
    proc = console(cli.main, *args)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert words in proc.stderr
