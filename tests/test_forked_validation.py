"""Periodic validation forked onto the idle core (rlbench/run/forked_validation.py): the same
learning curve, best checkpoint and score as validating in the training process; a failed or
abandoned child never goes unnoticed or outlives its use."""

from __future__ import annotations

import os
import sys
import time

import pytest

from rlbench import cli
from rlbench.run import forked_validation

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="forked only on Linux")
REAL_FORK = forked_validation.fork


def compose_train(*overrides: str):
    from hydra import compose, initialize_config_dir

    from rlbench.config import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides))


def trained(mlflow_store, tmp_path, monkeypatch, *, fork: bool, algo: str):
    """One job in-process, its validations forked or not; its score, curve and best model."""
    from rlbench.run.train import train

    forks = []

    def counted(work, steps):
        forks.append(steps)
        return REAL_FORK(work, steps)

    monkeypatch.setattr(forked_validation, "available", lambda device="cpu": fork)
    monkeypatch.setattr(forked_validation, "fork", counted)
    folder = tmp_path / ("forked" if fork else "inline")
    folder.mkdir()
    monkeypatch.chdir(folder)
    cfg = compose_train(
        f"algo={algo}", "debug=fast", "train.total_steps=4096", "train.eval_every=1024",
        "eval.policy=best", f"train.checkpoint_dir={folder}/ck", f"tracking.run_name={folder.name}",
        *mlflow_store.overrides(),
    )  # fmt: skip
    outcome = train(cfg)
    client = mlflow_store.client()
    curve = [
        (m.step, m.value) for m in client.get_metric_history(outcome.run_id, "val/mean_return")
    ]
    tags = client.get_run(outcome.run_id).data.tags
    return outcome, sorted(curve), tags, forks


@pytest.mark.parametrize("algo", ["qlearning", "dqn"])
def test_forked_validation_records_what_validating_in_process_records(
    algo, mlflow_store, tmp_path, monkeypatch
):
    inline, inline_curve, inline_tags, none = trained(
        mlflow_store, tmp_path, monkeypatch, fork=False, algo=algo
    )
    forked, forked_curve, forked_tags, forks = trained(
        mlflow_store, tmp_path, monkeypatch, fork=True, algo=algo
    )
    assert none == [] and len(forks) >= 2  # the switch is real: validations were forked
    assert forked_curve == inline_curve  # every point, at its own step, with its own value
    assert forked.returns == inline.returns and forked.steps == inline.steps
    for tag in ("rlbench.scored_policy", "rlbench.scored_step"):
        assert forked_tags[tag] == inline_tags[tag]


def test_a_failed_validation_is_raised_in_the_parent_naming_its_step():
    def work():
        raise ValueError("the environment broke")

    child = forked_validation.fork(work, 3072)
    with pytest.raises(RuntimeError, match="validation at step 3072 failed: ValueError: the "):
        child.result()


def test_a_result_comes_back_whole():
    big = {"returns": list(range(50_000))}  # more than a pipe holds at once
    assert forked_validation.fork(lambda: big, 1).result() == big


def test_an_abandoned_validation_is_stopped_at_once():
    def work():
        time.sleep(60)
        return {}

    child = forked_validation.fork(work, 1)
    pid = child.pid
    started = time.monotonic()
    child.kill()
    assert time.monotonic() - started < 5
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
        os.waitpid(pid, os.WNOHANG)


def test_an_interrupted_wait_stops_the_child(monkeypatch):
    def work():
        time.sleep(60)
        return {}

    child = forked_validation.fork(work, 1)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fdopen", interrupted)
    with pytest.raises(KeyboardInterrupt):
        child.result()
    with pytest.raises(ChildProcessError):  # stopped and reaped
        os.waitpid(child.pid, os.WNOHANG)


def test_only_a_cpu_agent_forks():
    assert not forked_validation.available("cuda:0")
    assert forked_validation.available("cpu") == (cli.usable_cores() > 1)
