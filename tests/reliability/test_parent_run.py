"""The sweep's MLflow parent run: one per study under parallel starts, and children that a dead
process left RUNNING are ended once their trial is no longer running."""

from __future__ import annotations

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from hydra_plugins.rlbench_optuna_sweeper import _parent_run
from hydra_plugins.rlbench_optuna_sweeper._parent_run import ABANDONED, ParentRun
from rlbench.tracking import make_tracker
from rlbench.tracking.schema import PARENT_RUN_ATTR

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def sweep_config(mlflow_store, tmp_path):
    tracking = mlflow_store.tracking_cfg(background=False)
    return OmegaConf.create({"tracking": tracking, "hydra": {"sweep": {"dir": str(tmp_path)}}})


def test_a_parent_that_lost_the_race_on_a_server_storage_is_discarded(
    mlflow_store, tmp_path, monkeypatch
):
    """Two workers start at once on a storage no lock file can guard (a database server): the
    study keeps the last parent written; the other worker trashes its own and joins that one."""
    study = optuna.create_study(study_name="s")  # in memory, standing in for a server storage
    rival = make_tracker(mlflow_store.tracking_cfg(background=False))
    rival_id = rival.start("sweep-s", {}, {"rlbench.sweep.role": "parent"})
    set_attr = study.set_user_attr

    def set_then_overwritten(key, value):  # the rival writes its parent right after us
        set_attr(key, value)
        set_attr(key, rival_id)

    monkeypatch.setattr(study, "set_user_attr", set_then_overwritten)
    monkeypatch.setattr(_parent_run, "SETTLE_S", 0.0)
    parent = ParentRun.start(
        sweep_config(mlflow_store, tmp_path), study, {}, "postgresql://db/optuna"
    )
    assert parent.run_id == rival_id == study.user_attrs[PARENT_RUN_ATTR]
    from mlflow.entities import ViewType

    client = mlflow_store.client()
    experiment = client.get_experiment_by_name("rlbench").experiment_id
    runs = client.search_runs([experiment], run_view_type=ViewType.ALL)  # with the trashed
    by_stage = {r.info.lifecycle_stage: r for r in runs}
    assert sorted(by_stage) == ["active", "deleted"]
    assert by_stage["active"].info.run_id == rival_id
    assert by_stage["deleted"].info.status == "KILLED"
    parent.tracker.end("FINISHED")
    rival.end("FINISHED")


def test_children_left_running_are_ended_once_their_trial_is_over(mlflow_store, tmp_path):
    study = optuna.create_study(study_name="s")
    dead, alive = study.ask(), study.ask()
    study.tell(dead, state=TrialState.FAIL)  # its process died; the trial was failed since
    parent = ParentRun.start(sweep_config(mlflow_store, tmp_path), study, {}, "")
    orphans = {}
    for trial in (dead, alive):  # child runs whose jobs never ended them
        child = make_tracker(mlflow_store.tracking_cfg(background=False))
        orphans[trial.number] = child.start(
            "child", {}, {"rlbench.sweep.trial_number": str(trial.number)},
            parent_run_id=parent.run_id,
        )  # fmt: skip
    assert parent.end_abandoned_children(study) == [orphans[dead.number]]
    client = mlflow_store.client()
    ended = client.get_run(orphans[dead.number])
    assert ended.info.status == "FAILED" and ended.data.tags["error"] == ABANDONED
    assert client.get_run(orphans[alive.number]).info.status == "RUNNING"  # may still be alive
    study.tell(alive, 1.0)
    parent.finish(study, "FINISHED")  # the sweep's end looks again
    assert client.get_run(orphans[alive.number]).info.status == "FAILED"
    assert client.get_run(parent.run_id).info.status == "FINISHED"


def test_a_child_that_ends_while_another_worker_looks_is_not_failed(
    mlflow_store, tmp_path, monkeypatch
):
    """Parallel workers: while one looks for abandoned children, a job in another process ends
    its run and then its trial. The run was RUNNING when listed and its trial is COMPLETE a moment
    later; it must stay FINISHED (CI once saw such a healthy child ended FAILED)."""
    study = optuna.create_study(study_name="s")
    trial = study.ask()
    parent = ParentRun.start(sweep_config(mlflow_store, tmp_path), study, {}, "")
    child = make_tracker(mlflow_store.tracking_cfg(background=False))
    run_id = child.start(
        "child", {}, {"rlbench.sweep.trial_number": str(trial.number)},
        parent_run_id=parent.run_id,
    )  # fmt: skip
    listed = parent.tracker.running_runs

    def listed_then_the_job_ends(filter_string=""):
        runs = listed(filter_string)  # the run is RUNNING as the query reads it ...
        child.end("FINISHED")  # ... then the job in the other process ends it,
        study.tell(trial, 1.0)  # and its sweeper tells the trial
        return runs

    monkeypatch.setattr(parent.tracker, "running_runs", listed_then_the_job_ends)
    assert parent.end_abandoned_children(study) == []
    assert mlflow_store.client().get_run(run_id).info.status == "FINISHED"
    parent.tracker.end("FINISHED")
