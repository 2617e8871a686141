"""The scheduler, recommender and self-healing environments through the whole workbench:
their agents learn, their presets compose, ``rlbench-train`` tracks them, the sweeper searches
their agents and ``rlbench-report`` compares their runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlbench.agents import build_agent
from rlbench.envs import make_vec
from rlbench.run.evaluate import evaluate, evaluation_seeds

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
BIN = Path(sys.executable).parent
ENV_IDS = {
    "scheduler": "rlbench/ScriptScheduler-v0",
    "recommender": "rlbench/Recommender-v0",
    "selfhealing": "rlbench/SelfHealing-v0",
}
# the algo presets that belong to one of these environments
OWN_PRESETS = {
    "hybrid": "scheduler",
    "user_feedback": "scheduler",
    "ucb": "recommender",
    "recommender_rule": "recommender",
    "qlearning_seed": "recommender",
    "runbook": "selfhealing",
}

# what each experiment compares: the baselines, the env's own agents, Q-learning, PPO and DQN
EXPERIMENT_ALGOS = {
    "scheduler": ["random", "static", "user_feedback", "qlearning", "hybrid", "ppo", "dqn"],
    "recommender": ["random", "recommender_rule", "qlearning_seed", "ucb", "ppo", "dqn"],
    "selfhealing": ["random", "runbook", "qlearning", "ppo", "dqn"],
}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "algo", "steps"),
    [("scheduler", "hybrid", 20_000), ("recommender", "ucb", 20_000),
     ("selfhealing", "qlearning", 10_000)],
)  # fmt: skip
def test_best_learned_agent_beats_random_after_a_small_budget(env, algo, steps):
    """Measured (seed 0, 20 held-out episodes): scheduler hybrid -28.6 vs random -211.5;
    recommender ucb 33.5 vs 11.4; selfhealing qlearning 275.9 vs -325.8."""
    import torch

    torch.set_num_threads(1)
    env_id = ENV_IDS[env]
    cfg = OmegaConf.load(CONF / "algo" / f"{algo}.yaml")
    agent = build_agent(cfg, make_vec(env_id, 8, seed=0), seed=0, device="cpu")
    agent.learn(steps)
    seeds = evaluation_seeds(0, 20, 1_000_000)
    learned = evaluate(agent, env_id, {}, seeds).mean_return
    rule = build_agent({"name": "random"}, make_vec(env_id, 1), seed=0)
    random = evaluate(rule, env_id, {}, seeds).mean_return
    assert learned > random, f"{env}: {algo} {learned:.1f} after {steps} steps, random {random:.1f}"


@pytest.mark.parametrize("preset", sorted(OWN_PRESETS))
def test_each_preset_builds_an_agent_on_its_environment(preset):
    cfg = OmegaConf.load(CONF / "algo" / f"{preset}.yaml")
    env = make_vec(ENV_IDS[OWN_PRESETS[preset]], 3, seed=0)
    agent = build_agent(cfg, env, seed=0, device="cpu")
    actions = agent.predict(env.reset())
    assert actions.shape == (3,) and ((actions >= 0) & (actions < env.action_space.n)).all()


def test_qlearning_seed_preset_has_the_recommender_seeds_settings():
    cfg = OmegaConf.load(CONF / "algo" / "qlearning_seed.yaml")
    agent = build_agent(cfg, make_vec(ENV_IDS["recommender"], 1), seed=0)
    assert (agent.lr, agent.gamma, agent.epsilon) == (0.1, 0.95, 0.3)
    assert (agent.epsilon_min, agent.epsilon_decay, agent.decay_per) == (0.05, 0.995, "episode")
    assert agent.bins.tolist() == [5, 5, 5, 5, 5, 3, 5, 4]  # the seed's own discrete state


@pytest.mark.parametrize("experiment", sorted(ENV_IDS))
def test_experiment_preset_compares_every_applicable_algorithm_over_ten_seeds(experiment):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", [f"experiment={experiment}"], return_hydra_config=True)
    assert cfg.env.name == experiment
    assert dict(cfg.tracking.tags) == {"benchmark": experiment}
    assert cfg.hydra.launcher.n_jobs == 2 and "joblib" in cfg.hydra.launcher._target_
    params = cfg.hydra.sweeper.params
    assert params.seed == "0,1,2,3,4,5,6,7,8,9"  # the experiments/ studies (issue 22)
    algos = params.algo.split(",")
    assert sorted(algos) == sorted(EXPERIMENT_ALGOS[experiment])
    env = make_vec(ENV_IDS[experiment], cfg.train.num_envs, seed=0)
    for algo in algos:  # every one of them runs on this environment
        build_agent(OmegaConf.load(CONF / "algo" / f"{algo}.yaml"), env, seed=0, device="cpu")


@pytest.mark.slow
def test_multirun_over_the_three_envs_finishes_six_runs_that_the_report_compares(
    mlflow_store, tmp_path
):
    run(
        str(BIN / "rlbench-train"), "-m", "env=scheduler,recommender,selfhealing",
        "algo=qlearning,random", "seed=0", "debug=fast", *mlflow_store.overrides(), cwd=tmp_path,
    )  # fmt: skip
    runs = mlflow_store.runs()
    combos = sorted((r.data.params["env.name"], r.data.params["algo.name"]) for r in runs)
    assert combos == sorted((e, a) for e in ENV_IDS for a in ("qlearning", "random"))
    assert {r.info.status for r in runs} == {"FINISHED"}
    # each run logs its environment's own aggregates (the metrics)
    own_metric = {"scheduler": "regret", "recommender": "liked", "selfhealing": "success_rate"}
    for r in runs:
        assert f"test/{own_metric[r.data.params['env.name']]}" in r.data.metrics, r.data.params

    from rlbench.results.report import ReportSettings, build_report

    settings = ReportSettings(
        tracking_uri=mlflow_store.uri, output_dir=tmp_path / "report", min_seeds=1, reps=100,
        log_to_mlflow=False,
    )  # fmt: skip
    text = build_report(settings).read_text()
    for env in ENV_IDS:  # one seed against one: compared, never told apart
        assert f"\n### {env}\n" in text and f"- **{env}**: no two of the 2 algorithms" in text


@pytest.mark.slow
@pytest.mark.parametrize(
    ("preset", "study", "defaults"),
    [
        ("ucb", "ucb-recommender-default", {"algo.exploration": 2.0}),
        ("hybrid", "hybrid-scheduler-default", {"algo.ratio_bins": 7, "algo.prior_bonus": 0.5}),
    ],
)
def test_search_preset_runs_a_tiny_optuna_study(preset, study, defaults, tmp_path):
    import optuna
    from optuna.trial import TrialState

    run(
        str(BIN / "rlbench-train"), "-m", f"search={preset}", "hydra.sweeper.n_trials=2",
        "train.total_steps=1000", "train.eval_every=500", "eval.episodes=2",
        "eval.periodic_episodes=2", "tracking.enabled=false", cwd=tmp_path,
    )  # fmt: skip
    # the sweep closed its database: the write-ahead log is folded into the one file a user
    # copies, even though the installed command skips interpreter tear-down
    leftovers = sorted(p.name for p in (tmp_path / "outputs").glob("optuna.db-*"))
    assert leftovers == [], leftovers
    storage = f"sqlite:///{tmp_path / 'outputs' / 'optuna.db'}"
    trials = optuna.load_study(study_name=study, storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert defaults.items() <= trials[0].params.items()  # the preset's defaults run first
    assert trials[1].params != trials[0].params
