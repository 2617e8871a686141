"""A registered policy acts with the forecaster it was trained with, every command looks a
forecaster up in its own store, and a forecaster is refused where it does not fit (a
forecaster's run as a policy, another period)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MlflowStore

from rlbench.envs import core_of, forecasters
from rlbench.errors import UserError
from rlbench.forecast import cli
from rlbench.tracking import registry, schema

TINY = ["--patterns", "sine_curve", "--window", "8", "--hidden", "4", "--epochs", "1"]


def _train_forecaster(store: str, out: Path, seed: int) -> None:
    args = ["train", *TINY, "--seed", str(seed), "--out", str(out), "--tracking-uri", store]
    assert cli.main([*args, "--register", "fc", "--alias", "prod"]) == 0


def _sha(folder: Path) -> str:
    return json.loads((folder / "forecaster.json").read_text())["weights_sha256"]


def _forecaster_sha(venv) -> str:
    return core_of(venv).forecaster.meta["weights_sha256"]


@pytest.fixture(scope="module")
def trained(mlflow_template: Path, tmp_path_factory: pytest.TempPathFactory):
    """fc v1 (alias prod), a threshold policy trained with models:/fc@prod and registered as
    polfc, then fc v2 under prod: built once for the module (two forecasters and a training
    run; the tests only read it)."""
    root = tmp_path_factory.mktemp("pinning")
    (root / "mlflow").mkdir()
    shutil.copyfile(mlflow_template, root / "mlflow" / "mlflow.db")
    (root / "mlflow" / "mlartifacts").mkdir()
    store = MlflowStore(f"sqlite:///{root}/mlflow/mlflow.db", root / "mlflow" / "mlflow.db",
                        root / "mlflow" / "mlartifacts")  # fmt: skip
    other = f"sqlite:///{root}/other.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        _train_forecaster(store.uri, root / "f1", seed=0)
        cmd = [str(Path(sys.executable).parent / "rlbench-train"), *store.overrides()]
        cmd += ["algo=threshold", "debug=fast", "train.total_steps=2000", "env.forecast=lstm"]
        cmd += ["env.forecast_model=models:/fc@prod", "env.period=288"]
        env = {**os.environ, "MLFLOW_TRACKING_URI": other}
        done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=180, env=env)
        assert done.returncode == 0, done.stderr[-2000:]  # resolved in tracking.uri, not env's
        (run,) = store.runs()
        assert run.data.params["env.forecast_model"] == "models:/fc/1"
        registry.register(run.info.run_id, "polfc", tracking_uri=store.uri)
        _train_forecaster(store.uri, root / "f2", seed=1)
    assert _sha(root / "f1") != _sha(root / "f2")
    return store, run, root, other


@pytest.fixture
def policy(trained, monkeypatch):
    """The module's store, with MLFLOW_TRACKING_URI naming another, empty store."""
    store, run, root, other = trained
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    return store, run, root


def test_a_registered_policy_acts_with_the_forecaster_it_was_trained_with(policy):
    store, run, tmp_path = policy
    v1 = _sha(tmp_path / "f1")
    assert run.data.tags[schema.FORECASTER_TAG] == f"sha256:{v1}"
    # rlbench-serve, rlbench-collect and the live loop load through load_version; promote and
    # rollback check the version with it too
    _, venv = registry.load_version("polfc", "1", tracking_uri=store.uri)
    assert _forecaster_sha(venv) == v1  # not v2, which prod names now
    venv.close()
    # its env.json pins the version and the weights
    from mlflow.artifacts import download_artifacts

    from rlbench.tracking.client import using_store

    with using_store(store.uri):
        local = Path(download_artifacts("models:/polfc/1", dst_path=str(tmp_path / "dl")))
    (spec_file,) = local.rglob(schema.POLICY_ENV_FILE)
    spec = json.loads(spec_file.read_text())
    assert spec["env_kwargs"]["forecast_model"] == "models:/fc/1"
    assert spec["forecaster_sha256"] == v1


def test_a_version_registered_before_pinning_still_gets_its_forecaster(policy):
    """env.json with the alias and no digest (registered before this fix): the run's tag finds
    the version with the weights it was trained with."""
    from rlbench.forecast.registry import pin_policy_forecaster

    store, _, tmp_path = policy
    v1 = _sha(tmp_path / "f1")
    kwargs = {"forecast": "lstm", "forecast_steps": 6, "forecast_model": "models:/fc@prod"}
    pinned = pin_policy_forecaster(kwargs, v1, store.uri)
    assert pinned.env_kwargs["forecast_model"] == "models:/fc/1" and pinned.sha256 == v1
    with pytest.raises(UserError, match="no version of fc") as excinfo:
        pin_policy_forecaster(kwargs, "0" * 64, store.uri)
    assert "\n" not in str(excinfo.value)


def test_every_lookup_is_in_the_store_given_and_follows_the_alias(policy):
    store, _, tmp_path = policy
    # an alias is read anew in a long-lived process (it names v2 now), in the store given
    folder = forecasters.resolve_model("models:/fc@prod", store.uri)
    assert _sha(folder) == _sha(tmp_path / "f2")
    f = forecasters.make_forecaster("lstm", 6, 288, "models:/fc/1", store.uri)
    assert f.meta["weights_sha256"] == _sha(tmp_path / "f1")
    with pytest.raises(ValueError) as excinfo:
        forecasters.make_forecaster("lstm", 6, 288, "models:/fcb@prod", store.uri)
    said = str(excinfo.value)
    assert "no registered model 'fcb'" in said and str(store.db_path) in said
    assert "(registered: fc, polfc)" in said and "\n" not in said
    # the live loop's feed, given its session's store
    from rlbench.live.forecast_feed import build_feed

    kwargs = {"forecast": "lstm", "forecast_steps": 6, "forecast_model": "models:/fc/1"}
    feed = build_feed({}, kwargs, (13,), store.uri)
    assert feed is not None
    feed.close()


def test_a_forecasters_run_is_not_registered_as_a_policy(policy):
    store, _, _ = policy
    (fc_run, *_) = store.runs(schema.FORECAST_EXPERIMENT)
    with pytest.raises(UserError, match="trained a load forecaster") as excinfo:
        registry.register(fc_run.info.run_id, "fc", tracking_uri=store.uri)
    assert "\n" not in str(excinfo.value)


def test_a_forecaster_of_another_period_is_refused(tmp_path, console):
    out = tmp_path / "f"
    assert console(cli.main, "train", *TINY, "--no-tracking", "--out", str(out)).returncode == 0
    with pytest.raises(ValueError) as excinfo:
        forecasters.make_forecaster("lstm", 3, 100, str(out))
    said = str(excinfo.value)
    assert "period 288" in said and "period is 100" in said and "env.period=288" in said
    cmd = [str(Path(sys.executable).parent / "rlbench-train"), "tracking.enabled=false"]
    cmd += ["algo=threshold", "debug=fast", "env.forecast=lstm", f"env.forecast_model={out}"]
    cmd += ["env.period=100", "env.forecast_steps=3"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "period 288" in done.stderr

    for bad in (0, -5, None):
        meta = json.loads((out / "forecaster.json").read_text())
        meta["period"] = bad
        (out / "forecaster.json").write_text(json.dumps(meta))
        with pytest.raises(ValueError, match="period must be a number of steps > 0"):
            forecasters.make_forecaster("lstm", 3, 288, str(out))


def test_a_live_session_reads_its_forecaster_from_its_own_store(policy):
    """rlbench-live with tracking.uri= looked models:/fc@prod up in MLFLOW_TRACKING_URI's
    store (another, empty one here): 'no registered model'. The session's policy is polfc,
    which acts with the forecaster's observation."""
    store, _, tmp_path = policy
    cmd = [sys.executable, "-m", "rlbench.live.cli", "session=fc", "model=polfc",
           "decisions=60", "dashboard=log", *store.overrides(), "+env_args.forecast=lstm",
           "+env_args.forecast_model=models:/fc@prod", "+env_args.period=288"]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "decisions" in done.stdout + done.stderr
    # the session keeps the version prod named at its first start, after prod moves on
    state_file = tmp_path / "outputs" / "live" / "fc" / schema.LIVE_STATE_FILE
    first = json.loads(state_file.read_text())["forecast_model"]
    assert first == {"given": "models:/fc@prod", "pinned": "models:/fc/2"}
    client = store.client()
    client.set_registered_model_alias("fc", "prod", "1")
    try:
        cmd[cmd.index("decisions=60")] = "decisions=120"
        again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    finally:
        client.set_registered_model_alias("fc", "prod", "2")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "names models:/fc/1 now; the session keeps models:/fc/2" in again.stdout + again.stderr
    assert json.loads(state_file.read_text())["forecast_model"] == first


def test_collect_with_a_registered_policy_logs_in_its_own_env(policy, tmp_path):
    """rlbench-collect --policy models:/polfc@champion built the env from its own --env
    (autoscaling without a forecast: the network failed on 7 inputs for 13), and with env.*
    given it ran the policy on prod's forecaster, not the one it was trained with."""
    from rlbench.offline.cli import collect_command
    from rlbench.offline.log import read_log

    store, _, root = policy
    out = tmp_path / "log"
    args = ["--policy", "models:/polfc@champion", "--episodes", "1", "--copies", "1",
            "--out", str(out), "--tracking-uri", store.uri]  # fmt: skip
    collect_command(args)
    log = read_log(out)
    assert log.obs_shape == (13,)  # 7 + the 6 forecast steps
    (part,) = out.rglob("*.jsonl")
    header = json.loads(part.read_text().splitlines()[0])
    used = Path(header["env_kwargs"]["forecast_model"])  # v1's files, not v2's (prod now)
    assert _sha(used) == _sha(root / "f1") != _sha(root / "f2")
    with pytest.raises(UserError, match=r"acts in the env its version was registered with .*"
                                        r"drop env\.forecast_model=models:/fc@prod"):  # fmt: skip
        collect_command([*args, "--out", str(tmp_path / "x"), "env.forecast_model=models:/fc@prod"])
