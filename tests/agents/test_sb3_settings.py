"""SB3 settings checked without torch: the same answers and errors as the SB3 agents give."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlbench.agents.base import config_to_dict
from rlbench.agents.sb3_settings import (
    ACTIVATION_NAMES,
    DQN_PARAMETERS,
    OPTIMIZER_NAMES,
    LinearSchedule,
    check_sb3_settings,
)
from rlbench.errors import UserError

DQN_YAML = Path(__file__).resolve().parents[2] / "conf" / "algo" / "dqn.yaml"


def dqn_cfg(**overrides):
    cfg = config_to_dict(OmegaConf.load(DQN_YAML))
    del cfg["name"]
    return {**cfg, **overrides}


def test_dqn_parameters_are_sb3s_dqn_signature():
    """Names, order, kinds, defaults and annotations of the installed SB3's DQN (minus what we
    set ourselves); annotations naming SB3 classes are their source text, which must evaluate
    to SB3's own. Fails when an SB3 upgrade changes the signature: update DQN_PARAMETERS."""
    from stable_baselines3 import DQN

    from rlbench.agents.dqn_loop import LeanDQN

    ours_names = {"self", "env", "seed", "device", "_init_setup_model"}
    for cls in (DQN, LeanDQN):  # algo.loop=sb3 and numpy check against the same signature
        sb3 = {
            n: p
            for n, p in inspect.signature(cls.__init__).parameters.items()
            if n not in ours_names
        }
        assert list(DQN_PARAMETERS) == list(sb3)
        module = vars(sys.modules[DQN.__module__])
        for name, param in DQN_PARAMETERS.items():
            theirs = sb3[name]
            assert (param.kind, param.default, type(param.default)) == (
                theirs.kind,
                theirs.default,
                type(theirs.default),
            ), name
            annotation = param.annotation
            if isinstance(annotation, str) and not isinstance(theirs.annotation, str):
                annotation = eval(annotation, module)  # the names SB3's dqn module sees
            assert annotation == theirs.annotation, name


def test_importing_the_settings_imports_neither_torch_nor_sb3():
    code = (
        "import sys, rlbench.agents.sb3_settings\n"
        "print(sorted(m for m in ('torch', 'stable_baselines3') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_name_tuples_are_the_torch_tables_keys():
    from rlbench.agents.sb3_agents import ACTIVATIONS, OPTIMIZERS

    assert tuple(ACTIVATIONS) == ACTIVATION_NAMES
    assert tuple(OPTIMIZERS) == OPTIMIZER_NAMES


def _as_names(settings):
    """policy_kwargs' torch classes back to their config names."""
    from rlbench.agents.sb3_agents import ACTIVATIONS, OPTIMIZERS

    kwargs = dict(settings.get("policy_kwargs") or {})
    for key, table in (("activation_fn", ACTIVATIONS), ("optimizer_class", OPTIMIZERS)):
        if key in kwargs:
            kwargs[key] = next(n for n, cls in table.items() if cls is kwargs[key])
    return {**settings, "policy_kwargs": kwargs}


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"learning_rate": "lin_0.001", "train_freq": [2, "step"], "buffer_size": 1e5},
        {"policy_kwargs": {"activation_fn": "tanh", "optimizer_class": "adamw"}},
    ],
    ids=["shipped", "schedule and coercion", "other names"],
)
def test_the_settings_are_the_dqn_agents_but_for_torch_classes(overrides):
    from rlbench.agents.sb3_agents import DQNAgent

    cfg = dqn_cfg(**overrides)
    ours = check_sb3_settings("dqn", cfg, DQN_PARAMETERS, ("loop",))
    theirs = DQNAgent._sb3_kwargs(cfg)
    lr = ours["learning_rate"]
    if isinstance(lr, LinearSchedule):  # a new object each time: compare what it does
        assert lr(0.5) == theirs["learning_rate"](0.5) == lr.start / 2
        ours["learning_rate"] = theirs["learning_rate"]
    assert ours == _as_names(theirs)
    assert isinstance(ours["policy_kwargs"]["activation_fn"], str)  # no torch class
    assert isinstance(ours["train_freq"], int | tuple) and isinstance(ours["buffer_size"], int)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lerning_rate": 1e-3}, "lerning_rate"),
        ({"gamma": "high"}, "algo.gamma='high' must be a number (dqn)"),
        ({"batch_size": 0}, "algo.batch_size must be >= 1, got 0 (dqn)"),
        ({"exploration_final_eps": 1.5}, "algo.exploration_final_eps must be from 0 to 1"),
        ({"buffer_size": 1.5}, "algo.buffer_size=1.5 must be an integer (dqn)"),
        ({"gamma": float("nan")}, "algo.gamma=nan is not a finite number (dqn)"),
        ({"learning_rate": "exp_1"}, "algo.learning_rate='exp_1' must be a number or lin_"),
        ({"policy_kwargs": {"activation_fn": "swish"}}, "choose one of tanh, relu, elu"),
        ({"policy_kwargs": {"optimizer_class": "lbfgs"}}, "choose one of adam, adamw"),
    ],
)
def test_bad_settings_are_the_same_user_error_through_both_paths(overrides, message):
    from rlbench.agents.sb3_agents import DQNAgent

    cfg = dqn_cfg(**overrides)
    with pytest.raises(UserError) as ours:
        check_sb3_settings("dqn", cfg, DQN_PARAMETERS, ("loop",))
    with pytest.raises(UserError) as theirs:
        DQNAgent._sb3_kwargs(cfg)
    assert str(ours.value) == str(theirs.value)
    assert message in str(ours.value)
