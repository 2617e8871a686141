"""rlbench's environments, registered with gymnasium when ``rlbench`` is imported.

The lowest layer above :mod:`rlbench.errors`: imports nothing else of rlbench.

``gymnasium.make("rlbench/Autoscaling-v0", load="spike")`` gives one copy;
:func:`make_vec` gives ``N`` copies stepped by one numpy call (an SB3 ``VecEnv``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import gymnasium as gym

if TYPE_CHECKING:
    from rlbench.envs.base import Core

# id -> "module:EnvClass"; the class's ``core_cls`` is the batched dynamics.
ENVIRONMENTS: dict[str, str] = {
    "rlbench/Autoscaling-v0": "rlbench.envs.autoscaling:AutoscalingEnv",
    "rlbench/GymScalingCompat-v0": "rlbench.envs.gym_scaling_compat:GymScalingCompatEnv",
    "rlbench/ScriptScheduler-v0": "rlbench.envs.scheduler:ScriptSchedulerEnv",
    "rlbench/Recommender-v0": "rlbench.envs.recommender:RecommenderEnv",
    "rlbench/SelfHealing-v0": "rlbench.envs.selfhealing:SelfHealingEnv",
}


def register_all() -> None:
    """Register every rlbench environment with gymnasium (idempotent)."""
    for env_id, entry_point in ENVIRONMENTS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point)


def env_class(env_id: str) -> type:
    """The rlbench class registered as ``env_id``; ``ValueError`` listing the known ids."""
    if env_id not in ENVIRONMENTS:
        known = ", ".join(sorted(ENVIRONMENTS))
        raise ValueError(f"unknown environment id {env_id!r}; rlbench's own: {known}")
    module, name = ENVIRONMENTS[env_id].split(":")
    return getattr(importlib.import_module(module), name)


def env_id_of(env: Any) -> str:
    """The id a user gave for ``env`` (``rlbench/ScriptScheduler-v0``, ``CartPole-v1``), for
    messages: the name of a class inside it means nothing to them."""
    core = core_of(env)
    for env_id in ENVIRONMENTS:
        if core is not None and getattr(env_class(env_id), "core_cls", None) is type(core):
            return env_id
    try:
        return str(env.get_attr("spec")[0].id)
    except Exception:  # no gymnasium spec: the class is all there is
        return type(core if core is not None else env).__name__


def core_of(env: Any) -> Core | None:
    """The numpy :class:`~rlbench.envs.base.Core` behind ``env``: a :func:`make_vec` env or a
    single copy, also inside SB3 ``VecEnv`` wrappers (they forward attributes); None for any
    other environment (a gymnasium id run through ``DummyVecEnv``)."""
    from rlbench.envs.base import Core

    core = getattr(env, "core", None)
    return core if isinstance(core, Core) else None


def make_vec(env_id: str, num_envs: int, seed: int | None = None, **kwargs: Any):
    """``num_envs`` copies of ``env_id`` as one natively batched SB3 ``VecEnv``.

    Copy ``i`` follows the trajectory of ``gymnasium.make(env_id, **kwargs)`` reset with
    ``seed + i``. The returned env still needs ``reset()``.

    Any other gymnasium id (``Pendulum-v1``, ...) is accepted too and gets SB3's
    ``DummyVecEnv`` of monitored single copies: slower, but every algorithm can be tried on it.
    """
    if env_id in ENVIRONMENTS:
        from rlbench.envs.batched import BatchedVecEnv

        venv = BatchedVecEnv(env_class(env_id).core_cls(num_envs=num_envs, **kwargs))
    elif env_id in gym.registry:
        from stable_baselines3.common.monitor import Monitor
        from stable_baselines3.common.vec_env import DummyVecEnv

        from rlbench.envs.vec_base import register_with_sb3

        register_with_sb3()  # the NaN check wraps this env in one of ours
        horizon = kwargs.pop("horizon", None)  # rlbench's name for gymnasium's time limit
        if horizon is not None:
            kwargs["max_episode_steps"] = int(horizon)
        if kwargs.get("render_mode") == "human":  # a window per copy, drawn at every step
            raise ValueError(
                "render_mode=human opens a window per copy and draws every step; training and "
                "evaluation never show one: drop env.render_mode (rgb_array is fine)"
            )
        try:
            venv = DummyVecEnv([lambda: Monitor(gym.make(env_id, **kwargs))] * int(num_envs))
        except gym.error.DependencyNotInstalled as err:  # e.g. Box2D, MuJoCo, pygame
            raise ValueError(f"{env_id} needs a package that is not installed: {err}") from None
    else:
        known = ", ".join(sorted(ENVIRONMENTS))
        raise ValueError(
            f"unknown environment id {env_id!r}: neither rlbench's ({known}) nor registered "
            "with gymnasium"
        )
    if seed is not None:
        venv.seed(seed)
    return venv
