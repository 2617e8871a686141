"""The batched face of a :class:`~rlbench.envs.base.Core`: N copies as one SB3 ``VecEnv``
(through :class:`~rlbench.envs.vec_base.VecEnvBase`, so a run that never uses SB3 never
imports it, nor torch)."""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding

from rlbench.envs.base import Core
from rlbench.envs.vec_base import VecEnvBase, VecEnvIndices, is_sb3_monitor


class BatchedVecEnv(VecEnvBase):
    """``N`` copies of a :class:`Core` behind stable-baselines3's ``VecEnv`` interface.

    Auto-resets finished copies (their final observation goes to
    ``infos[i]["terminal_observation"]``, their episode return and length to
    ``infos[i]["episode"]``, as SB3's ``VecMonitor`` would). Infos of copies that did not
    finish are empty dicts shared between steps, to keep the per-step cost numpy-only; the
    full per-copy step info is in :attr:`last_info` as arrays.
    """

    def __init__(self, core: Core, render_mode: str | None = None) -> None:
        self.core = core
        self.render_mode = render_mode
        n = core.num_envs
        self._rngs: list[np.random.Generator] = [seeding.np_random(None)[0] for _ in range(n)]
        self._actions = np.zeros(n, dtype=np.int64)
        self._empty_infos: list[dict[str, Any]] = [{} for _ in range(n)]
        self._ep_return = np.zeros(n, dtype=np.float64)
        self._ep_length = np.zeros(n, dtype=np.int64)
        self._t0 = time.perf_counter()
        self.last_info: dict[str, np.ndarray] = {}
        super().__init__(n, core.observation_space, core.action_space)

    # -- the VecEnv interface ------------------------------------------------------------
    def reset(self) -> np.ndarray:
        for i, s in enumerate(self._seeds):
            if s is not None:
                self._rngs[i] = seeding.np_random(int(s))[0]
        self._reset_seeds()
        self._reset_options()
        self.core.reset_copies(np.ones(self.num_envs, dtype=bool), self._rngs)
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        return self.core.observe()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        result = self.core.step(self._actions)
        self.last_info = result.info
        self._ep_return += result.reward
        self._ep_length += 1
        done = result.terminated | result.truncated
        obs = self.core.observe()
        infos = self._empty_infos
        if done.any():
            # a core's info arrays may alias its state, which the reset below overwrites
            self.last_info = {k: np.array(v, copy=True) for k, v in result.info.items()}
            infos = list(infos)
            idx = np.flatnonzero(done)
            elapsed = round(time.perf_counter() - self._t0, 6)
            for i in idx:
                infos[i] = {k: v[i].item() for k, v in result.info.items()}
                infos[i]["terminal_observation"] = obs[i].copy()
                truncated_only = result.truncated[i] and not result.terminated[i]
                infos[i]["TimeLimit.truncated"] = bool(truncated_only)
                infos[i]["episode"] = {
                    "r": float(self._ep_return[i]),
                    "l": int(self._ep_length[i]),
                    "t": elapsed,
                }
            self.core.reset_copies(done, self._rngs)
            self._ep_return[done] = 0.0
            self._ep_length[done] = 0
            obs = self.core.observe()
        return obs, result.reward.copy(), done, infos

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        if attr_name == "render_mode":
            return [self.render_mode for _ in self._get_indices(indices)]
        value = getattr(self.core, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.core, attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        method = getattr(self.core, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        # Episode statistics are recorded here, as a Monitor would: report it so SB3's
        # evaluate_policy does not warn about missing episode info.
        return [is_sb3_monitor(wrapper_class) for _ in self._get_indices(indices)]
