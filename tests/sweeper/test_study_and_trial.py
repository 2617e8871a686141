"""The storage-side rules (budget claims, re-queueing) and the job-side TrialContext."""

from __future__ import annotations

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hydra_plugins.rlbench_optuna_sweeper._space import SweepError
from hydra_plugins.rlbench_optuna_sweeper._study import (
    admitted,
    claims,
    make_sampler,
    open_storage,
    requeue,
    trial_seed,
)
from rlbench.errors import UserError
from rlbench.run.trial import TrialContext, make_pruner
from rlbench.tracking.schema import PRUNED_ATTR, PRUNER_ATTR

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")
X = FloatDistribution(0.0, 1.0)


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'sub' / 'optuna.db'}"  # the sub/ directory is created


@pytest.fixture
def rdb(url):
    return open_storage(url, heartbeat_interval=1, grace_period=None, max_retry=2)


def new_study(rdb, directions=("maximize",)):
    return optuna.create_study(storage=rdb, study_name="s", directions=list(directions))


def test_a_trial_beyond_the_budget_goes_back_to_waiting(rdb):
    study = new_study(rdb)
    for value in (1.0, 2.0):
        trial = study.ask()
        assert admitted(study, rdb, trial._trial_id, n_trials=2)
        study.tell(trial, value)
    extra = study.ask()
    assert not admitted(study, rdb, extra._trial_id, n_trials=2)
    assert rdb.get_trial(extra._trial_id).state == TrialState.WAITING
    assert len(claims(study.get_trials())) == 2


def test_an_interrupted_trial_is_requeued_with_its_params_and_stops_counting(rdb):
    study = new_study(rdb)
    trial = study.ask()
    x = trial._suggest("x", X)
    requeue(study, trial._trial_id, max_retry=2)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.WAITING]
    assert claims(study.get_trials()) == []
    again = study.ask()  # pops the waiting copy
    assert again.number == 1
    assert again._suggest("x", X) == x
    assert [t.number for t in claims(study.get_trials())] == [1]


def test_trial_seeds_are_reproducible_and_never_repeat():
    seeds = [trial_seed(0, n) for n in range(1000)]
    assert len(set(seeds)) == 1000
    assert trial_seed(0, 7) == trial_seed(0, 7) != trial_seed(1, 7)
    assert trial_seed(None, 7) is None


@pytest.mark.parametrize("name", ["tpe", "random", "cmaes", "gp", "nsgaii"])
def test_every_sampler_draws_reproducibly_from_its_seed_and_trial_number(name):
    if name == "cmaes":
        pytest.importorskip("cmaes")

    def draws() -> list[float]:
        study = optuna.create_study(direction="minimize")
        out = []
        for _ in range(4):
            trial = study.ask()
            study.sampler = make_sampler(name, trial_seed(0, trial.number), {})
            x = trial._suggest("x", X)
            study.tell(trial, (x - 0.3) ** 2)
            out.append(x)
        return out

    first = draws()
    assert first == draws()
    assert len(set(first)) == 4 and all(0.0 <= x <= 1.0 for x in first)


def test_unknown_sampler_pruner_and_storage_are_one_line_errors(tmp_path):
    with pytest.raises(SweepError, match=r"unknown sampler 'sobol'; choose one of tpe, random"):
        make_sampler("sobol", 0, {})
    with pytest.raises(SweepError, match="unexpected keyword argument 'bogus'"):
        make_sampler("random", 0, {"bogus": 1})
    with pytest.raises(UserError, match="unknown pruner 'early'; choose one of median"):
        make_pruner("early")
    with pytest.raises(SweepError, match="cannot open the Optuna storage nosuchdb://h/db") as err:
        open_storage("nosuchdb://h/db", 1, None, 0)
    assert "\n" not in str(err.value)


def trial_cfg(url, trial, seed_index=0, total_steps=500):
    return OmegaConf.create(
        {
            "train": {"total_steps": total_steps},
            "trial": {
                "storage": url,
                "study": "s",
                "number": trial.number,
                "id": trial._trial_id,
                "parent_run_id": "abc",
                "seed_index": seed_index,
            },
        }
    )


def test_no_trial_key_means_no_sweep():
    assert TrialContext.from_cfg(OmegaConf.create({"seed": 0})) is None


def test_report_goes_through_the_storage_with_the_sweep_pruner(url, rdb):
    study = new_study(rdb)
    trial = study.ask()
    spec = {"name": "threshold", "kwargs": {"lower": 0.0}}
    rdb.set_trial_system_attr(trial._trial_id, PRUNER_ATTR, spec)
    ctx = TrialContext.from_cfg(trial_cfg(url, trial, seed_index=2, total_steps=500))
    assert ctx.parent_run_id == "abc"
    assert ctx.mlflow_tags()["rlbench.sweep.trial_number"] == "0"
    assert ctx.report(100, 3.0) is False  # above the threshold: go on
    assert ctx.report(200, -1.0) is True  # below it: prune
    ctx.mark_pruned()
    stored = rdb.get_trial(trial._trial_id)
    # seed 2 of the trial reports after seeds 0 and 1: steps shifted by 2 * 500
    assert stored.intermediate_values == {1100: 3.0, 1200: -1.0}
    assert stored.system_attrs[PRUNED_ATTR] is True


def test_multi_objective_trials_never_prune(url, rdb):
    study = new_study(rdb, directions=("maximize", "minimize"))
    trial = study.ask()
    ctx = TrialContext.from_cfg(trial_cfg(url, trial))
    assert ctx.report(1, -1e9) is False
    assert rdb.get_trial(trial._trial_id).intermediate_values == {}


def test_a_trial_of_an_in_memory_study_neither_prunes_nor_writes():
    """storage null: the job cannot reach the study, so it reports nothing and is never told
    to stop; its run still nests under the sweep's parent run."""
    cfg = OmegaConf.create(
        {"trial": {"storage": None, "study": "s", "number": 3, "id": 3, "parent_run_id": "p"}}
    )
    ctx = TrialContext.from_cfg(cfg)
    assert ctx.storage is None and ctx.parent_run_id == "p"
    assert ctx.report(1, -1e9) is False
    ctx.mark_pruned()
    ctx.record_run("run-id", ["score"])
    assert ctx._trial is None  # no storage was ever opened
    assert ctx.run_name("ppo-x") == "trial-3-ppo-x"
