"""A per-context UCB1 bandit for the recommender: the seed's "faster convergence" alternative.

The recommender seed suggested Upper Confidence Bound selection instead of ε-greedy Q-learning.
Here each discrete context (the signals named in ``context``, by default all eight: five trait
bins, content type, mood, time of day) is its own 27-armed bandit. In context ``c`` with
``N_c`` pulls in total and ``n_{c,a}`` of action ``a`` (mean reward ``m_{c,a}``), learning picks
an untried action first (the lowest index), else

    argmax_a  m_{c,a} + exploration * sqrt(ln N_c / n_{c,a})

(the seed's ``exploration_param`` is 2.0). Each step's reward is the arm's payoff: a bandit
ignores that a recommendation also moves the user's mood. ``predict(deterministic=True)``
exploits: the best mean among tried actions. A context never seen in learning falls back to
the action with the best mean over all contexts (ties: lowest index). Predicting never changes
what the agent has learned.

Vectorised over copies: one step of ``N`` copies is one batch of choices from the statistics
before the step, then one batched update (``np.add.at``, so copies that pulled the same arm in
the same context all count). Contexts get table rows in the order they are first met; the file
holds the context ids, pull counts and reward sums (no pickle; an ``.npz``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from rlbench.agents.base import Agent, LearnCallback, call_back
from rlbench.agents.checkpoint_io import Checkpoint
from rlbench.agents.rules import require_core
from rlbench.errors import UserError

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv


def context_sizes() -> dict[str, int]:
    """Number of values of each recommender signal, in the order ``signals`` returns them."""
    from rlbench.envs.recommender import CONTENT_TYPES, MOODS, TIMES_OF_DAY, TRAITS

    sizes = dict.fromkeys(TRAITS, 5)
    sizes |= {"content_type": len(CONTENT_TYPES), "mood": len(MOODS)}
    return sizes | {"time_of_day": len(TIMES_OF_DAY)}


class UCBAgent(Agent):
    """Per-context UCB1 over the recommender's 27 strategies, vectorised over copies."""

    name: ClassVar[str] = "ucb"
    file_suffix: ClassVar[str] = ".npz"
    defaults: ClassVar[dict[str, Any]] = {
        "exploration": 2.0,  # c in mean + c * sqrt(ln N / n)
        "context": None,  # signal names that form the context; None: all of them
    }

    def __init__(self, env: VecEnv, cfg: Mapping[str, Any], seed: int, device: str = "cpu") -> None:
        super().__init__(env, cfg, seed, device)
        from rlbench.envs.recommender import RecommenderCore

        self.core = require_core(self.name, env, RecommenderCore, "recommender")
        s = self._settings()
        self.exploration = float(s["exploration"])
        if self.exploration < 0:
            raise UserError(f"algo.exploration must be >= 0, got {self.exploration}")
        sizes = context_sizes()
        self.context = _context_keys(s["context"], sizes)
        radix = np.array([sizes[k] for k in self.context], dtype=np.int64)
        self._strides = np.cumprod(np.r_[1, radix[::-1][:-1]])[::-1]
        self.n_actions = self._discrete_actions()
        self.ids = np.zeros(0, dtype=np.int64)  # context id of each row, in order of arrival
        self.counts = np.zeros((0, self.n_actions), dtype=np.int64)
        self.sums = np.zeros((0, self.n_actions), dtype=np.float64)
        self._row_of: dict[int, int] = {}
        self._obs: np.ndarray | None = None

    # -- the pieces ---------------------------------------------------------------------------
    def context_ids(self, obs: np.ndarray) -> np.ndarray:
        """One integer per observation: the mixed-radix number of its context signals."""
        sig = self.core.signals(np.asarray(obs))
        return np.stack([sig[k] for k in self.context], axis=-1) @ self._strides

    def rows(self, ids: np.ndarray, add: bool = False) -> np.ndarray:
        """Table rows of context ids (-1 for unseen ones, or new rows when ``add``)."""
        out = np.empty(len(ids), dtype=np.int64)
        for i, c in enumerate(ids.tolist()):
            row = self._row_of.get(c, -1)
            if row < 0 and add:
                row = self._row_of[c] = len(self._row_of)
            out[i] = row
        if add and len(self._row_of) > len(self.ids):
            self._grow()
        return out

    def _grow(self) -> None:
        new = len(self._row_of) - len(self.ids)
        self.ids = np.r_[self.ids, np.array(list(self._row_of)[len(self.ids) :], dtype=np.int64)]
        self.counts = np.vstack([self.counts, np.zeros((new, self.n_actions), np.int64)])
        self.sums = np.vstack([self.sums, np.zeros((new, self.n_actions))])

    def means(self, rows: np.ndarray) -> np.ndarray:
        """Mean reward per action for table rows (0 for untried actions), ``(len(rows), A)``."""
        return self.sums[rows] / np.maximum(self.counts[rows], 1)

    def choose(self, rows: np.ndarray) -> np.ndarray:
        """UCB1 actions for table rows (all must exist): untried first, then the bound."""
        counts = self.counts[rows]
        total = counts.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            bonus = self.exploration * np.sqrt(np.log(np.maximum(total, 1)) / counts)
        score = np.where(counts == 0, np.inf, self.means(rows) + bonus)
        return score.argmax(axis=1)

    def update(self, rows: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        """Add one pull of ``actions[i]`` with ``rewards[i]`` in row ``rows[i]`` (batched)."""
        np.add.at(self.counts, (rows, actions), 1)
        np.add.at(self.sums, (rows, actions), rewards)

    def greedy(self, rows: np.ndarray) -> np.ndarray:
        """Best tried mean per row; rows of -1 (unseen contexts) get the pooled best action."""
        pooled = self.sums.sum(axis=0) / np.maximum(self.counts.sum(axis=0), 1)
        fallback = int(np.where(self.counts.sum(axis=0) > 0, pooled, -np.inf).argmax())
        seen = rows >= 0
        out = np.full(len(rows), fallback, dtype=np.int64)
        if seen.any():
            r = rows[seen]
            tried = np.where(self.counts[r] > 0, self.means(r), -np.inf)
            out[seen] = tried.argmax(axis=1)
        return out

    def check_finite(self) -> bool:
        return bool(np.isfinite(self.sums).all())

    # -- the protocol -------------------------------------------------------------------------
    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        rows = self.rows(self.context_ids(obs))
        if deterministic:
            return self.greedy(rows)
        out = np.zeros(len(rows), dtype=np.int64)  # an unseen context: its first untried action
        seen = rows >= 0
        out[seen] = self.choose(rows[seen])
        return out

    def learn(self, total_steps: int, callback: LearnCallback | None = None) -> None:
        env, n = self.env, self.env.num_envs
        report_every = max(1000, n)
        if self._obs is None:
            self._obs = env.reset()
        reward_sum, pulls, returns = 0.0, 0, []
        t0, last = time.perf_counter(), self.num_steps
        while self.num_steps < total_steps:
            rows = self.rows(self.context_ids(self._obs), add=True)
            actions = self.choose(rows)
            self._obs, rewards, dones, infos = env.step(actions)
            self.update(rows, actions, rewards)
            reward_sum, pulls = reward_sum + float(rewards.sum()), pulls + n
            if dones.any():
                returns += [infos[i]["episode"]["r"] for i in np.flatnonzero(dones)
                            if "episode" in infos[i]]  # fmt: skip
            self.num_steps += n
            if self.num_steps - last >= report_every or self.num_steps >= total_steps:
                elapsed = max(time.perf_counter() - t0, 1e-9)
                stats = {
                    "mean_reward": reward_sum / pulls,
                    "contexts_seen": float(len(self.ids)),
                    "steps_per_second": (self.num_steps - last) / elapsed,
                }
                if returns:
                    stats["episode_return"] = float(np.mean(returns))
                if not call_back(callback, self.num_steps, stats):
                    return
                reward_sum, pulls, returns = 0.0, 0, []
                t0, last = time.perf_counter(), self.num_steps

    # -- save / load ----------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
        return {}, {"context_ids": self.ids, "counts": self.counts, "sums": self.sums}, {}

    def _restore(self, ckpt: Checkpoint) -> None:
        ids, counts, sums = (ckpt.arrays[k] for k in ("context_ids", "counts", "sums"))
        k = len(ids)
        if ids.ndim != 1 or counts.shape != (k, self.n_actions) or sums.shape != counts.shape:
            raise ValueError(f"tables of shapes {ids.shape}, {counts.shape}, {sums.shape}")
        if (counts < 0).any() or not np.isfinite(sums).all():
            raise ValueError("negative pull counts or non-finite reward sums")
        self.ids = ids.astype(np.int64)
        self.counts, self.sums = counts.astype(np.int64), sums.astype(np.float64)
        self._row_of = {int(c): i for i, c in enumerate(self.ids)}


def _context_keys(value: Sequence[str] | None, sizes: Mapping[str, int]) -> list[str]:
    if value is None:
        return list(sizes)
    keys = [str(v) for v in (value if isinstance(value, list | tuple) else [value])]
    unknown = [k for k in keys if k not in sizes]
    if not keys or unknown or len(set(keys)) != len(keys):
        raise UserError(f"algo.context must be distinct names from {', '.join(sizes)}; got {value}")
    return keys
