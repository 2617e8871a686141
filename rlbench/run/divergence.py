"""Training that produces NaN or inf stops at once, with one line saying what diverged.

A loss, the network's weights, an observation or a reward turning NaN is checked where it
appears (training statistics, the batched env, the agent's parameters, evaluation returns).
:class:`TrainingDiverged` is not a :class:`~rlbench.errors.UserError`: a single run exits with
code 3, and inside a sweep only that trial fails.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rlbench import cli
from rlbench.envs.vec_base import VecEnvBase


class TrainingDiverged(RuntimeError):
    """Training produced NaN or inf. Not a :class:`UserError`: in a sweep, one trial's
    hyperparameters diverging must fail that trial, not stop the study as a broken config."""

    exit_code = cli.EXIT_DIVERGED


#: training statistics that are NaN only when learning broke (SB3's explained_variance is NaN
#: whenever the returns are constant, so it is not one of them)
_MUST_BE_FINITE = ("loss", "td_error", "episode_return")


def message(agent, steps: int, what: str) -> str:
    return (
        f"{agent.name} diverged at step {steps}: {what} became NaN or inf; lower "
        "algo.learning_rate, clip gradients (algo.max_grad_norm), or check the environment"
    )


def check_parameters(agent, steps: int) -> None:
    """Stop with a clear message when training diverged (NaN weights make NaN actions)."""
    if not agent.check_finite():
        raise TrainingDiverged(message(agent, steps, "its parameters"))


def check_stats(agent, steps: int, stats: dict[str, float]) -> None:
    for key, value in stats.items():
        if key.endswith(_MUST_BE_FINITE) and not math.isfinite(value):
            raise TrainingDiverged(message(agent, steps, f"{key} ({value})"))


def check_returns(agent, steps: int, returns: np.ndarray) -> None:
    if not np.isfinite(returns).all():
        raise TrainingDiverged(message(agent, steps, "an evaluation return"))


def _all_finite(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    arr = np.asarray(value)
    return arr.dtype.kind not in "fc" or bool(np.isfinite(arr).all())


def _bad_env_output(what: str, steps: int) -> TrainingDiverged:
    return TrainingDiverged(
        f"the environment returned a NaN or inf {what} at step {steps}; check its settings "
        "(env.*, a trace file) or the environment's code"
    )


class FinitePolicy:
    """The agent as the evaluation sees it, refusing NaN observations instead of acting on them."""

    def __init__(self, agent) -> None:
        self.agent = agent

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        if not _all_finite(obs):
            raise _bad_env_output("observation (during evaluation)", self.agent.num_steps)
        return self.agent.predict(obs, deterministic=deterministic)


class FiniteEnv(VecEnvBase):
    """The training env, stopping training at the first NaN/inf observation or reward
    (about 1 % of a tabular agent's step time; nothing for a neural one). A wrapper of our own
    rather than SB3's ``VecEnvWrapper``, so a run without SB3 does not import it (nor torch);
    other attributes are the wrapped env's."""

    steps = 0

    def __init__(self, venv: Any) -> None:
        self.venv = venv
        self.render_mode = getattr(venv, "render_mode", None)
        super().__init__(venv.num_envs, venv.observation_space, venv.action_space)

    def reset(self) -> np.ndarray:
        obs = self.venv.reset()
        if not _all_finite(obs):
            raise _bad_env_output("observation (on reset)", self.steps)
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self.venv.step_async(actions)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
        obs, rewards, dones, infos = self.venv.step_wait()
        self.steps += self.num_envs
        if not _all_finite(obs):
            raise _bad_env_output("observation", self.steps)
        if not np.isfinite(rewards).all():
            raise _bad_env_output("reward", self.steps)
        return obs, rewards, dones, infos

    def close(self) -> None:
        self.venv.close()

    def seed(self, seed: int | None = None) -> Any:
        return self.venv.seed(seed)

    def set_options(self, options: Any = None) -> None:
        self.venv.set_options(options)

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return self.venv.get_attr(attr_name, indices)

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        self.venv.set_attr(attr_name, value, indices)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list:
        return self.venv.env_method(method_name, *args, indices=indices, **kwargs)

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return self.venv.env_is_wrapped(wrapper_class, indices)

    def get_images(self) -> Any:
        return self.venv.get_images()

    @property
    def unwrapped(self) -> Any:
        return self.venv.unwrapped

    def getattr_depth_check(self, name: str, already_found: bool) -> str | None:
        mine = name in vars(self) or hasattr(type(self), name)
        if mine and already_found:
            return f"{type(self).__module__}.{type(self).__name__}"
        return self.venv.getattr_depth_check(name, already_found or mine)

    def __getattr__(self, name: str) -> Any:
        if name == "venv":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.venv, name)


def finite_env(venv):
    """``venv`` behind the NaN check, under its own class name (error messages name the env)."""
    return type(type(venv).__name__, (FiniteEnv,), {})(venv)
