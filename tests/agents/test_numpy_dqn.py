"""The torch-free DQN (rlbench/agents/numpy_dqn.py) against SB3's DQN agent (LeanDQN): the same
parameters bit for bit from one seed, files either can read, and no torch in a DQN run."""

from __future__ import annotations

import re
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import rlbench  # noqa: F401 - registers the environments
from rlbench.agents import build_agent, load_agent
from rlbench.agents.numpy_dqn import NumpyDQNAgent, torch_linear_init
from rlbench.agents.sb3_agents import DQNAgent
from rlbench.envs import make_vec
from rlbench.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
DQN_YAML = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "algo" / "dqn.yaml"))
ENV = "rlbench/Autoscaling-v0"


def sb3_params(agent: DQNAgent) -> np.ndarray:
    return np.concatenate([p.detach().numpy().ravel() for p in agent.model.q_net.parameters()])


def both(settings: dict, steps: int, seed: int = 0) -> tuple[NumpyDQNAgent, DQNAgent]:
    """The numpy agent and SB3's, each trained ``steps`` on 8 copies from ``seed``."""
    cfg = {**DQN_YAML, **settings}
    ours = build_agent(cfg, make_vec(ENV, 8, seed=seed), seed, "cpu")
    theirs = DQNAgent(make_vec(ENV, 8, seed=seed), cfg, seed, "cpu")
    assert type(ours) is NumpyDQNAgent
    ours.learn(steps)
    theirs.learn(steps)
    return ours, theirs


@pytest.mark.parametrize(
    "settings",
    [
        {},  # conf/algo/dqn.yaml
        {"policy_kwargs": {"net_arch": [32], "activation_fn": "tanh", "optimizer_class": "adamw"},
         "learning_rate": "lin_0.003", "gradient_steps": -1, "target_update_interval": 64},
        {"train_freq": [2, "step"], "gamma": 0.9, "max_grad_norm": 0.5, "learning_starts": 0},
    ],
    ids=["defaults", "tanh-adamw-schedule", "tight-clip"],
)  # fmt: skip
def test_learns_sb3s_parameters_bit_for_bit(settings):
    ours, theirs = both(settings, 4000)
    np.testing.assert_array_equal(ours.q_net.flat, sb3_params(theirs))
    assert ours.training_stats() == pytest.approx(theirs.training_stats())
    assert ours._n_updates == theirs.model._n_updates > 0
    obs = make_vec(ENV, 16, seed=9).reset()
    np.testing.assert_array_equal(ours.outputs(obs), theirs.outputs(obs))
    np.testing.assert_array_equal(ours.predict(obs), theirs.predict(obs))


def test_a_soft_target_update_matches_to_float32_rounding():
    ours, theirs = both({"tau": 0.3, "target_update_interval": 8}, 3000)
    np.testing.assert_allclose(ours.q_net.flat, sb3_params(theirs), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("sizes", [[7, 64, 64, 3], [3, 256, 256, 5], [11, 2]])
def test_first_weights_are_torchs_draws(sizes):
    torch.manual_seed(12345)
    linear = [torch.nn.Linear(a, b) for a, b in pairwise(sizes)]
    for (w, b), layer in zip(torch_linear_init(sizes, 12345), linear, strict=True):
        np.testing.assert_array_equal(w, layer.weight.detach().numpy())
        np.testing.assert_array_equal(b, layer.bias.detach().numpy())


def test_files_cross_between_the_two_agents_and_resume_alike(tmp_path):
    """A file of SB3's agent (torch blobs) resumes in the numpy agent exactly as in SB3's, and
    the numpy agent's file (arrays) loads into SB3's with the same Q-values."""
    cfg = {**DQN_YAML, "learning_starts": 200}
    sb3 = DQNAgent(make_vec(ENV, 8, seed=1), cfg, 1, "cpu")
    sb3.learn(1600)
    sb3.save(tmp_path / "sb3.zip")
    resumed = [load_agent(tmp_path / "sb3.zip", make_vec(ENV, 8, seed=2)),
               DQNAgent.load(tmp_path / "sb3.zip", make_vec(ENV, 8, seed=2))]  # fmt: skip
    assert [type(a) for a in resumed] == [NumpyDQNAgent, DQNAgent]
    for agent in resumed:
        agent.learn(3200)
    np.testing.assert_array_equal(resumed[0].q_net.flat, sb3_params(resumed[1]))

    resumed[0].save(tmp_path / "numpy.zip")
    into_sb3 = DQNAgent.load(tmp_path / "numpy.zip", make_vec(ENV, 8, seed=2))
    obs = make_vec(ENV, 8, seed=3).reset()
    np.testing.assert_array_equal(into_sb3.outputs(obs), resumed[0].outputs(obs))
    assert into_sb3.model.exploration_rate == resumed[0].exploration_rate


@pytest.mark.parametrize(
    ("settings", "device"),
    [
        ({"loop": "sb3"}, "cpu"),
        ({"policy_kwargs": {"net_arch": [64], "activation_fn": "elu"}}, "cpu"),
        ({"optimize_memory_usage": True, "replay_buffer_kwargs": {
            "handle_timeout_termination": False}}, "cpu"),
        ({"verbose": 1}, "cpu"),
    ],
)  # fmt: skip
def test_what_numpy_does_not_compute_goes_to_sb3(settings, device):
    agent = build_agent({**DQN_YAML, **settings}, make_vec(ENV, 2, seed=0), 0, device)
    assert type(agent) is DQNAgent


def test_a_dqn_run_never_imports_torch(tmp_path):
    """The whole rlbench-train command: building, learning, checkpoints, evaluation, saving."""
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('imported:', sorted(m for m in ('torch', "
        "'stable_baselines3') if m in sys.modules)))\n"
        "from rlbench.run.main import console\n"
        "sys.argv = ['rlbench-train', 'env=autoscaling', 'algo=dqn', 'train.total_steps=3000',"
        f" 'tracking.enabled=false', 'hydra.run.dir={tmp_path / 'run'}',"
        f" 'train.checkpoint_dir={tmp_path / 'ck'}', 'train.progress=off']\n"
        "console()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "imported: []" in done.stdout, done.stdout[-2000:]


def _adam(**options):
    """conf/algo/dqn.yaml's policy_kwargs with these Adam options added."""
    kwargs = DQN_YAML["policy_kwargs"]
    return {
        "policy_kwargs": {**kwargs, "optimizer_kwargs": {**kwargs["optimizer_kwargs"], **options}}
    }


TRAIN_FREQ = "algo.train_freq must be N or [N, step] or [N, episode] with N >= 1"
BETAS = "optimizer_kwargs.betas must be two numbers from 0 to below 1"


@pytest.mark.parametrize("loop", ["numpy", "sb3"])
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"train_freq": 0}, f"{TRAIN_FREQ} (how many steps or episodes between updates); got 0"),
        ({"train_freq": -2}, TRAIN_FREQ),
        ({"train_freq": [0, "step"]}, TRAIN_FREQ),
        ({"train_freq": [4]}, TRAIN_FREQ),
        ({"train_freq": [4, "stepz"]}, TRAIN_FREQ),
        ({"train_freq": [1, "episode"]}, "counts episodes, which SB3's DQN does with one env copy"),
        (_adam(eps=-1), "algo.policy_kwargs.optimizer_kwargs.eps must be a number >= 0, got -1"),
        (_adam(eps="abc"), "optimizer_kwargs.eps must be a number >= 0, got 'abc'"),
        (_adam(weight_decay=-1), "optimizer_kwargs.weight_decay must be a number >= 0, got -1"),
        (_adam(betas=[1.5, 0.9]), BETAS),
        (_adam(betas=[0.9, 1.0]), BETAS),
        (_adam(betas=[0.9, 0.99, 1]), BETAS),
        (_adam(betas=[0.9, "abc"]), BETAS),
        (_adam(foreach="abc"), "optimizer_kwargs.foreach must be true, false or null, got 'abc'"),
        (_adam(foreach=True), "fused and algo.policy_kwargs.optimizer_kwargs.foreach cannot both"),
    ],
)  # fmt: skip
def test_what_sb3_or_torch_refused_both_dqn_agents_refuse_alike(settings, message, loop):
    """The numpy DQN builds no torch Adam and no SB3 DQN: it trained on a negative eps or a
    beta of 1.5, crashed on eps=abc, and looped forever collecting train_freq=0 steps. Both
    agents (and a sweep's check before its first trial) give one UserError, as SB3's did."""
    cfg = {**DQN_YAML, **settings, "loop": loop}
    with pytest.raises(UserError, match=re.escape(message)):
        build_agent(cfg, make_vec(ENV, 2, seed=0), 0, "cpu")
    if settings.get("train_freq") != [1, "episode"]:  # judged on the env: not before a sweep
        with pytest.raises(UserError, match=re.escape(message)):
            NumpyDQNAgent.check_settings(cfg)


def test_betas_written_as_integers_work_in_both_agents():
    """torch's Adam refuses ``betas=[0, 0.9]`` (an int beside a float); they become floats."""
    cfg = {**DQN_YAML, **_adam(betas=[0, 0.9]), "learning_starts": 0}
    ours, theirs = (build_agent({**cfg, "loop": loop}, make_vec(ENV, 2, seed=0), 0, "cpu")
                    for loop in ("numpy", "sb3"))  # fmt: skip
    assert (type(ours), type(theirs)) == (NumpyDQNAgent, DQNAgent)
    for agent in (ours, theirs):
        agent.learn(64)
    assert theirs.model.policy.optimizer.param_groups[0]["betas"] == (0.0, 0.9)


def test_its_files_say_version_2_and_a_newer_version_is_named(tmp_path):
    """An rlbench that reads version 1 only names the version of a numpy DQN's file (not a
    missing torch blob); this one reads 1 and 2 and names anything newer."""
    import json
    import zipfile

    from rlbench.errors import UserError

    agent = build_agent(DQN_YAML, make_vec(ENV, 2, seed=0), 0, "cpu")
    agent.save(tmp_path / "m.zip")
    with zipfile.ZipFile(tmp_path / "m.zip") as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    meta = json.loads(members["meta.json"])
    assert meta["version"] == 2
    meta["version"] = 3
    members["meta.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile(tmp_path / "newer.zip", "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(UserError, match=r"format version 3.*newer rlbench"):
        load_agent(tmp_path / "newer.zip", make_vec(ENV, 2, seed=0))
