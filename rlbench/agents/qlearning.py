"""Tabular Q-learning on a discretised observation, one numpy update for all copies per step.

The seed projects' Q-learning, made fast enough for sweeps: every step of the batched env is one
vectorised ε-greedy choice and one vectorised table update, with no Python loop over copies.

Discretisation: each used observation dimension ``j`` (all, or ``obs_indices``) is cut into
``bins[j]`` equal-width bins between ``low[j]`` and ``high[j]`` (from the observation space
unless configured; values outside are clipped into the edge bins). The bin indices form one state
index into a table of shape ``(prod(bins), n_actions)``.

Update: for a batch of transitions ``(s_i, a_i, r_i, s'_i)``, with
``target_i = r_i + gamma * max_a Q[s'_i, a]`` (no bootstrap when the episode terminated; a
time-limit truncation bootstraps from the final observation) and ``delta_i = target_i -
Q[s_i, a_i]``, every visited pair moves by ``learning_rate`` times the MEAN of its ``delta_i``.
With one copy this is textbook Q-learning; with many copies in the same state it is one update
with the averaged target, rather than N stacked updates that would overshoot.

Exploration: ε-greedy, ``epsilon`` at the start, multiplied by ``epsilon_decay`` per finished
episode (``epsilon_decay_per: episode``, the seed's choice) or per environment step
(``epsilon_decay_per: step``, for envs whose episodes rarely end), never below ``epsilon_min``.
Greedy ties go to the lowest action index.

The table is saved as ``q.npy`` inside the agent's zip, which ``numpy.load(path,
allow_pickle=False)`` also reads as an ``.npz``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from gymnasium import spaces

from rlbench.agents.base import Agent, LearnCallback, call_back, epsilon_greedy
from rlbench.agents.checkpoint_io import Checkpoint
from rlbench.envs import core_of
from rlbench.errors import UserError

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv

BINCOUNT_TABLE_FACTOR = 64  # bincount over the whole table when it is this small per batch
SMALL_BATCH = 16  # transitions per update up to which grouping runs in plain Python
MAX_STATES = 10_000_000  # 10M states x actions x 8 bytes is already hundreds of MB


class QLearningAgent(Agent):
    """Tabular ε-greedy Q-learning, vectorised over the copies of a batched env."""

    name: ClassVar[str] = "qlearning"
    file_suffix: ClassVar[str] = ".npz"
    defaults: ClassVar[dict[str, Any]] = {
        # None for the next five: the environment's suggestion (its core's ``tabular_hint``),
        # else 10 bins over every dimension of the observation space, and 0.
        "bins": None,  # bins per used dimension: one int for all, or a list
        "obs_indices": None,  # observation dimensions to use (None: all)
        "low": None,  # lower bin edge per used dimension (None: observation_space.low)
        "high": None,  # upper bin edge per used dimension (None: observation_space.high)
        "learning_rate": 0.2,
        "gamma": 0.99,
        "epsilon": 1.0,
        "epsilon_decay": 0.99,
        "epsilon_decay_per": "episode",  # episode | step
        "epsilon_min": 0.05,
        "q_init": None,
    }

    @classmethod
    def check_settings(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        s = super().check_settings(cfg)
        if s["epsilon_decay_per"] not in ("episode", "step"):
            raise UserError(
                f"algo.epsilon_decay_per must be episode or step, got {s['epsilon_decay_per']}"
            )
        for key, lo, hi in (("learning_rate", 0, 1), ("gamma", 0, 1), ("epsilon_decay", 0, 1)):
            if not lo < float(s[key]) <= hi:
                raise UserError(f"algo.{key} must be in ({lo}, {hi}], got {s[key]}")
        return s

    def __init__(self, env: VecEnv, cfg: Mapping[str, Any], seed: int, device: str = "cpu") -> None:
        super().__init__(env, cfg, seed, device)
        s = _with_env_hint(self.check_settings(self.cfg), env)
        self.n_actions = self._discrete_actions()
        space = env.observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise UserError(f"qlearning needs a flat Box observation space; the env has {space}")
        self.indices = _indices(s["obs_indices"], space.shape[0])
        d = len(self.indices)
        self.bins = _per_dim("bins", s["bins"], d).astype(np.int64)
        if (self.bins < 1).any():
            raise UserError(f"algo.bins must be >= 1 per dimension, got {s['bins']}")
        self.low = _per_dim("low", s["low"], d, space.low[self.indices])
        self.high = _per_dim("high", s["high"], d, space.high[self.indices])
        for j, (lo, hi) in enumerate(zip(self.low, self.high, strict=True)):
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise UserError(
                    f"qlearning cannot bin observation dimension {self.indices[j]}: bounds "
                    f"[{lo}, {hi}]; set algo.low/algo.high or leave it out with algo.obs_indices"
                )
        n_states = int(np.prod(self.bins, dtype=np.float64))
        if n_states > MAX_STATES:
            raise UserError(
                f"qlearning table would have {n_states:,} states (bins {self.bins.tolist()}); "
                f"at most {MAX_STATES:,}: use fewer bins or fewer algo.obs_indices"
            )
        self.lr, self.gamma = float(s["learning_rate"]), float(s["gamma"])
        self.epsilon, self.epsilon_decay = float(s["epsilon"]), float(s["epsilon_decay"])
        self.epsilon_min = float(s["epsilon_min"])
        self.decay_per = str(s["epsilon_decay_per"])
        self.q = np.full((n_states, self.n_actions), float(s["q_init"]), dtype=np.float64)
        self.visited = np.zeros(n_states, dtype=bool)
        self.episodes = 0
        self.rng = np.random.default_rng(self.seed)
        # row-major strides: stride[j] = prod(bins[j+1:])
        self._strides = np.cumprod(np.r_[1, self.bins[::-1][:-1]])[::-1].astype(np.int64)
        self._scale = self.bins / (self.high - self.low)
        self._obs: np.ndarray | None = None

    # -- the pieces, each one vectorised -----------------------------------------------------
    def discretise(self, obs: np.ndarray) -> np.ndarray:
        """State indices, shape ``(N,)``, of observations of shape ``(N, obs_dim)``."""
        x = np.asarray(obs, dtype=np.float64)[:, self.indices]
        b = np.floor((x - self.low) * self._scale).astype(np.int64)
        np.clip(b, 0, self.bins - 1, out=b)
        return b @ self._strides

    def act(self, states: np.ndarray, epsilon: float) -> np.ndarray:
        """ε-greedy actions for state indices ``states`` (greedy when ``epsilon == 0``)."""
        greedy = self.q[states].argmax(axis=1)
        if epsilon <= 0.0:
            return greedy
        explore = self.rng.random(len(states)) < epsilon
        random = self.rng.integers(self.n_actions, size=len(states))
        return np.where(explore, random, greedy)

    def update(
        self,
        states: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_states: np.ndarray,
        terminated: np.ndarray,
    ) -> float:
        """One Q-learning update for a batch of transitions; returns the mean ``|delta|``."""
        bootstrap = np.where(terminated, 0.0, self.q[next_states].max(axis=1))
        flat = states * self.n_actions + actions
        qflat = self.q.reshape(-1)
        delta = rewards + self.gamma * bootstrap - qflat[flat]
        self._add_averaged(qflat, flat, delta)
        self.visited[states] = True
        return float(np.abs(delta).mean())

    def _add_averaged(self, qflat: np.ndarray, flat: np.ndarray, delta: np.ndarray) -> None:
        """``qflat[flat] += lr * delta``, where copies that visit the same (state, action) in
        one step share one averaged update; the cheapest grouping for the table and batch."""
        if qflat.size <= BINCOUNT_TABLE_FACTOR * len(flat):  # small table: one pass over it
            sums = np.bincount(flat, weights=delta, minlength=qflat.size)
            counts = np.bincount(flat, minlength=qflat.size)
            qflat += self.lr * sums / np.maximum(counts, 1)
        elif len(flat) <= SMALL_BATCH:  # a few copies: numpy's per-call cost is the whole update
            groups: dict[int, list[float]] = {}
            for pair, d in zip(flat.tolist(), delta.tolist(), strict=True):
                entry = groups.setdefault(pair, [0.0, 0])  # left to right: reduceat may differ
                entry[0] += d  # in the last bit where it sums three or more pairwise
                entry[1] += 1
            for pair, (total, count) in groups.items():
                qflat[pair] += self.lr * total / count
        else:  # large table: group equal pairs by sorting (cheaper than np.unique here)
            order = np.argsort(flat, kind="stable")
            pairs = flat[order]
            new_pair = pairs[1:] != pairs[:-1]
            if new_pair.all():  # all pairs distinct: a plain fancy-index update
                qflat[flat] += self.lr * delta
            else:
                first = np.concatenate(([0], np.flatnonzero(new_pair) + 1))
                sums = np.add.reduceat(delta[order], first)
                counts = np.diff(first, append=len(flat))
                qflat[pairs[first]] += self.lr * sums / counts

    def check_finite(self) -> bool:
        return bool(np.isfinite(self.q).all())

    # -- the protocol --------------------------------------------------------------------------
    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        states = self.discretise(obs)
        return self.act(states, 0.0 if deterministic else self.epsilon).astype(np.int64)

    def action_probabilities(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Epsilon-greedy on the table at the current epsilon (one-hot when deterministic)."""
        greedy = self.q[self.discretise(obs)].argmax(axis=1)
        return epsilon_greedy(greedy, self.n_actions, 0.0 if deterministic else self.epsilon)

    def learn(self, total_steps: int, callback: LearnCallback | None = None) -> None:
        env, n = self.env, self.env.num_envs
        report_every = max(1000, n)
        if self._obs is None:
            self._obs = env.reset()
        states = self.discretise(self._obs)
        returns: list[float] = []
        td_sum, updates = 0.0, 0
        t0, last_steps = time.perf_counter(), self.num_steps
        while self.num_steps < total_steps:
            actions = self.act(states, self.epsilon)
            obs, rewards, dones, infos = env.step(actions)
            next_states = self.discretise(obs)
            boot_states, terminated = next_states, dones
            if dones.any():
                boot_states, terminated = next_states.copy(), dones.copy()
                finished = np.flatnonzero(dones)
                for i in finished:
                    info = infos[i]
                    if info.get("TimeLimit.truncated", False):
                        terminated[i] = False
                        boot_states[i] = self.discretise(info["terminal_observation"][None])[0]
                    if "episode" in info:
                        returns.append(float(info["episode"]["r"]))
                self.episodes += len(finished)
                if self.decay_per == "episode":
                    self._decay(len(finished))
            td_sum += self.update(states, actions, rewards, boot_states, terminated)
            updates += 1
            if self.decay_per == "step":
                self._decay(n)
            states, self._obs = next_states, obs
            self.num_steps += n
            if self.num_steps - last_steps >= report_every or self.num_steps >= total_steps:
                elapsed = max(time.perf_counter() - t0, 1e-9)
                stats = {
                    "epsilon": self.epsilon,
                    "td_error": td_sum / updates,
                    "states_visited": float(self.visited.mean()),
                    "steps_per_second": (self.num_steps - last_steps) / elapsed,
                }
                if returns:
                    stats["episode_return"] = float(np.mean(returns))
                if not call_back(callback, self.num_steps, stats):
                    return
                returns, td_sum, updates = [], 0.0, 0
                t0, last_steps = time.perf_counter(), self.num_steps

    def _decay(self, times: int) -> None:
        self.epsilon = max(self.epsilon_min, self.epsilon * self.epsilon_decay**times)

    # -- save / load -----------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
        state = {
            "epsilon": self.epsilon,
            "episodes": self.episodes,
            "rng": self.rng.bit_generator.state,
        }
        return state, {"q": self.q, "visited": self.visited}, {}

    def _restore(self, ckpt: Checkpoint) -> None:
        q = ckpt.arrays["q"]
        if q.shape != self.q.shape or not np.issubdtype(q.dtype, np.floating):
            raise ValueError(f"Q-table of shape {q.shape} ({q.dtype}), expected {self.q.shape}")
        if not np.isfinite(q).all():
            raise ValueError("Q-table holds NaN or infinite values")
        self.q = q.astype(np.float64, copy=True)
        visited = ckpt.arrays.get("visited")
        if visited is not None and visited.shape == self.visited.shape:
            self.visited = visited.astype(bool, copy=True)
        state = ckpt.meta["state"]
        self.epsilon = float(state["epsilon"])
        self.episodes = int(state["episodes"])
        self.rng.bit_generator.state = state["rng"]


def _indices(value: Sequence[int] | None, dim: int) -> np.ndarray:
    if value is None:
        return np.arange(dim)
    idx = np.asarray(list(value), dtype=np.int64)
    if idx.size == 0 or (idx < 0).any() or (idx >= dim).any() or len(set(idx)) != idx.size:
        raise UserError(
            f"algo.obs_indices must be distinct observation indices in 0..{dim - 1}, got {value}"
        )
    return idx


def _per_dim(key: str, value: Any, d: int, default: np.ndarray | None = None) -> np.ndarray:
    """A per-dimension array from a scalar, a list of length ``d``, or ``None`` (the default)."""
    if value is None:
        if default is None:
            raise UserError(f"algo.{key} must be set")
        return np.asarray(default, dtype=np.float64)
    if np.isscalar(value):
        return np.full(d, float(value))
    arr = np.asarray(list(value), dtype=np.float64)
    if arr.shape != (d,):
        raise UserError(f"algo.{key} needs one value or {d} (one per used dimension), got {value}")
    return arr


def _with_env_hint(settings: dict[str, Any], env: VecEnv) -> dict[str, Any]:
    """Fill unset discretisation settings from the environment's ``tabular_hint``.

    Which observation dimensions carry the decision, and in how many bins, is knowledge about
    the environment, so each environment states it once instead of every preset repeating it.
    """
    hint = dict(getattr(core_of(env), "tabular_hint", None) or {})
    fallback = {"bins": 10, "q_init": 0.0}
    out = dict(settings)
    for key in ("bins", "obs_indices", "low", "high", "q_init"):
        if out.get(key) is None:
            out[key] = hint.get(key, fallback.get(key))
    return out
