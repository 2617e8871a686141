"""PPO's rollout and update loops, written for small networks on a CPU.

SB3's PPO spends most of a run on per-call overhead, not arithmetic: on autoscaling's 64x64
MLPs a rollout step costs ~0.4 ms of torch dispatch for 8 observations (a ``Categorical``
built, sampled and scored), and every minibatch update calls ``.item()`` five times, builds
another ``Categorical`` and clips gradients parameter by parameter. :class:`LeanPPO` is SB3's
``PPO`` with two methods replaced, same algorithm and same losses:

- :meth:`LeanPPO.collect_rollouts` runs the actor and critic in numpy on a copy of their
  weights taken at the start of each rollout (the weights only change in ``train``), samples
  actions by inverse CDF from numpy's global generator (which the agent owns and saves in
  checkpoints, as it does for SB3's minibatch order) and writes the rollout buffer directly.
- :meth:`LeanPPO.train` is SB3's clipped-surrogate update with its gradients worked out in
  numpy (:mod:`rlbench.agents.numpy_grad`) and the optimizer's step too when it is Adam.
  From the same state and data it gives SB3's parameters to float32 rounding
  (tests/agents/test_ppo_loop.py).

Both fall back to SB3's own methods for anything else (continuous actions, gSDE, image
observations, custom policies): :func:`lean_enough` says which.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.utils import explained_variance
from stable_baselines3.common.vec_env import VecEnv

from rlbench.agents.numpy_grad import (
    AdamStep,
    MLPView,
    flatten_parameters,
    supported,
)
from rlbench.agents.numpy_mlp import clip_grad_norm
from rlbench.agents.sb3_logger import record_training


def lean_enough(model: PPO) -> bool:
    """Whether :class:`LeanPPO`'s loops apply: SB3's own ``ActorCriticPolicy`` on the CPU
    (flattened float observations, an MLP of Linear layers and one tanh/ReLU activation per
    branch, no other parameters) choosing among discrete actions, without gSDE."""
    policy = model.policy
    if type(policy) is not ActorCriticPolicy or model.use_sde:
        return False
    if not isinstance(model.action_space, spaces.Discrete):
        return False
    space = model.observation_space
    if not isinstance(space, spaces.Box) or not np.issubdtype(space.dtype, np.floating):
        return False
    if not isinstance(policy.features_extractor, FlattenExtractor):
        return False
    actor, critic = _branches(policy)
    if not (supported(actor) and supported(critic)):
        return False
    known = {id(p) for m in (*actor, *critic) for p in m.parameters()}
    return all(id(p) in known for p in policy.parameters())


def _branches(policy: ActorCriticPolicy) -> tuple[list[Any], list[Any]]:
    """The actor (MLP + action head) and the critic (MLP + value head) as module lists."""
    extractor = policy.mlp_extractor
    return (
        [*extractor.policy_net, policy.action_net],
        [*extractor.value_net, policy.value_net],
    )


def sample_categorical(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One action per row of ``logits`` drawn from softmax(logits) by inverse CDF with numpy's
    global generator, and its log-probability."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    log_pi = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    cdf = np.exp(log_pi).cumsum(axis=1)
    u = np.random.random_sample((len(z), 1)) * cdf[:, -1:]
    actions = np.minimum((cdf <= u).sum(axis=1), z.shape[1] - 1)
    return actions, log_pi[np.arange(len(z)), actions]


class LeanPPO(PPO):
    """SB3's PPO with a numpy rollout and a leaner update for small discrete-action MLPs."""

    def _setup_model(self) -> None:
        """SB3's setup, then the trained parameters moved into one flat buffer (same values)
        so that Adam's numpy step is a dozen calls, not a dozen per parameter."""
        super()._setup_model()
        if lean_enough(self):
            flatten_parameters(self.policy.optimizer)

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """SB3's rollout (callbacks, time-limit bootstrapping, info buffer) with the policy's
        forward passes and sampling in numpy."""
        if not lean_enough(self):
            return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        assert self._last_obs is not None, "No previous observation was provided"
        policy = self.policy
        policy.set_training_mode(False)
        actor, critic = (MLPView(branch) for branch in _branches(policy))
        n_envs = env.num_envs
        rollout_buffer.reset()
        callback.on_rollout_start()

        n_steps = 0
        new_obs = dones = None
        while n_steps < n_rollout_steps:
            obs = np.asarray(self._last_obs, dtype=np.float32).reshape(n_envs, -1)
            actions, log_probs = sample_categorical(actor.output(obs))
            values = critic.output(obs)[:, 0]

            new_obs, rewards, dones, infos = env.step(actions)
            self.num_timesteps += n_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            n_steps += 1

            for idx in np.flatnonzero(dones):  # a time limit is not an end: bootstrap (SB3 #633)
                info = infos[idx]
                terminal = info.get("terminal_observation")
                if terminal is not None and info.get("TimeLimit.truncated", False):
                    rewards[idx] += self.gamma * critic.output(np.asarray(terminal)[None])[0, 0]

            pos = rollout_buffer.pos
            rollout_buffer.observations[pos] = np.asarray(self._last_obs).reshape(
                rollout_buffer.observations[pos].shape
            )
            rollout_buffer.actions[pos] = actions.reshape(n_envs, 1)
            rollout_buffer.rewards[pos] = rewards
            rollout_buffer.episode_starts[pos] = self._last_episode_starts
            rollout_buffer.values[pos] = values
            rollout_buffer.log_probs[pos] = log_probs
            rollout_buffer.pos += 1
            rollout_buffer.full = rollout_buffer.pos == rollout_buffer.buffer_size
            self._last_obs = new_obs
            self._last_episode_starts = dones

        last_values = torch.as_tensor(critic.output(np.asarray(new_obs))[:, 0])
        rollout_buffer.compute_returns_and_advantage(last_values=last_values, dones=dones)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def train(self) -> None:
        """SB3's PPO update (clipped surrogate, optional value clipping, entropy bonus,
        per-minibatch advantage normalisation, gradient-norm clipping, ``target_kl`` early
        stop), same minibatch order, same logged statistics; the gradients are worked out in
        numpy (:class:`_Gradients`), then the policy's optimizer steps (Adam in numpy on its
        own state, :class:`~rlbench.agents.numpy_grad.AdamStep`; others through torch)."""
        if not lean_enough(self):
            return super().train()
        policy = self.policy
        policy.set_training_mode(True)
        self._update_learning_rate(policy.optimizer)
        progress = self._current_progress_remaining
        clip_range = float(self.clip_range(progress))  # type: ignore[operator]
        clip_vf = None if self.clip_range_vf is None else float(self.clip_range_vf(progress))  # type: ignore[operator]
        grads = _Gradients(policy)
        optimizer_step = AdamStep.of(policy.optimizer) or policy.optimizer.step

        buf = self.rollout_buffer
        n = buf.buffer_size * buf.n_envs

        def flat(array: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
            """(steps, envs, ...) -> (steps * envs, ...) in SB3's order (env by env)."""
            return np.ascontiguousarray(array.swapaxes(0, 1).reshape(n, -1), dtype=dtype)

        obs_all = flat(buf.observations)
        actions_all = flat(buf.actions, np.int64)[:, 0]
        old_logp_all, adv_all = flat(buf.log_probs)[:, 0], flat(buf.advantages)[:, 0]
        returns_all, old_values_all = flat(buf.returns)[:, 0], flat(buf.values)[:, 0]

        stats: dict[str, list[float]] = {k: [] for k in ("pg", "value", "entropy", "clip")}
        approx_kls: list[float] = []
        loss = float("nan")
        continue_training = True
        for _ in range(self.n_epochs):
            approx_kls = []
            order = np.random.permutation(n)
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                advantages = adv_all[idx]
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (
                        advantages.std(ddof=1) + np.float32(1e-8)
                    )
                old_values = None if clip_vf is None else old_values_all[idx]
                out = grads.compute(
                    obs_all[idx],
                    actions_all[idx],
                    old_logp_all[idx],
                    advantages,
                    returns_all[idx],
                    old_values,
                    clip_range=clip_range,
                    clip_vf=clip_vf,
                    ent_coef=float(self.ent_coef),
                    vf_coef=float(self.vf_coef),
                )
                for key in stats:
                    stats[key].append(out[key])
                approx_kls.append(out["approx_kl"])
                loss = out["loss"]
                if self.target_kl is not None and out["approx_kl"] > 1.5 * self.target_kl:
                    continue_training = False
                    break
                clip_grad_norm(grads.nets, self.max_grad_norm)
                optimizer_step()
            self._n_updates += 1
            if not continue_training:
                break

        def mean(values: list[float]) -> float:
            return float(np.mean(values)) if values else float("nan")

        stats_out = {
            "entropy_loss": mean(stats["entropy"]),
            "policy_gradient_loss": mean(stats["pg"]),
            "value_loss": mean(stats["value"]),
            "approx_kl": mean(approx_kls),
            "clip_fraction": mean(stats["clip"]),
            "loss": loss,
            "explained_variance": explained_variance(buf.values.flatten(), buf.returns.flatten()),
            "clip_range": clip_range,
        }
        if clip_vf is not None:
            stats_out["clip_range_vf"] = clip_vf
        record_training(self.logger, stats_out, self._n_updates)


class _Gradients:
    """PPO's loss and its gradient, in numpy, for an actor-critic of two MLP branches whose
    parameters and gradients :class:`MLPView` sees. The arithmetic is SB3's losses with
    torch's gradient conventions at ties (``torch.min``) and clip boundaries (``clamp``)."""

    def __init__(self, policy: ActorCriticPolicy) -> None:
        self.actor, self.critic = (MLPView(b, grads=True) for b in _branches(policy))
        self.nets = (self.actor, self.critic)

    def compute(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        old_logp: np.ndarray,
        advantages: np.ndarray,
        returns: np.ndarray,
        old_values: np.ndarray | None,
        *,
        clip_range: float,
        clip_vf: float | None,
        ent_coef: float,
        vf_coef: float,
    ) -> dict[str, float]:
        """Fill the gradients for one minibatch; return its losses and statistics."""
        batch = len(obs)
        rows = np.arange(batch)
        actor, critic = self.actor.forward(obs), self.critic.forward(obs)
        logits = actor[-1]
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        total = e.sum(axis=1, keepdims=True)
        pi = e / total
        log_pi = z - np.log(total)
        log_prob = log_pi[rows, actions]
        entropy = -(pi * log_pi).sum(axis=1)
        values = critic[-1][:, 0]

        log_ratio = log_prob - old_logp
        ratio = np.exp(log_ratio)
        clipped = np.clip(ratio, 1 - clip_range, 1 + clip_range)
        surrogate = advantages * ratio
        surrogate_clipped = advantages * clipped
        policy_loss = -np.minimum(surrogate, surrogate_clipped).mean()
        if clip_vf is None or old_values is None:
            values_pred, value_mask = values, 1.0
        else:
            delta = values - old_values
            values_pred = old_values + np.clip(delta, -clip_vf, clip_vf)
            value_mask = (np.abs(delta) <= clip_vf).astype(np.float32)
        value_loss = np.mean((returns - values_pred) ** 2)
        entropy_loss = -entropy.mean()

        # d loss / d logits: the surrogate through log_prob (the unclipped term where it is
        # the smaller; its clipped twin has no gradient outside the range), then the entropy
        d_logp = np.where(surrogate <= surrogate_clipped, -advantages * ratio / batch, 0.0)
        d_logits = pi * (-d_logp)[:, None]
        d_logits[rows, actions] += d_logp
        d_logits += (ent_coef / batch) * pi * (log_pi + entropy[:, None])
        d_values = (2.0 * vf_coef / batch) * (values_pred - returns) * value_mask
        self.actor.backward(actor, d_logits)
        self.critic.backward(critic, d_values[:, None])
        return {
            "pg": float(policy_loss),
            "value": float(value_loss),
            "entropy": float(entropy_loss),
            "clip": float(np.mean(np.abs(ratio - 1) > clip_range)),
            "approx_kl": float(np.mean((ratio - 1) - log_ratio)),
            "loss": float(policy_loss + ent_coef * entropy_loss + vf_coef * value_loss),
        }
