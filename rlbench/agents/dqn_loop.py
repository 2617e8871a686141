"""DQN's action choice and update, written for small networks on a CPU.

SB3's DQN asks its Q-network for the greedy action of every environment step through
``policy.predict`` (~0.3 ms of torch dispatch for a 64x64 MLP) and spends most of each
gradient step on autograd's bookkeeping. :class:`LeanDQN` is SB3's ``DQN`` with two methods
replaced, same algorithm and same random streams:

- :meth:`LeanDQN.predict` keeps SB3's epsilon-greedy coin (numpy's global generator, one coin
  for all copies) and takes the greedy action from the Q-network's weights in numpy.
- :meth:`LeanDQN.train` samples the replay buffer as SB3 does and works out the Huber loss's
  gradient in numpy (:mod:`rlbench.agents.numpy_grad`), and Adam's step too. From the same
  state it gives SB3's parameters to float32 rounding (tests/agents/test_dqn_loop.py).

Both fall back to SB3's own methods for anything else (image or dict observations, custom
policies, a GPU): :func:`lean_enough` says which. ``algo=dqn`` runs most configs without SB3 or
torch (:mod:`rlbench.agents.numpy_dqn`, the same parameters); this class serves the rest that
are still small MLPs (n-step returns, another replay buffer, tensorboard logs) and is the
reference those parameters are tested against.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.dqn.policies import DQNPolicy

from rlbench.agents.numpy_grad import (
    AdamStep,
    MLPView,
    flatten_parameters,
    supported,
)
from rlbench.agents.numpy_mlp import clip_grad_norm
from rlbench.agents.replay import huber_td_gradient, sample_replay
from rlbench.agents.sb3_logger import record_training


def lean_enough(model: DQN) -> bool:
    """Whether :class:`LeanDQN`'s methods apply: SB3's own ``DQNPolicy`` (``MlpPolicy``) on the
    CPU, flattened float observations, a Q-network of Linear layers with one tanh/ReLU
    activation and no other parameters."""
    policy = model.policy
    if type(policy) is not DQNPolicy:
        return False
    space = model.observation_space
    if not isinstance(space, spaces.Box) or not np.issubdtype(space.dtype, np.floating):
        return False
    if not isinstance(model.action_space, spaces.Discrete):
        return False
    for net in (policy.q_net, policy.q_net_target):
        if not isinstance(net.features_extractor, FlattenExtractor):
            return False
        if not supported(net.q_net):
            return False
    known = {id(p) for net in (policy.q_net, policy.q_net_target) for p in net.q_net.parameters()}
    return all(id(p) in known for p in policy.parameters())


class LeanDQN(DQN):
    """SB3's DQN with numpy greedy actions and a numpy gradient for small MLP Q-networks."""

    def _setup_model(self) -> None:
        """SB3's setup, then the trained parameters moved into one flat buffer (same values)
        so that Adam's numpy step is a dozen calls, not a dozen per parameter."""
        super()._setup_model()
        if lean_enough(self):
            flatten_parameters(self.policy.optimizer)

    def predict(
        self,
        observation: Any,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's epsilon-greedy choice; the greedy actions of a batch in numpy."""
        shape = self.observation_space.shape
        batch = isinstance(observation, np.ndarray) and observation.shape[1:] == shape
        q_net = self._greedy_view() if batch and len(observation) else None
        if q_net is None:
            return super().predict(observation, state, episode_start, deterministic)
        if not deterministic and np.random.rand() < self.exploration_rate:
            action = np.array([self.action_space.sample() for _ in range(len(observation))])
            return action, state
        return q_net.output(observation).argmax(axis=1), state

    def _greedy_view(self) -> MLPView | None:
        """The Q-network seen from numpy (views: always its current weights), or None where
        :func:`lean_enough` says no; worked out once per policy object, not per step."""
        cached = self.__dict__.get("_view_cache")
        if cached is None or cached[0] is not self.policy:
            view = MLPView(self.policy.q_net.q_net) if lean_enough(self) else None
            cached = self._view_cache = (self.policy, view)
        return cached[1]

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        """SB3's DQN update: replay samples, the target network's greedy value, Huber loss,
        gradient-norm clipping, one optimizer step per gradient step."""
        if self._greedy_view() is None:
            return super().train(gradient_steps, batch_size)
        policy = self.policy  # Linear layers and activations only: no train/eval mode to set
        self._update_learning_rate(policy.optimizer)
        optimizer_step = AdamStep.of(policy.optimizer) or policy.optimizer.step
        q_net, target = self._train_views()
        losses = []
        for _ in range(gradient_steps):
            *minibatch, discounts = self._sample(batch_size)
            losses.append(huber_td_gradient(q_net, target, tuple(minibatch), discounts))
            clip_grad_norm([q_net], self.max_grad_norm)
            optimizer_step()

        self._n_updates += gradient_steps
        record_training(self.logger, {"loss": float(np.mean(losses))}, self._n_updates)

    def _train_views(self) -> tuple[MLPView, MLPView]:
        """The Q-network with its gradients and the target network, seen from numpy; made
        once per policy object (the views follow the weights), not per gradient step."""
        cached = self.__dict__.get("_train_cache")
        if (  # made again for a new policy, or when a .grad tensor was replaced (zero_grad)
            cached is None
            or cached[0] is not self.policy
            or any(p.grad is not g for p, g in zip(cached[1].params, cached[3], strict=True))
        ):
            q_net = MLPView(self.policy.q_net.q_net, grads=True)
            target = MLPView(self.policy.q_net_target.q_net)
            cached = (self.policy, q_net, target, [p.grad for p in q_net.params])
            self._train_cache = cached
        return cached[1], cached[2]

    def _sample(self, batch_size: int) -> tuple[np.ndarray, ...]:
        """A replay minibatch as numpy arrays: observations, actions, next observations, dones,
        rewards, discounts. SB3's own ``ReplayBuffer.sample`` (same random draws, same rows),
        read straight from its arrays for the plain buffer; through SB3 for any other."""
        buf = self.replay_buffer
        plain = type(buf) is ReplayBuffer and not buf.optimize_memory_usage
        if plain and self._vec_normalize_env is None:  # its arrays, read straight
            return (*sample_replay(buf, batch_size, np.random), self.gamma)
        data = buf.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
        discounts = self.gamma if data.discounts is None else data.discounts.numpy()[:, 0]
        return (
            data.observations.numpy().reshape(batch_size, -1),
            data.actions.numpy().reshape(-1).astype(np.int64),
            data.next_observations.numpy().reshape(batch_size, -1),
            data.dones.numpy()[:, 0],
            data.rewards.numpy()[:, 0],
            discounts,
        )
