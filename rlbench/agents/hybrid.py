"""The script-scheduler seed's hybrid agent: an MLP prior with tabular Q-learning on top.

The seed predicted a baseline run interval with an MLP (pre-trained on synthetic data) and let
Q-learning scale the interval by ×0.85 / keep / ×1.15. Here, for ``rlbench/ScriptScheduler-v0``:

**The MLP** (torch; 3 inputs, ``hidden`` ReLU units, 1 output) maps the seed's state, as the
environment encodes it (observation entries 0-2: the average gap on the env's log scale, the
preference as ``(pref + 1) / 2``, manual runs / window) to a baseline interval on the same log
scale. It is trained once, before the first decision, on ``mlp_samples`` synthetic states the
way the seed's ``train_dummy_mlp.py`` made them: average gap log-uniform over the env's
interval range, manual count uniform over ``0..manual_window``, preference uniform over
{-1, 0, +1}, target ``max(min_interval, avg - manual_weight * manual - pref_weight * pref +
N(0, noise_sd))`` minutes (the seed's weights 1 and 1.5). Adam, full batch, ``mlp_epochs``
epochs, in a forked torch RNG seeded by the agent's seed (so the run's global streams are not
touched). After training only its weights are used (numpy forward pass, saved as arrays).

**How the prediction enters.** (1) The state: the Q-table is indexed by the bin of
``log(interval / baseline)`` (``ratio_bins`` equal bins over ``±log(ratio_range)``, the edge
bins open-ended), the preference signal (-1/0/+1) and the manual count (capped at
``manual_bins - 1``): ``ratio_bins × 3 × manual_bins`` states. (2) The action choice: the
"prior action" of a state moves the interval toward the baseline (×0.85 if the bin's centre is
above ``+log(1.15)/2``, ×1.15 if below ``-log(1.15)/2``, else keep); its table entry starts at
``q_init + prior_bonus``, the others at ``q_init``. So with nothing learned yet (and in states
learning never visited) the agent follows the MLP; Q-learning overrides it where experience says
otherwise.

**The Q-learning** is :class:`~rlbench.agents.qlearning.QLearningAgent`'s, unchanged: ε-greedy,
vectorised update averaged over copies that share a state-action pair, ε decayed per episode or
per step. Only the state function (``discretise``) and the table's start differ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from rlbench.agents.base import Agent
from rlbench.agents.checkpoint_io import Checkpoint
from rlbench.agents.qlearning import QLearningAgent
from rlbench.agents.rules import require_core
from rlbench.errors import UserError

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv

DECREASE, KEEP, INCREASE = 0, 1, 2
MLP_ARRAYS = ("mlp_w1", "mlp_b1", "mlp_w2", "mlp_b2")


class HybridAgent(QLearningAgent):
    """MLP baseline interval + tabular Q-learning on the interval's ratio to it (scheduler)."""

    name: ClassVar[str] = "hybrid"
    file_suffix: ClassVar[str] = ".npz"
    defaults: ClassVar[dict[str, Any]] = {
        # the MLP and its synthetic pre-training data
        "hidden": 32,
        "mlp_samples": 2000,
        "mlp_epochs": 500,
        "mlp_learning_rate": 0.01,
        "manual_weight": 1.0,
        "pref_weight": 1.5,
        "noise_sd": 1.0,
        # the Q-table's state and start
        "ratio_bins": 7,
        "ratio_range": 2.0,
        "manual_bins": 3,
        "q_init": 0.0,
        "prior_bonus": 0.5,
        # Q-learning, as conf/algo/qlearning.yaml
        "learning_rate": 0.1,
        "gamma": 0.9,
        "epsilon": 0.5,
        "epsilon_decay": 0.98,
        "epsilon_decay_per": "episode",
        "epsilon_min": 0.05,
    }

    def __init__(self, env: VecEnv, cfg: Mapping[str, Any], seed: int, device: str = "cpu") -> None:
        # Not QLearningAgent.__init__: its observation binning is replaced by `discretise` below.
        Agent.__init__(self, env, cfg, seed, device)
        from rlbench.envs.scheduler import ScriptSchedulerCore

        self.core = require_core(self.name, env, ScriptSchedulerCore, "scheduler")
        s = self._settings()
        self.n_actions = self._discrete_actions()
        for key in ("hidden", "mlp_samples", "mlp_epochs", "ratio_bins", "manual_bins"):
            value = s[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"algo.{key} must be a positive integer, got {value!r}")
        for key, lo, hi in (("learning_rate", 0, 1), ("gamma", 0, 1), ("epsilon_decay", 0, 1)):
            if not lo < float(s[key]) <= hi:
                raise UserError(f"algo.{key} must be in ({lo}, {hi}], got {s[key]}")
        if float(s["ratio_range"]) <= 1.0:
            raise UserError(f"algo.ratio_range must be > 1, got {s['ratio_range']}")
        self.decay_per = str(s["epsilon_decay_per"])
        if self.decay_per not in ("episode", "step"):
            raise UserError(f"algo.epsilon_decay_per must be episode or step, got {self.decay_per}")
        self.settings = s
        self.lr, self.gamma = float(s["learning_rate"]), float(s["gamma"])
        self.epsilon, self.epsilon_decay = float(s["epsilon"]), float(s["epsilon_decay"])
        self.epsilon_min = float(s["epsilon_min"])
        self.ratio_bins, self.manual_bins = int(s["ratio_bins"]), int(s["manual_bins"])
        self._half_range = math.log(float(s["ratio_range"]))
        self._log_span = math.log(self.core.max_interval / self.core.min_interval)
        n_states = self.ratio_bins * 3 * self.manual_bins
        self.prior = np.repeat(self._prior_by_ratio_bin(), 3 * self.manual_bins)
        self.q = np.full((n_states, self.n_actions), float(s["q_init"]))
        self.q[np.arange(n_states), self.prior] += float(s["prior_bonus"])
        self.visited = np.zeros(n_states, dtype=bool)
        self.episodes = 0
        self.rng = np.random.default_rng(self.seed)
        self._obs: np.ndarray | None = None
        self.mlp: dict[str, np.ndarray] | None = None  # trained on first use, or loaded

    # -- the MLP prior --------------------------------------------------------------------------
    def synthetic_data(self) -> tuple[np.ndarray, np.ndarray]:
        """The seed's synthetic (state, target) pairs, encoded as the env's observation."""
        s, core = self.settings, self.core
        rng = np.random.default_rng([self.seed, 7])
        n = int(s["mlp_samples"])
        lo, hi = math.log(core.min_interval), math.log(core.max_interval)
        avg = np.exp(rng.uniform(lo, hi, n))
        manual = rng.integers(0, core.manual_window + 1, n)
        pref = rng.integers(-1, 2, n)
        target = avg - s["manual_weight"] * manual - s["pref_weight"] * pref
        target = np.maximum(core.min_interval, target + rng.normal(0.0, s["noise_sd"], n))
        x = np.column_stack([self.log_scale(avg), (pref + 1) / 2, manual / core.manual_window])
        return x.astype(np.float32), self.log_scale(target).astype(np.float32)

    def log_scale(self, minutes: np.ndarray) -> np.ndarray:
        """Minutes on the env's observation scale: log(x / min_interval) / log(max / min)."""
        return np.log(np.asarray(minutes, dtype=np.float64) / self.core.min_interval) / (
            self._log_span
        )

    def fit_mlp(self) -> float:
        """Train the MLP on :meth:`synthetic_data`; returns its final mean squared error."""
        import torch

        x, y = self.synthetic_data()
        s = self.settings
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = torch.nn.Sequential(
                torch.nn.Linear(3, int(s["hidden"])), torch.nn.ReLU(),
                torch.nn.Linear(int(s["hidden"]), 1),
            )  # fmt: skip
            opt = torch.optim.Adam(net.parameters(), lr=float(s["mlp_learning_rate"]))
            xt, yt = torch.from_numpy(x), torch.from_numpy(y)[:, None]
            for _ in range(int(s["mlp_epochs"])):
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(net(xt), yt)
                loss.backward()
                opt.step()
        w = [p.detach().numpy().astype(np.float64) for p in net.parameters()]
        self.mlp = dict(zip(MLP_ARRAYS, w, strict=True))
        return float(loss.detach())

    def baseline(self, obs: np.ndarray) -> np.ndarray:
        """The MLP's baseline interval (env log scale) for observations ``(N, 4)``."""
        if self.mlp is None:
            self.fit_mlp()
        m = self.mlp
        h = np.maximum(np.asarray(obs, dtype=np.float64)[:, :3] @ m["mlp_w1"].T + m["mlp_b1"], 0)
        return (h @ m["mlp_w2"].T + m["mlp_b2"])[:, 0]

    def baseline_minutes(self, obs: np.ndarray) -> np.ndarray:
        """:meth:`baseline` in minutes."""
        return self.core.min_interval * np.exp(self.baseline(obs) * self._log_span)

    # -- the state ------------------------------------------------------------------------------
    def _prior_by_ratio_bin(self) -> np.ndarray:
        width = 2 * self._half_range / self.ratio_bins
        centres = -self._half_range + width * (np.arange(self.ratio_bins) + 0.5)
        tol = math.log(1.15) / 2
        return np.where(centres > tol, DECREASE, np.where(centres < -tol, INCREASE, KEEP))

    def discretise(self, obs: np.ndarray) -> np.ndarray:
        """State indices ``(N,)``: ratio-to-baseline bin, preference, manual-count bin."""
        obs = np.asarray(obs, dtype=np.float64)
        log_ratio = (obs[:, 3] - self.baseline(obs)) * self._log_span
        scaled = (log_ratio + self._half_range) / (2 * self._half_range) * self.ratio_bins
        ratio_bin = np.clip(np.floor(scaled).astype(np.int64), 0, self.ratio_bins - 1)
        sig = self.core.signals(obs)
        pref = np.clip(sig["preference"], -1, 1) + 1
        manual = np.clip(sig["manual_count"], 0, self.manual_bins - 1)
        return (ratio_bin * 3 + pref) * self.manual_bins + manual

    # -- save / load ----------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
        if self.mlp is None:
            self.fit_mlp()
        state, arrays, blobs = super()._state()
        return state, arrays | self.mlp, blobs

    def _restore(self, ckpt: Checkpoint) -> None:
        super()._restore(ckpt)
        mlp = {k: np.asarray(ckpt.arrays[k], dtype=np.float64) for k in MLP_ARRAYS}
        hidden = int(self.settings["hidden"])
        shapes = {"mlp_w1": (hidden, 3), "mlp_b1": (hidden,), "mlp_w2": (1, hidden),
                  "mlp_b2": (1,)}  # fmt: skip
        for key, shape in shapes.items():
            if mlp[key].shape != shape or not np.isfinite(mlp[key]).all():
                raise ValueError(f"{key} has shape {mlp[key].shape} or non-finite values")
        self.mlp = mlp

    def check_finite(self) -> bool:
        weights = self.mlp.values() if self.mlp is not None else ()
        return super().check_finite() and all(np.isfinite(w).all() for w in weights)
