"""Helpers for the offline tests: write a small log by hand, fixed target policies."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rlbench.offline.log import LogWriter, read_log

DAY = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class Fixed:
    """A target policy with the same pi(.|s) everywhere."""

    def __init__(self, probs: Sequence[float]) -> None:
        self.probs = np.asarray(probs, dtype=np.float64)

    def action_probabilities(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        return np.tile(self.probs, (len(obs), 1))


def write_episodes(root: Path, episodes: Sequence[Sequence[tuple]], n_actions: int = 2):
    """Episodes of ``(s, a, propensity, r, s_next)`` steps (1-d states); the last step of each
    episode is done and terminal. Returns the log read back."""
    with LogWriter(root, env_id="test/Tiny-v0", obs_shape=(1,), n_actions=n_actions) as w:
        for e, steps in enumerate(episodes):
            for t, (s, a, p, r, s2) in enumerate(steps):
                last = t == len(steps) - 1
                w.append(
                    {
                        "ts": DAY + 60 * e + t, "episode": f"ep{e}", "step": t, "obs": [s],
                        "action": a, "propensity": p, "reward": r, "next_obs": [s2],
                        "done": last, "terminal": last, "policy": "hand", "policy_version": "1",
                        "context": {"user_id": f"u{e}"},
                    }
                )  # fmt: skip
    return read_log(root)


def onehot2(obs: np.ndarray) -> np.ndarray:
    """Tabular features of the states 0 and 1."""
    s = obs.reshape(len(obs))
    return np.stack([1.0 - s, s], axis=1)


def constant(obs: np.ndarray) -> np.ndarray:
    """One feature: a per-action constant model."""
    return np.ones((len(obs), 1))
