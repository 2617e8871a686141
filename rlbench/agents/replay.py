"""DQN's replay in numpy, without SB3 or torch: the buffer, its minibatches, the TD gradient.

:class:`ReplayBuffer` keeps the arrays, shapes and dtypes of SB3's ``ReplayBuffer`` (timeouts
handled, no memory optimisation) so that :func:`sample_replay` reads either the same way:
the numpy DQN's buffer, and SB3's own in LeanDQN, with the same random draws as SB3's
``sample``. :func:`huber_td_gradient` is DQN's loss on one minibatch, shared by both loops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces

if TYPE_CHECKING:
    from rlbench.agents.numpy_mlp import MLP


class ReplayBuffer:
    """SB3's ``ReplayBuffer`` (``handle_timeout_termination``, no memory optimisation): its
    arrays, shapes and dtypes, its ``add``, and its ``sample``'s random draws."""

    def __init__(self, size: int, n_envs: int, obs_space: spaces.Box) -> None:
        self.buffer_size = max(size // n_envs, 1)  # per copy, as SB3 divides it
        self.n_envs, self.pos, self.full = n_envs, 0, False
        shape = (self.buffer_size, n_envs)
        self.observations = np.zeros((*shape, *obs_space.shape), dtype=obs_space.dtype)
        self.next_observations = np.zeros_like(self.observations)
        self.actions = np.zeros((*shape, 1), dtype=np.int64)
        self.rewards = np.zeros(shape, dtype=np.float32)
        self.dones = np.zeros(shape, dtype=np.float32)
        self.timeouts = np.zeros(shape, dtype=np.float32)

    def size(self) -> int:
        return self.buffer_size if self.full else self.pos

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        self.observations[self.pos] = np.array(obs)
        self.next_observations[self.pos] = np.array(next_obs)
        self.actions[self.pos] = np.array(action).reshape(self.n_envs, 1)
        self.rewards[self.pos] = np.array(reward)
        self.dones[self.pos] = np.array(done)
        self.timeouts[self.pos] = np.array([i.get("TimeLimit.truncated", False) for i in infos])
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full, self.pos = True, 0

    def sample(self, batch_size: int, rng: np.random.RandomState) -> tuple[np.ndarray, ...]:
        return sample_replay(self, batch_size, rng)


def sample_replay(buffer: Any, batch_size: int, rng: Any) -> tuple[np.ndarray, ...]:
    """A minibatch of SB3's plain ``ReplayBuffer`` (or :class:`ReplayBuffer`, the same arrays):
    observations, actions, next observations, dones (not time-outs), rewards, drawn as its
    ``sample`` draws them from ``rng`` (numpy's global generator for SB3: ``np.random``)."""
    rows = rng.randint(0, buffer.size(), size=batch_size)
    envs = rng.randint(0, high=buffer.n_envs, size=(batch_size,))
    at = rows * buffer.n_envs + envs  # (row, copy) as one index: take() on flat views
    n = buffer.buffer_size * buffer.n_envs  # is a third faster than [rows, envs] indexing

    def take(array: np.ndarray) -> np.ndarray:
        return array.reshape(n, -1).take(at, axis=0)

    dones = take(buffer.dones)[:, 0] * (1 - take(buffer.timeouts)[:, 0])
    return (
        take(buffer.observations),
        take(buffer.actions).reshape(-1).astype(np.int64),
        take(buffer.next_observations),
        dones.astype(np.float32, copy=False),
        take(buffer.rewards)[:, 0].astype(np.float32, copy=False),
    )


def huber_td_gradient(
    q_net: MLP, target: MLP, batch: tuple[np.ndarray, ...], discount: Any
) -> float:
    """SB3's DQN loss on one minibatch (:func:`sample_replay`'s order): the target network's
    greedy value, smooth L1 (beta 1) on the taken actions' Q-values, its gradient written into
    ``q_net``'s gradient arrays; returns the loss."""
    obs, actions, next_obs, dones, rewards = batch
    next_q = target.forward(next_obs)[-1].max(axis=1)
    targets = rewards + (1 - dones) * discount * next_q
    acts = q_net.forward(obs)
    rows = np.arange(len(actions))
    diff = acts[-1][rows, actions] - targets
    small = np.abs(diff) < 1.0  # smooth_l1 with beta 1: quadratic inside, linear out
    loss = float(np.where(small, 0.5 * diff * diff, np.abs(diff) - 0.5).mean())
    grad_out = np.zeros_like(acts[-1])
    grad_out[rows, actions] = np.where(small, diff, np.sign(diff)) / len(actions)
    q_net.backward(acts, grad_out)
    return loss
