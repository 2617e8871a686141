"""Stable-baselines3's ``VecEnv`` interface without importing stable-baselines3.

Importing SB3 imports torch: about 3 s of CPU per process, which a run of a rule, a random
baseline or tabular Q-learning never needs (and a threshold sweep or a test suite pays per
process). :class:`VecEnvBase` implements the concrete part of SB3's ``VecEnv`` (seeds, options,
``step``, attribute lookup through wrappers) with the same semantics, and
:func:`register_with_sb3` makes every subclass an ``isinstance`` of SB3's ``VecEnv`` (an ABC
registration) for the code that does import SB3, so SB3 takes our envs as they are.
"""

from __future__ import annotations

import abc
import sys
from collections.abc import Iterable, Sequence
from copy import deepcopy
from typing import Any

import numpy as np
from gymnasium import spaces

VecEnvIndices = None | int | Iterable[int]


class VecEnvBase(abc.ABC):
    """The parts of SB3's ``VecEnv`` that are not abstract, as SB3 2.x defines them."""

    render_mode: str | None = None

    def __init__(
        self, num_envs: int, observation_space: spaces.Space, action_space: spaces.Space
    ) -> None:
        self.num_envs = num_envs
        self.observation_space = observation_space
        self.action_space = action_space
        self.reset_infos: list[dict[str, Any]] = [{} for _ in range(num_envs)]
        self._seeds: list[int | None] = [None for _ in range(num_envs)]
        self._options: list[dict[str, Any]] = [{} for _ in range(num_envs)]
        self.metadata: dict[str, Any] = {
            "render_modes": [] if self.render_mode is None else [self.render_mode]
        }

    @abc.abstractmethod
    def reset(self) -> np.ndarray: ...

    @abc.abstractmethod
    def step_async(self, actions: np.ndarray) -> None: ...

    @abc.abstractmethod
    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]: ...

    @abc.abstractmethod
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]: ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
        self.step_async(actions)
        return self.step_wait()

    def close(self) -> None:
        return None  # nothing to release: the copies are arrays

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Seeds ``seed + i`` for copy ``i``, used at the next ``reset()`` (as SB3's)."""
        if seed is None:
            seed = int(np.random.randint(0, np.iinfo(np.uint32).max, dtype=np.uint32))
        self._seeds = [seed + i for i in range(self.num_envs)]
        return self._seeds

    def set_options(self, options: list[dict] | dict | None = None) -> None:
        options = {} if options is None else options
        if isinstance(options, dict):
            self._options = deepcopy([options] * self.num_envs)
        else:
            self._options = deepcopy(options)

    def _reset_seeds(self) -> None:
        self._seeds = [None for _ in range(self.num_envs)]

    def _reset_options(self) -> None:
        self._options = [{} for _ in range(self.num_envs)]

    def has_attr(self, attr_name: str) -> bool:
        try:
            self.get_attr(attr_name)
        except AttributeError:
            return False
        return True

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]

    def render(self, mode: str | None = None) -> np.ndarray | None:
        return None  # our envs draw figures of whole episodes (rlbench.envs.render), not frames

    @property
    def unwrapped(self) -> VecEnvBase:
        return self

    def getattr_depth_check(self, name: str, already_found: bool) -> str | None:
        if hasattr(self, name) and already_found:
            return f"{type(self).__module__}.{type(self).__name__}"
        return None

    def _get_indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices


def register_with_sb3() -> None:
    """Make every :class:`VecEnvBase` an instance of SB3's ``VecEnv`` (imports SB3: call it
    where SB3 is imported anyway)."""
    from stable_baselines3.common.vec_env import VecEnv

    if not issubclass(VecEnvBase, VecEnv):
        VecEnv.register(VecEnvBase)


def is_sb3_monitor(wrapper_class: type) -> bool:
    """Whether ``wrapper_class`` is SB3's ``Monitor`` (without importing SB3 to ask)."""
    module = sys.modules.get("stable_baselines3.common.monitor")
    return module is not None and wrapper_class is getattr(module, "Monitor", None)
