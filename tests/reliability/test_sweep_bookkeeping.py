"""Sweep bookkeeping under failures: a trial whose process died before its first heartbeat is
retried (not waited for forever); a configuration two starting processes both enqueued runs once."""

from __future__ import annotations

import time

import pytest
from optuna.trial import TrialState


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_that_never_sent_a_heartbeat_is_requeued_after_the_grace_period(tmp_path):
    import optuna

    from hydra_plugins.rlbench_optuna_sweeper._study import Heartbeat, fail_stale, open_storage

    rdb = open_storage(f"sqlite:///{tmp_path}/optuna.db", 1, 1, 2)
    study = optuna.create_study(study_name="s", storage=rdb)
    orphan = study.ask()  # created, then its process died before any heartbeat
    orphan.suggest_float("x", 0.0, 1.0)
    alive = study.ask()
    with Heartbeat(rdb, 1) as heartbeat:
        heartbeat.add(alive._trial_id)  # a live process keeps beating for this one
        fail_stale(study, rdb)
        assert [t.state for t in study.get_trials()] == [TrialState.RUNNING] * 2  # too early
        time.sleep(1.3)  # past the 1 s grace period
        fail_stale(study, rdb)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    retry = study.get_trials()[2]
    assert retry.system_attrs["retry_history"] == [orphan.number]
    assert retry.params == {"x": orphan.params["x"]}


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_configuration_enqueued_twice_by_parallel_starters_is_recognised(tmp_path):
    import optuna

    from hydra_plugins.rlbench_optuna_sweeper._study import duplicate_of, open_storage, requeue

    rdb = open_storage(f"sqlite:///{tmp_path}/optuna.db", 1, 1, 2)
    study = optuna.create_study(study_name="s", storage=rdb)
    for _ in range(2):  # two processes, each finding nothing queued yet
        study.enqueue_trial({"x": 0.5})
    first, second, sampled = study.ask(), study.ask(), study.ask()
    for t in (first, second, sampled):
        t.suggest_float("x", 0.0, 1.0)
    trials = rdb.get_all_trials(study._study_id)
    assert [duplicate_of(trials, t) for t in trials] == [None, first.number, None]
    requeue(study, first._trial_id, max_retry=2)  # its process died: the retry is no duplicate
    trials = rdb.get_all_trials(study._study_id)
    assert trials[-1].params == {"x": 0.5} and duplicate_of(trials, trials[-1]) is None
