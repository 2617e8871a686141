"""One numpy core per environment, two faces: a gymnasium ``Env`` and an SB3 ``VecEnv``.

Every environment's dynamics are written once, vectorised over ``N`` copies (a :class:`Core`).
The gymnasium environment is the core with ``N = 1``; the batched environment is the same core
with ``N`` copies, stepped by one numpy call. Each copy owns its own ``numpy.random.Generator``,
seeded exactly as gymnasium seeds a single environment, so copy ``i`` of a batch seeded with
``s`` follows the same trajectory as a single environment reset with ``seed=s + i`` (and, after
an episode ends, reset again without a seed). That equality is tested, not assumed.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces


@dataclass
class StepResult:
    """What a core returns for one step of all ``N`` copies.

    ``info`` maps a name to an array of shape ``(N,)``; a single environment turns it into a
    dict of Python scalars.
    """

    reward: np.ndarray  # (N,) float64
    terminated: np.ndarray  # (N,) bool
    truncated: np.ndarray  # (N,) bool
    info: dict[str, np.ndarray]


class Core(abc.ABC):
    """Dynamics of ``N`` copies of one environment, held as arrays of leading dimension ``N``.

    Subclasses set ``observation_space`` and ``action_space`` (those of ONE copy) in
    ``__init__``, validate their constructor arguments (raise ``ValueError`` naming the
    argument), and implement :meth:`reset_copies`, :meth:`observe` and :meth:`step`.
    ``render_keys`` names the ``info`` entries that the ``rgb_array`` plot draws, one panel each;
    ``info_aggregates`` says how evaluation summarises each ``info`` entry over an episode
    (``"sum"``: totals such as cost or violations; ``"mean"``: levels such as utilisation).
    ``info_units`` says, once for every reader (the report's operations table), what each
    aggregate means with its unit and summary: ``"cost ($ per episode)"``, ``"utilisation
    (0-1, mean)"``; every ``info_aggregates`` key has one (tested), in the order the report
    shows them. ``return_meaning`` is one short clause on what an episode's return measures
    (``"minus dollars, so closer to 0 is better"``), for reports that compare returns.
    ``tabular_hint`` suggests a discretisation for tabular agents (``obs_indices``, ``bins``,
    ``low``, ``high``, ``q_init``), used where the ``algo`` config leaves them unset.
    """

    observation_space: spaces.Box
    action_space: spaces.Discrete
    render_keys: ClassVar[tuple[str, ...]] = ()
    info_aggregates: ClassVar[dict[str, str]] = {}
    info_units: ClassVar[dict[str, str]] = {}
    return_meaning: ClassVar[str] = ""
    tabular_hint: ClassVar[dict[str, Any]] = {}

    def __init__(self, num_envs: int) -> None:
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = int(num_envs)

    @abc.abstractmethod
    def reset_copies(self, mask: np.ndarray, rngs: Sequence[np.random.Generator]) -> None:
        """Start a new episode in every copy ``i`` where ``mask[i]``, drawing from ``rngs[i]``."""

    @abc.abstractmethod
    def observe(self) -> np.ndarray:
        """Observation of all copies, shape ``(N, *observation_space.shape)``, float32."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> StepResult:
        """Advance every copy by one step with ``actions`` (shape ``(N,)``, int)."""

    def format_step(self, info: dict[str, Any]) -> str:
        """One line of text for the ``ansi`` render of one copy's step ``info``."""
        parts = (f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        return " ".join(parts)


class CoreEnv(gym.Env):
    """A gymnasium environment that is a :class:`Core` with one copy.

    Subclasses set ``core_cls`` and document the environment in their class docstring.
    Renders ``ansi`` (the latest step as one line) and ``rgb_array`` (a matplotlib figure of
    the episode so far, one panel per ``core_cls.render_keys`` entry).
    """

    core_cls: ClassVar[type[Core]]
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            modes = self.metadata["render_modes"]
            raise ValueError(f"render_mode must be one of {modes} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.core = self.core_cls(num_envs=1, **kwargs)
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space
        self._history: list[dict[str, Any]] = []

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.core.reset_copies(np.ones(1, dtype=bool), [self.np_random])
        self._history = []
        return self.core.observe()[0], {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        result = self.core.step(np.asarray([action], dtype=np.int64))
        info = {k: v[0].item() for k, v in result.info.items()}
        self._history.append(info)
        return (
            self.core.observe()[0],
            float(result.reward[0]),
            bool(result.terminated[0]),
            bool(result.truncated[0]),
            info,
        )

    def render(self) -> str | np.ndarray | None:
        if self.render_mode == "ansi":
            if not self._history:
                return "(no step yet)"
            return f"t={len(self._history):4d} " + self.core.format_step(self._history[-1])
        if self.render_mode == "rgb_array":
            from rlbench.envs.render import episode_figure_rgb

            return episode_figure_rgb(self._history, self.core.render_keys, title=self.spec_id)
        return None

    @property
    def spec_id(self) -> str:
        return self.spec.id if self.spec is not None else type(self).__name__
