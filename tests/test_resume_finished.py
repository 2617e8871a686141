"""``resume=true`` on a configuration that already finished: reuse the run, train nothing.

A killed grid (``experiment=benchmark``, 180 jobs) is rerun with ``resume=true``: the jobs that
finished are not trained again, the interrupted one continues from its checkpoint. A finished run
is reused only when the code that made it is the code that runs now (same clean commit).
"""

from __future__ import annotations

import pytest

from rlbench.tracking import provenance
from rlbench.tracking.schema import CODE_TAG, RUN_KEY_TAG, SCORE_METRIC

COMMIT = "c0ffee" * 6 + "c0fe"


def compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    from rlbench.config import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.fixture
def job(mlflow_store, tmp_path, monkeypatch):
    """Run one threshold job in-process against the test store; ``git`` sets the checkout."""
    from rlbench.run.train import train

    monkeypatch.chdir(tmp_path)
    checkout = {"commit": COMMIT, "dirty": "false"}
    monkeypatch.setattr(provenance, "git_state", lambda repo=None: tuple(checkout.values()))

    def run(*overrides: str, **git: str):
        checkout.update(git)
        algo = [] if any(o.startswith("algo=") for o in overrides) else ["algo=threshold"]
        cfg = compose(
            *algo, "debug=fast", f"train.checkpoint_dir={tmp_path}/ck",
            *(f"tracking.{k}={v}" for k, v in mlflow_store.tracking_cfg().items() if v),
            *overrides,
        )  # fmt: skip
        return train(cfg)

    return run


def test_a_finished_configuration_is_reused_not_retrained(job, mlflow_store):
    first = job("seed=1")
    again = job("seed=1", "resume=true")
    assert again.reused and not first.reused
    assert (again.run_id, again.score, again.steps) == (first.run_id, first.score, first.steps)
    (run,) = mlflow_store.runs()
    assert run.data.tags[CODE_TAG] == COMMIT and RUN_KEY_TAG in run.data.tags


def test_without_resume_the_configuration_trains_again(job, mlflow_store):
    job("seed=1")
    assert not job("seed=1").reused
    assert len(mlflow_store.runs()) == 2


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"commit": "d" * 40}, "another commit made the finished run"),
        ({"dirty": "true"}, "the checkout has uncommitted changes"),
    ],
)
def test_other_code_is_trained_afresh(job, mlflow_store, change, why):
    job("seed=1")
    assert not job("seed=1", "resume=true", **change).reused, why
    assert len(mlflow_store.runs()) == 2


def test_another_configuration_is_trained(job, mlflow_store):
    job("seed=1")
    assert not job("seed=2", "resume=true").reused
    assert not job("seed=1", "algo.lower=30", "resume=true").reused
    assert len(mlflow_store.runs()) == 3


def test_a_failed_run_is_not_reused(job, mlflow_store):
    job("seed=1")
    (run,) = mlflow_store.runs()
    mlflow_store.client().set_terminated(run.info.run_id, "FAILED")
    assert not job("seed=1", "resume=true").reused


def test_other_library_versions_are_trained_afresh(job, mlflow_store, monkeypatch):
    job("seed=1")
    versions = provenance.package_versions() | {"torch": "9.9.9"}
    monkeypatch.setattr(provenance, "package_versions", lambda: versions)
    assert not job("seed=1", "resume=true").reused  # results may differ under another torch


def test_a_run_without_its_final_metrics_is_not_reused(job, mlflow_store):
    """Its last batch (final evaluation, ``train/total_steps``) was lost: a periodic score is
    not the run's result."""
    first = job("seed=1")
    client = mlflow_store.client()
    run = client.get_run(first.run_id)
    damaged = client.create_run(run.info.experiment_id, tags=dict(run.data.tags))
    client.log_metric(damaged.info.run_id, SCORE_METRIC, 1e9, step=1024)
    client.set_terminated(damaged.info.run_id, "FINISHED")
    client.delete_tag(first.run_id, RUN_KEY_TAG)  # only the damaged copy matches now
    assert not job("seed=1", "resume=true").reused


def test_a_sweep_trial_is_not_reused(job, mlflow_store):
    """A trial's run is the sweep's (the report leaves it out), even with the same config."""
    from rlbench.tracking import make_tracker

    parent = make_tracker(mlflow_store.tracking_cfg(background=False))
    parent_id = parent.start("sweep", {}, {"rlbench.sweep.role": "parent"})
    first = job("seed=1")
    mlflow_store.client().set_tag(first.run_id, "mlflow.parentRunId", parent_id)
    assert not job("seed=1", "resume=true").reused
    parent.end("FINISHED")


def test_a_run_without_the_jobs_tracking_tags_is_not_reused(job):
    """``rlbench-report benchmark=X`` selects runs by tag: a reused run must carry it."""
    job("seed=1")
    assert not job("seed=1", "resume=true", "+tracking.tags.benchmark=X").reused
    assert job("seed=1", "resume=true", "+tracking.tags.benchmark=X").reused


QLEARNING = ("algo=qlearning", "train.checkpoint_every=512", "train.eval_every=0")


def killed_after_first_checkpoint(job, monkeypatch) -> None:
    """A Q-learning job that dies right after writing its first checkpoint."""
    from rlbench.run.checkpoints import CheckpointDir

    save = CheckpointDir.save

    def save_then_die(self, agent, state, *, best=False):
        save(self, agent, state, best=best)
        raise KeyboardInterrupt

    monkeypatch.setattr(CheckpointDir, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        job(*QLEARNING)
    monkeypatch.setattr(CheckpointDir, "save", save)


def test_a_run_resumed_under_other_code_is_never_reused(job, mlflow_store, monkeypatch):
    """Killed after a checkpoint at one commit, resumed at another: the run mixes two codes."""
    killed_after_first_checkpoint(job, monkeypatch)
    resumed = job(*QLEARNING, "resume=true", commit="e" * 40)
    tags = mlflow_store.client().get_run(resumed.run_id).data.tags
    assert tags["rlbench.resumed_from_step"] != "0"
    assert tags[CODE_TAG] == "mixed"
    assert not job(*QLEARNING, "resume=true", commit="e" * 40).reused  # no one code made it


def test_a_run_resumed_under_the_same_code_is_reused(job, monkeypatch):
    killed_after_first_checkpoint(job, monkeypatch)
    resumed = job(*QLEARNING, "resume=true")
    again = job(*QLEARNING, "resume=true")
    assert again.reused and again.run_id == resumed.run_id


def test_a_hydra_config_left_in_the_process_does_not_break_a_run(job, mlflow_store):
    """``rlbench-train --cfg all`` (or a failed compose) in a notebook leaves Hydra's config set
    without an output folder; a later ``train(cfg)`` in that process writes to its own."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from rlbench.config import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        leftover = hydra_compose("train", return_hydra_config=True)
    HydraConfig.instance().set_config(leftover)
    try:
        assert not job("seed=1").reused
    finally:
        HydraConfig.instance().cfg = None
    assert len(mlflow_store.runs()) == 1
