"""The one protocol every agent follows: ``learn`` / ``predict`` / ``save`` / ``load``.

train.py and evaluate.py only ever talk to :class:`Agent`, so a new algorithm is one subclass
and one ``conf/algo/<name>.yaml``. The base class also owns the parts every agent shares: turning
the Hydra ``algo`` group into a checked dict (a misspelt key is a ``UserError`` with a
suggestion), and the model file: one zip of JSON and arrays (see :mod:`checkpoint_io`) that
records the algorithm, its config, the seed and the step counter, so that ``load`` can rebuild
the agent on a new env and refuse a file from another algorithm or another environment shape.
"""

from __future__ import annotations

import abc
import difflib
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from gymnasium import spaces

from rlbench.agents.checkpoint_io import Checkpoint, read_checkpoint, require, write_checkpoint
from rlbench.errors import UserError

if TYPE_CHECKING:  # importing SB3 imports torch, which the baselines do not need
    from stable_baselines3.common.vec_env import VecEnv

#: ``callback(num_steps, stats)``; returning ``False`` stops learning (``None`` does not).
#: ``stats`` are plain names (``episode_return``, ``loss``): the run logs them as ``train/<name>``.
LearnCallback = Callable[[int, dict[str, float]], Any]

#: Keys of the ``algo`` group that are ours, not the algorithm's settings.
META_KEYS = frozenset({"name"})


def config_to_dict(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """A plain JSON-able ``dict`` of a Hydra ``DictConfig`` or mapping (interpolations resolved)."""
    if cfg is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    return {k: _plain(v) for k, v in dict(cfg).items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def unknown_key_error(algo: str, key: str, known: list[str]) -> UserError:
    """``UserError`` for a setting ``algo`` lacks, with a "did you mean" when one is close."""
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean algo.{close[0]}?" if close else f"; known: {', '.join(sorted(known))}"
    return UserError(f"algo.{key} is not a setting of {algo}{hint}")


def check_finite_settings(algo: str, settings: Mapping[str, Any], prefix: str = "algo.") -> None:
    """``UserError`` naming the first float setting that is NaN or infinite (at any depth)."""
    for key, value in settings.items():
        if isinstance(value, Mapping):
            check_finite_settings(algo, value, f"{prefix}{key}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{prefix}{key}={value} is not a finite number ({algo})")


class Agent(abc.ABC):
    """A policy that can learn on an SB3 ``VecEnv``, act, and be saved to one file.

    ``num_steps`` counts environment steps learned so far, summed over all copies, and
    ``learn(total_steps)`` trains until it reaches the ABSOLUTE target ``total_steps``, so a
    loaded agent continues where the saved one stopped.
    """

    name: ClassVar[str]
    #: Suffix for model files of this agent (train.py names its files with it).
    file_suffix: ClassVar[str] = ".zip"
    #: Model file format version this agent writes (:mod:`checkpoint_io`).
    file_version: ClassVar[int] = 1
    #: Settings this agent understands, with their defaults (``None``: no fixed key list).
    defaults: ClassVar[dict[str, Any] | None] = None

    def __init__(self, env: VecEnv, cfg: Mapping[str, Any], seed: int, device: str = "cpu") -> None:
        self.env = env
        self.cfg = config_to_dict(cfg)
        self.cfg["name"] = self.name
        self.seed = int(seed)
        self.device = device
        self.num_steps = 0

    @classmethod
    def variant(cls, cfg: Mapping[str, Any], env: VecEnv, device: str) -> type[Agent]:
        """The class that builds ``cfg`` on ``env``: this one, unless an algorithm has a fast
        path for some configs and another class for the rest (``dqn``: numpy or SB3's)."""
        return cls

    @classmethod
    def check_settings(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """``UserError`` for settings that cannot work, judged without an env, so a sweep can
        check every value of its searched ranges before its first trial; the settings over
        :attr:`defaults`. Here: unknown keys and non-finite numbers; subclasses add ranges."""
        return cls._settings_of(config_to_dict(cfg))

    # -- the protocol ----------------------------------------------------------------------
    @abc.abstractmethod
    def learn(self, total_steps: int, callback: LearnCallback | None = None) -> None:
        """Train until ``self.num_steps >= total_steps``; ``callback`` after every chunk of work."""

    @abc.abstractmethod
    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Actions (shape ``(N,)``, int) for a batch of observations (shape ``(N, *obs_shape)``)."""

    def decide(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict`'s actions and :meth:`action_probabilities`' pi(a|s) for one batch:
        what a decision server answers. Agents with a network override it to do one forward
        pass instead of two."""
        # pi first: it never changes state, and predict may (a rule's cooldown)
        pi = self.action_probabilities(obs, deterministic=deterministic)
        return self.predict(obs, deterministic=deterministic), pi

    def outputs(self, obs: np.ndarray) -> np.ndarray | None:
        """The raw numbers a batch's decisions are made from (logits, Q-values), one row per
        observation, or None for a policy without a network. A decision server checks them:
        an argmax over NaN picks action 0 with a confident-looking probability."""
        return None

    def history_setting(self) -> str | None:
        """The setting that makes this policy's decision depend on its own past (a rule's
        cooldown), or None: a log's propensities and off-policy estimates are pi(a|s) of the
        observation alone, which such a policy is not."""
        return None

    def action_probabilities(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """pi(a|s): the distribution :meth:`predict` draws each action from, shape ``(N, A)``,
        rows summing to 1, for a discrete action space.

        What a serving or logging layer records as the propensity of the action taken, and
        what off-policy evaluation needs of a target policy. It never changes the agent's state
        (no random draw, no cooldown step). This default is one-hot on :meth:`predict`: right for
        rules whose ``predict`` is a pure function; agents that explore or keep state override it.
        """
        return one_hot(self.predict(obs, deterministic=deterministic), self._discrete_actions())

    def check_finite(self) -> bool:
        """False when learning diverged (NaN or inf in what the agent learned)."""
        return True

    def save(self, path: str | Path) -> None:
        """Write everything needed to act and to resume learning into ONE file (no pickle)."""
        state, arrays, blobs = self._state()
        meta = {
            "cfg": self.cfg,
            "seed": self.seed,
            "num_steps": int(self.num_steps),
            "env": env_signature(self.env),
            "state": state,
        }
        write_checkpoint(path, self.name, meta, arrays, blobs, version=self.file_version)

    @classmethod
    def load(cls, path: str | Path, env: VecEnv, device: str = "cpu") -> Agent:
        """Rebuild the agent saved at ``path`` on ``env``; ``UserError`` on a wrong or bad file."""
        ckpt = read_checkpoint(path, expected_algo=cls.name)
        require(ckpt, path, ["cfg", "seed", "num_steps", "env", "state"])
        check_env_matches(ckpt, path, env)
        try:
            built = cls.variant(ckpt.meta["cfg"], env, device)
            agent = built(env, ckpt.meta["cfg"], int(ckpt.meta["seed"]), device)
            agent._restore(ckpt)
            agent.num_steps = int(ckpt.meta["num_steps"])
        except UserError:
            raise
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise UserError(f"{path} is not a valid rlbench {cls.name} model: {exc}") from exc
        return agent

    # -- what subclasses provide for save/load ----------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
        """JSON-able state, named arrays and named blobs beyond config, seed and step counter."""
        return {}, {}, {}

    def _restore(self, ckpt: Checkpoint) -> None:  # noqa: B027 - optional hook, no-op default
        """Take back what :meth:`_state` saved (raise ``KeyError``/``ValueError`` if malformed)."""

    # -- helpers ------------------------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        """``self.cfg`` minus meta keys, over :attr:`defaults`; unknown keys are a ``UserError``."""
        return self._settings_of(self.cfg)

    @classmethod
    def _settings_of(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        given = {k: v for k, v in cfg.items() if k not in META_KEYS}
        if cls.defaults is None:
            return given
        for key in given:
            if key not in cls.defaults:
                raise unknown_key_error(cls.name, key, list(cls.defaults))
        settings = {**cls.defaults, **given}
        check_finite_settings(cls.name, settings)
        return settings

    def _discrete_actions(self) -> int:
        """Number of actions; ``UserError`` if the env's action space is not ``Discrete``."""
        space = self.env.action_space
        if not isinstance(space, spaces.Discrete):
            raise UserError(f"{self.name} needs a discrete action space; the env has {space}")
        return int(space.n)


def env_name(env: VecEnv) -> str:
    """A readable name for an env in error messages (its core's class, else the VecEnv's)."""
    from rlbench.envs import core_of

    env = getattr(env, "unwrapped", env)
    core = core_of(env)
    return type(core if core is not None else env).__name__


def require_discrete_actions(algo: str, env: VecEnv) -> None:
    """``UserError`` naming the env unless its actions are ``Discrete`` (DQN's Q-values are one
    per action)."""
    if not isinstance(env.action_space, spaces.Discrete):
        raise UserError(f"{algo} needs a discrete action space; {env_name(env)} has "
                        f"{env.action_space}")  # fmt: skip


def one_hot(actions: np.ndarray, n_actions: int) -> np.ndarray:
    """``(N, n_actions)`` float64 rows with a 1 at each action: a deterministic policy's pi."""
    actions = np.asarray(actions, dtype=np.int64).reshape(-1)
    out = np.zeros((len(actions), n_actions))
    out[np.arange(len(actions)), actions] = 1.0
    return out


def epsilon_greedy(greedy: np.ndarray, n_actions: int, epsilon: float) -> np.ndarray:
    """pi of epsilon-greedy: ``1 - eps + eps/A`` on the greedy action, ``eps/A`` elsewhere."""
    return (1.0 - epsilon) * one_hot(greedy, n_actions) + epsilon / n_actions


def env_signature(env: VecEnv) -> dict[str, Any]:
    """What a model depends on in an env: observation shape and action count (or shape)."""
    act = env.action_space
    actions = int(act.n) if isinstance(act, spaces.Discrete) else list(act.shape or ())
    return {"observation_shape": list(env.observation_space.shape or ()), "actions": actions}


def check_env_matches(ckpt: Checkpoint, path: str | Path, env: VecEnv) -> None:
    """``UserError`` if ``env`` has other observation/action shapes than the saved agent's env."""
    saved, here = ckpt.meta["env"], env_signature(env)
    if saved != here:
        raise UserError(
            f"{path} was trained on an env with observations {saved.get('observation_shape')} "
            f"and actions {saved.get('actions')}; this env has observations "
            f"{here['observation_shape']} and actions {here['actions']}"
        )


def call_back(callback: LearnCallback | None, num_steps: int, stats: dict[str, float]) -> bool:
    """Run the user's callback; ``False`` means stop (only an explicit ``False``)."""
    if callback is None:
        return True
    return callback(int(num_steps), stats) is not False


class LearnReporter:
    """Calls ``callback(num_steps, stats)`` between chunks of a learning loop: at a rollout's
    start once ``every`` steps have passed (after the previous update, so a checkpoint written
    by the callback holds the weights that match ``num_steps``), and once more at the end. Stats:
    the agent's :meth:`Agent.training_stats`, steps per second, and the mean return and length
    of the episodes that ended since the last report (their ``episode`` infos). ``stop`` turns
    True when the callback returns False."""

    def __init__(self, agent: Agent, callback: LearnCallback | None, every: int) -> None:
        self.agent, self.callback, self.every = agent, callback, every
        self.stop = False
        self.returns: list[float] = []
        self.lengths: list[float] = []
        self.last_steps, self.t0 = agent.num_steps, time.perf_counter()

    def rollout_start(self) -> None:
        if not self.stop and self.agent.num_steps - self.last_steps >= self.every:
            self._report()

    def step(self, dones: np.ndarray, infos: list[dict[str, Any]]) -> bool:
        """Note the episodes that ended at this step; False when learning should stop."""
        if dones.any():
            for i in np.flatnonzero(dones):
                episode = infos[i].get("episode")
                if episode is not None:
                    self.returns.append(float(episode["r"]))
                    self.lengths.append(float(episode["l"]))
        return not self.stop

    def training_end(self) -> None:
        if not self.stop and self.agent.num_steps > self.last_steps:
            self._report()

    def _report(self) -> None:
        now = time.perf_counter()
        stats = self.agent.training_stats()
        steps = self.agent.num_steps
        stats["steps_per_second"] = (steps - self.last_steps) / max(now - self.t0, 1e-9)
        if self.returns:
            stats["episode_return"] = float(np.mean(self.returns))
            stats["episode_length"] = float(np.mean(self.lengths))
        self.returns, self.lengths = [], []
        self.last_steps, self.t0 = steps, now
        if not call_back(self.callback, steps, stats):
            self.stop = True
