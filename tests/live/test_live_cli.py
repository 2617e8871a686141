"""``rlbench-live``'s mistakes: one ``error:`` line naming the setting, exit code 2, before the
session starts (not at its first retraining, minutes later)."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import pytest

from rlbench.tracking import schema

CASES = {
    "unknown retrain algo": (["retrain.algo=nope"], r"retrain\.algo=nope: unknown algo option"),
    "unknown gate estimator": (["gate.estimator=xx"], r"gate\.estimator='xx': choose one of"),
    "unknown env": (["env=nope"], r"env=nope: unknown env option 'nope'"),
    "unknown source kind": (["source.kind=foo"], r"source\.kind='foo': choose one of sim"),
    "tracking off": (["tracking.enabled=false"], r"needs a tracking store"),
    "no decisions": (["decisions=0"], r"decisions must be an integer >= 1"),
    "a gate alpha outside (0, 1)": (["gate.alpha=2"], r"gate\.alpha must be a number strictly"),
    "a rollback alpha of 1": (["rollback.alpha=1"], r"rollback\.alpha must be a number strictly"),
    "a report period of 0": (["report_every=0"], r"report_every must be an integer >= 1"),
    "decisions that are no number": (["decisions=abc"], r"decisions must be an integer"),
    "too few bootstrap replicates": (["gate.n_boot=0"], r"gate\.n_boot must be an integer >= 10"),
    "no training steps": (["retrain.steps=0"], r"retrain\.steps must be an integer >= 1"),
    "a holdout share above one": (["retrain.holdout=1.5"], r"retrain\.holdout must be a number"),
    "a wrong key": (["gate.estimatr=dr"], r"gate\.estimatr"),
    "a canary of one episode an arm": (
        ["canary.episodes=1"],
        r"canary\.episodes must be 0 \(off\) or an integer >= 2 .*got 1$",
    ),
    "a negative canary": (["canary.episodes=-3"], r"canary\.episodes must be an integer >= 0"),
    "a canary share of 1": (
        ["canary.share=1"],
        r"canary\.share must be a number strictly between 0 and 1, got 1$",
    ),
    "a canary alpha of 0": (["canary.alpha=0"], r"canary\.alpha must be a number strictly"),
    "an early stop at 1": (["canary.stop_alpha=1"], r"canary\.stop_alpha must be a number"),
    "a canary count that is no number": (["canary.episodes=abc"], r"canary\.episodes must be"),
    "a forecast feed for the oracle": (
        ["+env_args.horizon=12", "+env_args.forecast=oracle"],
        r"env_args\.forecast=oracle reads the true future",
    ),
    "a forecast feed without a queue": (
        ["+env_args.horizon=12", "+env_args.forecast=naive", "forecast.queue=0"],
        r"forecast\.queue must be",
    ),
    "a scheduler source with another env": (
        ["env=autoscaling", "source=scheduler", "source.schedule=jobs.yaml"],
        r"source=scheduler needs env=scheduler .*env=autoscaling is rlbench/Autoscaling-v0",
    ),
    "a drift window shorter than two blocks": (
        ["triggers.drift.window=5"],
        r"error: triggers\.drift needs blocks >= 2 and window >= 2 \* blocks",
    ),
    "an unknown trigger": (["+triggers.foo=1"], r"error: triggers\.foo: unknown trigger"),
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


def test_rlbench_train_help_shows_none_of_the_live_groups(capsys, monkeypatch):
    """rlbench-live's config lives in conf_live/: its source/ and experiment presets never show
    among rlbench-train's groups."""
    from hydra.core.global_hydra import GlobalHydra

    from rlbench.run import main as train

    monkeypatch.setattr(sys, "argv", ["rlbench-train", "--help"])
    with pytest.raises(SystemExit):
        train.main()
    GlobalHydra.instance().clear()
    out = capsys.readouterr().out
    assert "experiment: " in out and "benchmark" in out  # the groups are listed
    assert "source" not in out and "drift" not in out and "scheduler, sim" not in out


def test_a_recorded_trace_is_replayed_as_the_autoscaling_load(tmp_path):
    """source=trace: the autoscaling environment on load=trace, the CSV's counts as arrivals."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rlbench.config import CONF_LIVE_DIR
    from rlbench.live.cli import make_adapter

    trace = tmp_path / "trace.csv"
    trace.write_text("requests\n" + "\n".join(str(500 + 10 * i) for i in range(40)) + "\n")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_LIVE_DIR, version_base="1.3"):
        cfg = compose("live", overrides=["source=trace", f"source.trace_path={trace}"])
    adapter = make_adapter(cfg, "rlbench/Autoscaling-v0", {"horizon": 10, "noise": 0.0})
    adapter.reset(seed=0)
    arrivals = [adapter.step(1)[4]["influx"] for _ in range(10)]
    assert len(set(arrivals)) == 10 and all(500 <= a <= 890 for a in arrivals)


def test_the_first_champion_and_the_fallback_are_the_envs_own_rule():
    """threshold reads load and queue, which only the autoscaling envs report: a scheduler
    session starts from the scheduler seed's rule (and its kill switch falls back to it)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rlbench.config import CONF_LIVE_DIR

    expected = {
        "autoscaling": "threshold",
        "scheduler": "user_feedback",
        "recommender": "recommender_rule",
        "selfhealing": "runbook",
        "gym": "random",
    }
    for env, rule in expected.items():
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONF_LIVE_DIR, version_base="1.3"):
            cfg = compose("live", overrides=[f"env={env}"])
        assert (cfg.initial, cfg.fallback) == (rule, rule), env
    GlobalHydra.instance().clear()


def test_every_example_of_the_help_builds_its_source(tmp_path):
    """The commands `rlbench-live --help` shows compose and give an adapter (source=scheduler
    used to need an env=scheduler the example did not show, and failed on the env's arguments)."""
    import yaml
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rlbench.config import CONF_LIVE_DIR
    from rlbench.live.cli import _env, make_adapter

    header = yaml.safe_load((Path(CONF_LIVE_DIR) / "live.yaml").read_text())["hydra"]["help"]
    examples = [ln.split()[1:] for ln in header["header"].splitlines() if "rlbench-live " in ln]
    assert len(examples) == 3 and any("source=scheduler" in e for e in examples)
    schedule = tmp_path / "jobs.yaml"
    schedule.write_text("scripts:\n  - {name: job, command: [/bin/true], interval_minutes: 60}\n")
    for args in examples:
        args = [a.replace("jobs.yaml", str(schedule)) for a in args]
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONF_LIVE_DIR, version_base="1.3"):
            cfg = compose("live", overrides=[*args, f"folder={tmp_path / 'f'}"])
        env_id, kwargs, _ = _env(cfg)
        adapter = make_adapter(cfg, env_id, kwargs)
        try:
            assert adapter.env_id == env_id, args
        finally:
            adapter.close()
    GlobalHydra.instance().clear()


def test_ctl_approve_says_when_the_waiting_session_has_ended(tmp_path, capsys):
    """A session SIGKILLed while its challenger waited leaves control/awaiting_approval: ctl
    printed "approve v106" and queued an answer nobody would read."""
    import subprocess

    from rlbench.live.control import main as ctl
    from rlbench.tracking.provenance import process_tag

    folder = tmp_path / "s"
    (folder / "control").mkdir(parents=True)
    (folder / schema.LIVE_STATE_FILE).write_text("{}")
    awaiting = folder / "control" / schema.LIVE_AWAITING_FILE
    gone = subprocess.Popen(["sleep", "30"])
    tag = process_tag(gone.pid)
    gone.kill()
    gone.wait()
    awaiting.write_text(f"106\n{tag}\n")
    with pytest.raises(SystemExit) as caught:
        ctl(["approve", "--folder", str(folder)])
    assert caught.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {folder}: no session is running there (v106 waited")
    assert "rerun" in line and not (folder / "control" / "approve").exists()
    awaiting.write_text(f"106\n{process_tag()}\n")  # a session that runs: the answer is queued
    ctl(["reject", "--folder", str(folder)])
    assert capsys.readouterr().out.startswith("reject v106: ")
    assert (folder / "control" / "reject").exists()


def test_ctl_retrain_during_a_canary_says_it_waits(tmp_path, capsys):
    """The retraining asked for during a canary was postponed without a word."""
    import json

    from rlbench.live.control import main as ctl

    folder = tmp_path / "s"
    folder.mkdir()
    (folder / schema.LIVE_STATE_FILE).write_text(json.dumps({"canary": {"version": "4"}}))
    ctl(["retrain", "--folder", str(folder)])
    out = capsys.readouterr().out
    assert "v4 is in its canary: the retraining starts when that ends" in out
    assert (folder / "control" / "retrain").exists()
    (folder / schema.LIVE_STATE_FILE).write_text(json.dumps({"canary": None, "shadow": None}))
    ctl(["retrain", "--folder", str(folder)])
    assert "canary" not in capsys.readouterr().out
