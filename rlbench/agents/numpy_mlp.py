"""Small MLPs in numpy: deciding a few observations at a time, and training without torch.

A live loop asks for one decision per step; torch spends ~200-300 us per call on dispatch
alone, numpy ~10-20 us for the same small network. :func:`copy_linear` copies the weights of a
network's ``Linear`` layers once (the caller takes a new copy whenever training has moved on);
:func:`forward` applies them with an activation between layers, none after the last.

:class:`MLP` is the arithmetic of a training step: forward keeping every layer's input,
backward into gradient arrays, :func:`clip_grad_norm` and :func:`adam_update`, written as
torch computes them. :class:`rlbench.agents.numpy_grad.MLPView` runs it on a torch network's
own tensors (SB3's PPO and DQN); :mod:`rlbench.agents.numpy_dqn` on arrays of its own, so a DQN
run never imports torch. No torch import here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

Layers = list[tuple[np.ndarray, np.ndarray]]  # (weight transposed, bias) per Linear layer


def copy_linear(modules: Iterable[Any]) -> Layers:
    """``(W.T, b)`` as numpy copies for every ``torch.nn.Linear`` among ``modules``, in order."""
    import torch

    with torch.no_grad():
        return [
            (m.weight.detach().cpu().numpy().T.copy(), m.bias.detach().cpu().numpy().copy())
            for m in modules
            if isinstance(m, torch.nn.Linear)
        ]


def relu(h: np.ndarray) -> np.ndarray:
    return np.maximum(h, 0.0, out=h)


def forward(
    obs: np.ndarray, layers: Layers, activation: Callable[[np.ndarray], np.ndarray] = relu
) -> np.ndarray:
    """The network's outputs (float32) for a batch of flattened observations."""
    h = np.asarray(obs, dtype=np.float32).reshape(len(obs), -1)
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = activation(h)
    return h


class MLP:
    """Linear layers with one activation (ReLU or tanh) between them: forward and backward.

    ``weights`` are ``(W, b)`` per layer in torch's layout (``W`` is out x in); ``grads`` the same
    shapes, written by :meth:`backward`; ``flat_grad``, where set, is every gradient as one
    array (they lie side by side), which :func:`clip_grad_norm` then reads in one call.
    """

    weights: Layers
    grads: Layers
    relu: bool
    flat_grad: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """The input of every layer, then the output (what :meth:`backward` needs).

        ``x`` and the output are (batch, features); the hidden layers' activations are kept
        the other way round, (features, batch), because ``W @ a`` is BLAS's fast case and
        ``a @ W.T`` (a transposed right-hand operand) is ~20% slower for 256-wide layers."""
        acts = [x]
        h = x.T
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(self.weights):
            h = w @ h
            h += b[:, None]
            if i < last:
                h = np.maximum(h, 0, out=h) if self.relu else np.tanh(h, out=h)
            acts.append(h)
        acts[-1] = h.T
        return acts

    def output(self, x: np.ndarray) -> np.ndarray:
        return self.forward(np.asarray(x, dtype=np.float32).reshape(len(x), -1))[-1]

    def backward(self, acts: list[np.ndarray], grad_out: np.ndarray) -> None:
        """Write d(loss)/d(parameters) into :attr:`grads`, given d(loss)/d(output)
        (batch, outputs) and :meth:`forward`'s activations."""
        g = np.asarray(grad_out, dtype=np.float32).T  # (outputs, batch), as the activations
        for i in range(len(self.weights) - 1, -1, -1):
            gw, gb = self.grads[i]
            np.matmul(g, acts[i] if i == 0 else acts[i].T, out=gw)
            np.sum(g, axis=1, out=gb)
            if i == 0:
                break
            g = self.weights[i][0].T @ g
            h = acts[i]
            g *= (h > 0) if self.relu else (1 - h * h)


def clip_grad_norm(nets: Iterable[MLP], max_norm: float) -> float:
    """Scale the nets' gradients to a total 2-norm of at most ``max_norm``, as
    ``torch.nn.utils.clip_grad_norm_`` does (coefficient ``max_norm / (norm + 1e-6)``);
    return the norm before clipping."""
    grads = []
    for net in nets:  # one array a net where its gradients are one buffer: fewer calls
        grads += [net.flat_grad] if net.flat_grad is not None else [g for p in net.grads for g in p]
    norm = float(np.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads)))
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for g in grads:
            g *= np.float32(coef)
    return norm


def adam_update(
    param: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    step: float,
    group: Mapping[str, Any],
    decoupled: bool = False,
) -> None:
    """torch's Adam (AdamW where ``decoupled``) step in place, on arrays of any shape: moments,
    bias corrections, ``eps`` outside the square root, coupled or decoupled weight decay.
    ``group`` holds ``lr``, ``betas``, ``eps`` and ``weight_decay`` as a torch param group."""
    lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
    decay = group["weight_decay"]
    if decay and decoupled:
        param *= np.float32(1 - lr * decay)
    elif decay:
        grad = grad + np.float32(decay) * param
    m += np.float32(1 - beta1) * (grad - m)  # torch: exp_avg.lerp_(grad, 1 - beta1)
    v *= np.float32(beta2)
    v += np.float32(1 - beta2) * grad * grad
    bias1, bias2 = 1 - beta1**step, 1 - beta2**step
    denom = np.sqrt(v) / np.float32(np.sqrt(bias2))
    denom += np.float32(eps)
    param -= np.float32(lr / bias1) * m / denom
