"""Offline agents: trained from a log through the agent protocol, tracked like any run, and an
offline-trained policy's off-policy estimate agrees with its simulated value."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from logfakes import DAY

from rlbench.agents import build_agent, load_agent
from rlbench.envs import make_vec
from rlbench.errors import UserError
from rlbench.offline import ope
from rlbench.offline.agents import training_log
from rlbench.offline.collect import Behaviour, collect, on_policy_returns
from rlbench.offline.log import LogWriter, read_log

torch.set_num_threads(1)
AUTOSCALING = "rlbench/Autoscaling-v0"
RECOMMENDER = "rlbench/Recommender-v0"


def write_log(root, env_id, kwargs, algo, epsilon, episodes, seed=0, seconds_per_step=60.0):
    venv = make_vec(env_id, 8, seed=seed, **kwargs)
    behaviour = Behaviour(build_agent(algo, venv, seed=seed), "epsilon", epsilon)
    with LogWriter(root, env_id=env_id, obs_shape=venv.observation_space.shape,
                   n_actions=int(venv.action_space.n)) as w:  # fmt: skip
        collect(venv, behaviour, w, episodes=episodes, seed=seed, start_ts=DAY,
                seconds_per_step=seconds_per_step)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def autoscaling_log(tmp_path_factory):
    root = tmp_path_factory.mktemp("as") / "log"
    return write_log(root, AUTOSCALING, {"horizon": 32}, {"name": "threshold"}, 0.3, 24)


@pytest.mark.parametrize("algo", ["bc", "offline_dqn", "cql", "qlearning_replay"])
def test_each_offline_agent_learns_saves_and_loads(algo, autoscaling_log, tmp_path):
    venv = make_vec(AUTOSCALING, 2, seed=0, horizon=32)
    cfg = {"name": algo, "data": str(autoscaling_log)}
    if algo == "qlearning_replay":
        cfg |= {"window_days": None, "min_interactions": 0}
    agent = build_agent(cfg, venv, seed=3, device="cpu")
    seen = []
    agent.learn(3000, callback=lambda steps, stats: seen.append((steps, stats)))
    assert agent.num_steps >= 3000 and seen and all(np.isfinite(list(s.values())).all()
                                                    for _, s in seen)  # fmt: skip
    obs = read_log(autoscaling_log).obs[:50]
    pi = agent.action_probabilities(obs, deterministic=False)
    assert pi.shape == (50, 3) and np.allclose(pi.sum(axis=1), 1.0)
    path = tmp_path / f"model{agent.file_suffix}"
    agent.save(path)
    again = load_agent(path, venv)
    assert type(again) is type(agent)
    assert np.array_equal(again.predict(obs), agent.predict(obs))
    twin = build_agent(cfg, venv, seed=3, device="cpu")
    twin.learn(3000)
    assert np.array_equal(twin.action_probabilities(obs), agent.action_probabilities(obs))


def test_the_weekly_job_keeps_the_last_7_days_of_users_with_5_interactions(tmp_path):
    """Users u0..u3 with 2, 5, 6 and 8 decisions; u3's first 3 are 9 days before the rest."""
    counts = {"u0": 2, "u1": 5, "u2": 6, "u3": 8}
    with LogWriter(tmp_path, env_id=RECOMMENDER, obs_shape=(8,), n_actions=27) as w:
        for user, n in counts.items():
            for i in range(n):
                old = user == "u3" and i < 3
                w.append({
                    "ts": DAY + 10 * 86400 - (9 * 86400 if old else 0) + i, "episode": user,
                    "step": i, "obs": [0.5] * 8, "action": 1, "propensity": 1 / 27,
                    "reward": 1.0, "next_obs": [0.5] * 8, "done": False, "terminal": False,
                    "policy": "p", "policy_version": "1", "context": {"user_id": user},
                })  # fmt: skip
    venv = make_vec(RECOMMENDER, 1, seed=0)
    agent = build_agent({"name": "qlearning_replay", "data": str(tmp_path)}, venv, seed=0)
    kept = training_log(agent, agent._settings())
    # last 7 days: u3 keeps 5; users with >= 5: u1 (5), u2 (6), u3 (5) -> 16 decisions
    assert len(kept) == 16 and sorted(set(kept.user_ids())) == ["u1", "u2", "u3"]
    picky = build_agent({"name": "qlearning_replay", "data": str(tmp_path),
                         "min_interactions": 9}, venv, seed=0)  # fmt: skip
    with pytest.raises(UserError, match=r"no decisions from users with >= 9 interactions: the "
                       "window is empty"):  # fmt: skip
        picky.learn(100)


def test_an_offline_agent_without_a_log_says_how_to_give_one():
    venv = make_vec(AUTOSCALING, 1, seed=0)
    with pytest.raises(UserError, match=r"bc learns from a log: give one with data=<log folder "
                       "or file>"):  # fmt: skip
        build_agent({"name": "bc"}, venv, seed=0).learn(10)


def test_a_log_of_another_env_is_refused(autoscaling_log):
    venv = make_vec(RECOMMENDER, 1, seed=0)
    with pytest.raises(UserError, match=r"the log is from rlbench/Autoscaling-v0 \(obs_shape "
                       r"\[7\], 3 actions\), not obs_shape=\[8\]"):  # fmt: skip
        build_agent({"name": "cql", "data": str(autoscaling_log)}, venv, seed=0).learn(10)


def test_rlbench_train_trains_offline_and_records_the_log(autoscaling_log, mlflow_store,
                                                          tmp_path, monkeypatch):  # fmt: skip
    """``rlbench-train algo=cql data=<log>``: the run evaluates in the env, and the log is the
    run's dataset input (context training) with the digest of the decisions read."""
    from rlbench.offline.collect import compose
    from rlbench.run.train import train

    monkeypatch.chdir(tmp_path)
    cfg = compose([
        "algo=cql", f"data={autoscaling_log}", "debug=fast", "env.horizon=32",
        "tracking.background=false", f"train.checkpoint_dir={tmp_path}/ck",
        *mlflow_store.overrides(),
    ])  # fmt: skip
    outcome = train(cfg)
    assert np.isfinite(outcome.score) and outcome.steps >= 2048
    run = mlflow_store.client().get_run(outcome.run_id)
    assert run.data.params["algo.data"] == str(autoscaling_log)
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.digest == read_log(autoscaling_log).dataset_digest()
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "training"


def test_an_offline_trained_policy_is_valued_by_ope_as_by_simulation(tmp_path):
    """Recommender, one-decision sessions, uniformly random logging (10k decisions): a
    Q-network trained offline (gamma 0: a contextual bandit) is the target. Its value by
    simulation (40k sessions acting greedily) lies inside the 95% intervals of SNIPS and DR."""
    kwargs = {"horizon": 1}
    log = read_log(write_log(tmp_path / "log", RECOMMENDER, kwargs, {"name": "random"}, 1.0,
                             10_000, seed=11, seconds_per_step=1.0))  # fmt: skip
    venv = make_vec(RECOMMENDER, 1, seed=0, **kwargs)
    agent = build_agent({"name": "offline_dqn", "data": str(tmp_path / "log"), "gamma": 0.0},
                        venv, seed=0)  # fmt: skip
    agent.learn(100_000)
    greedy = Behaviour(agent, "epsilon", 0.0)
    truth = on_policy_returns(make_vec(RECOMMENDER, 256, seed=99, **kwargs), greedy, 40_000, 5)
    est, diag = ope.evaluate(log, greedy, ["snips", "dr_bandit", "ips"], n_boot=100, seed=1)
    random_value = float(np.mean(log.reward))
    assert truth.mean() > random_value + 0.3  # the learned policy is far from the logging one
    for name in ("snips", "dr_bandit"):
        assert est[name].covers(truth.mean()), (name, est[name], truth.mean())
    assert diag.unsupported_actions == [] and diag.max_ratio == pytest.approx(27.0)
