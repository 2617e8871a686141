"""The ``conf/search`` presets parse into the documented spaces over real algorithm settings."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hydra_plugins.rlbench_optuna_sweeper._space import parse_space

CONF = Path(__file__).resolve().parents[2] / "conf"
SEARCHED = {
    "threshold": {"upper", "lower", "queue_limit", "cooldown"},
    "qlearning": {"bins", "learning_rate", "gamma", "epsilon_decay"},
    "ppo": {
        "n_steps", "batch_size", "gamma", "gae_lambda", "learning_rate", "ent_coef",
        "clip_range", "n_epochs", "max_grad_norm", "policy_kwargs.net_arch",
        "policy_kwargs.activation_fn",
    },
    "dqn": {
        "gamma", "learning_rate", "batch_size", "train_freq", "gradient_steps",
        "exploration_final_eps", "exploration_fraction", "target_update_interval",
        "policy_kwargs.net_arch",
    },
}  # fmt: skip


def preset(algo: str):
    return OmegaConf.load(CONF / "search" / f"{algo}.yaml")


@pytest.mark.parametrize("algo", sorted(SEARCHED))
def test_preset_searches_the_documented_settings(algo):
    cfg = preset(algo)
    assert f"override /algo: {algo}" in [f"{k}: {v}" for d in cfg.defaults for k, v in d.items()]
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    space = parse_space(params, [])
    assert {k.removeprefix("algo.") for k in space.params} == SEARCHED[algo]
    for i, values in enumerate(cfg.hydra.sweeper.get("enqueue_trials", [])):
        space.fixed_params(OmegaConf.to_container(values), f"enqueue_trials[{i}]")


@pytest.mark.parametrize("algo", ["threshold", "qlearning"])
def test_rule_and_table_settings_exist_in_the_algo_config(algo):
    algo_cfg = OmegaConf.load(CONF / "algo" / f"{algo}.yaml")
    assert SEARCHED[algo] <= set(algo_cfg.keys())


@pytest.mark.parametrize(("algo", "cls"), [("ppo", "PPO"), ("dqn", "DQN")])
def test_sb3_settings_are_constructor_arguments(algo, cls):
    import stable_baselines3

    accepted = set(inspect.signature(getattr(stable_baselines3, cls)).parameters)
    top = {k for k in SEARCHED[algo] if "." not in k}
    assert top <= accepted
