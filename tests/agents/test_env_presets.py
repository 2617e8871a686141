"""Per-environment tuned settings (conf/env_presets.yaml): which apply, in what precedence, and
that every shipped block builds its agent."""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict, read_write

from rlbench.config import CONF_DIR
from rlbench.run.env_presets import PRESETS_FILE, apply_env_preset


def composed(*overrides: str, hydra: bool = False):
    """The job config of ``rlbench-train *overrides``; with ``hydra``, also Hydra's runtime
    (chosen options, command-line overrides) as inside a real job."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=hydra)
    if hydra:
        HydraConfig.instance().set_config(cfg)
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
    return cfg


@pytest.fixture(autouse=True)
def no_hydra_job():
    yield
    HydraConfig.instance().cfg = None


def test_a_gym_task_gets_its_tuned_settings_under_the_users_own():
    cfg = composed(
        "env=gym", "env.id=CartPole-v1", "algo=ppo", "algo.gamma=0.95", "algo.n_epochs=5",
        hydra=True,
    )  # fmt: skip
    tuned, name = apply_env_preset(cfg)
    assert name == "CartPole-v1/ppo"
    assert tuned.algo.n_steps == 32 and tuned.algo.gae_lambda == 0.8  # the preset's
    assert tuned.algo.learning_rate == "lin_0.001" and tuned.train.num_envs == 8
    # named on the command line: kept, even 0.95, which is also ppo.yaml's own default
    assert tuned.algo.gamma == 0.95 and tuned.algo.n_epochs == 5
    assert tuned.algo.max_grad_norm == 0.5  # not in the preset: the algorithm's default
    assert cfg.algo.n_steps == 256  # the caller's config is left as it was


def test_a_value_set_by_a_preset_file_wins_over_the_tuned_one():
    """An experiment or debug preset sets keys without the command line: a value that differs
    from the algorithm's defaults file is the user's."""
    cfg = composed("env=gym", "env.id=CartPole-v1", "algo=ppo", "debug=fast")
    tuned, name = apply_env_preset(cfg)
    assert name == "CartPole-v1/ppo"
    assert tuned.train.num_envs == 4 and tuned.train.total_steps == 2048  # debug=fast's
    assert tuned.algo.n_steps == 32


@pytest.mark.parametrize(
    ("overrides", "policy"),
    [([], "best"), (["eval.policy=final"], "final")],
    ids=["preset", "command-line"],
)
def test_cartpole_dqn_scores_its_validation_selected_weights_unless_told_otherwise(
    overrides, policy
):
    """rl-zoo3's CartPole DQN block collapses late on some seeds: our block validates every 5k
    steps and scores the weights that validated best (an eval.* key, in the same precedence as
    algo.* and train.*)."""
    cfg = composed("env=gym", "env.id=CartPole-v1", "algo=dqn", *overrides, hydra=True)
    tuned, name = apply_env_preset(cfg)
    assert name == "CartPole-v1/dqn"
    assert tuned.eval.policy == policy and tuned.algo.gradient_steps == 128
    assert tuned.train.eval_every == 5000  # more candidates to choose from
    assert cfg.eval.policy == "final" and cfg.train.eval_every == 10000  # train.yaml's defaults


@pytest.mark.parametrize(
    "overrides",
    [
        ("env=gym", "env.id=CartPole-v1", "algo=ppo_seed"),  # a named variant: deliberate
        ("env=gym", "env.id=CartPole-v1", "algo=ppo", "tuned=false"),
        ("env=gym", "env.id=Acrobot-v1", "algo=ppo"),  # rl-zoo3's needs VecNormalize: none
        ("env=autoscaling", "algo=ppo"),
    ],
    ids=["variant", "off", "no-block", "own-env"],
)
@pytest.mark.parametrize("hydra", [True, False], ids=["job", "code"])
def test_no_preset_applies(overrides, hydra):
    """Inside a Hydra job the algo= option is known; from code (train(cfg)) only algo.name is,
    and ppo_seed (name ppo) must still not get PPO's CartPole settings mixed into its own."""
    cfg = composed(*overrides, hydra=hydra)
    tuned, name = apply_env_preset(cfg)
    assert name is None and tuned is cfg


@pytest.mark.parametrize(
    ("env_id", "option"),
    [(env, opt) for env, block in OmegaConf.load(PRESETS_FILE).items() for opt in block],
)
def test_every_shipped_block_builds_its_agent(env_id, option):
    """Every key is a constructor argument of the algorithm and every value one it takes
    (a typo in the YAML would only show when somebody trains that task)."""
    from rlbench.agents import build_agent
    from rlbench.agents.sb3_agents import LinearSchedule
    from rlbench.envs import make_vec

    cfg, name = apply_env_preset(composed("env=gym", f"env.id={env_id}", f"algo={option}"))
    assert name == f"{env_id}/{option}"
    venv = make_vec(env_id, cfg.train.num_envs, seed=0)
    try:
        agent = build_agent(cfg.algo, venv, seed=0, device="cpu")
        if str(cfg.algo.learning_rate).startswith("lin_"):
            assert isinstance(agent.model.learning_rate, LinearSchedule)
            assert agent.model.lr_schedule(0.5) == pytest.approx(
                0.5 * float(str(cfg.algo.learning_rate)[4:])
            )
    finally:
        venv.close()


def test_a_tuned_run_records_its_preset_and_the_values_it_trained_with(mlflow_store, tmp_path):
    from rlbench.run.train import train

    cfg = composed(
        "env=gym", "env.id=CartPole-v1", "algo=ppo", "debug=fast",
        f"train.checkpoint_dir={tmp_path}/ck", "train.progress=off",
        *(f"tracking.{k}={v}" for k, v in mlflow_store.tracking_cfg().items() if v),
    )  # fmt: skip
    outcome = train(cfg)
    run = mlflow_store.client().get_run(outcome.run_id)
    assert run.data.tags["rlbench.env_preset"] == "CartPole-v1/ppo"
    assert run.data.params["algo.n_steps"] == "32"
    assert run.data.params["algo.learning_rate"] == "lin_0.001"


def test_a_schedule_that_is_not_lin_is_one_clear_error():
    from rlbench.agents import build_agent
    from rlbench.envs import make_vec
    from rlbench.errors import UserError

    cfg = composed("env=gym", "env.id=CartPole-v1", "algo=ppo", "algo.learning_rate=exp_0.1")
    venv = make_vec("CartPole-v1", 2, seed=0)
    try:
        with pytest.raises(UserError, match=r"algo.learning_rate='exp_0.1' must be a number or "):
            build_agent(cfg.algo, venv, seed=0, device="cpu")
    finally:
        venv.close()


def test_a_continuous_policy_acts_with_its_numbers_not_integers():
    """Pendulum's PPO (a shipped block) must act with torques such as 0.37, not 0: the agent's
    predict used to cast every action to an integer."""
    from rlbench.agents import build_agent
    from rlbench.envs import make_vec

    cfg, _ = apply_env_preset(composed("env=gym", "env.id=Pendulum-v1", "algo=ppo"))
    venv = make_vec("Pendulum-v1", 2, seed=0)
    try:
        agent = build_agent(cfg.algo, venv, seed=0, device="cpu")
        actions = agent.predict(venv.reset(), deterministic=False)
    finally:
        venv.close()
    assert actions.shape == (2, 1) and actions.dtype == np.float32
    assert not np.allclose(actions, np.round(actions))  # sampled torques are not whole numbers
