"""A torch MLP trained from numpy: forward, backward and gradient clipping on views.

For the 64x64 networks our agents use, autograd's bookkeeping and torch's per-call dispatch
are most of an update's time, not the arithmetic. :class:`MLPView` sees a torch MLP (Linear
layers with one tanh or ReLU activation between them) through numpy views of its parameters
and of their ``.grad`` tensors: no copies either way, so the network's torch optimizer (fused
Adam by default) steps on gradients written here exactly as after ``loss.backward()``, and the
weights it changes are the ones the next forward pass reads. CPU tensors only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

ACTIVATIONS = (torch.nn.Tanh, torch.nn.ReLU)


def supported(modules: Iterable[Any]) -> bool:
    """Whether ``modules`` (in order) are Linear layers and at most one kind of activation
    among :data:`ACTIVATIONS`, on the CPU in float32."""
    modules = list(modules)
    kinds = {type(m) for m in modules if not isinstance(m, torch.nn.Linear)}
    if len(kinds) > 1 or not kinds <= set(ACTIVATIONS):
        return False
    linear = [m for m in modules if isinstance(m, torch.nn.Linear)]
    return bool(linear) and all(
        p.device.type == "cpu" and p.dtype == torch.float32 for m in linear for p in m.parameters()
    )


class MLPView:
    """Numpy views of a torch MLP's parameters (and, with ``grads``, of their gradients)."""

    def __init__(self, modules: Sequence[Any], *, grads: bool = False) -> None:
        self.relu = any(isinstance(m, torch.nn.ReLU) for m in modules)
        linear = [m for m in modules if isinstance(m, torch.nn.Linear)]
        self.params: list[torch.nn.Parameter] = [p for m in linear for p in (m.weight, m.bias)]
        self.weights = [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in linear]
        self.grads: list[tuple[np.ndarray, np.ndarray]] = []
        if grads:
            for p in self.params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            self.grads = [(m.weight.grad.numpy(), m.bias.grad.numpy()) for m in linear]

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """The input of every layer, then the output (what :meth:`backward` needs)."""
        acts = [x]
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(self.weights):
            h = acts[-1] @ w.T + b
            if i < last:
                h = np.maximum(h, 0, out=h) if self.relu else np.tanh(h, out=h)
            acts.append(h)
        return acts

    def output(self, x: np.ndarray) -> np.ndarray:
        return self.forward(np.asarray(x, dtype=np.float32).reshape(len(x), -1))[-1]

    def backward(self, acts: list[np.ndarray], grad_out: np.ndarray) -> None:
        """Write d(loss)/d(parameters) into the gradient views, given d(loss)/d(output)."""
        g = np.asarray(grad_out, dtype=np.float32)
        for i in range(len(self.weights) - 1, -1, -1):
            gw, gb = self.grads[i]
            np.matmul(g.T, acts[i], out=gw)
            np.sum(g, axis=0, out=gb)
            if i == 0:
                break
            g = g @ self.weights[i][0]
            h = acts[i]
            g *= (h > 0) if self.relu else (1 - h * h)


def clip_grad_norm(nets: Iterable[MLPView], max_norm: float) -> float:
    """Scale the nets' gradients to a total 2-norm of at most ``max_norm``, as
    ``torch.nn.utils.clip_grad_norm_`` does (coefficient ``max_norm / (norm + 1e-6)``);
    return the norm before clipping."""
    grads = [g for net in nets for pair in net.grads for g in pair]
    norm = float(np.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads)))
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for g in grads:
            g *= np.float32(coef)
    return norm


class AdamStep:
    """torch's ``Adam``/``AdamW`` step in numpy, on the optimizer's own parameters and state.

    ``optimizer.step()`` imports ``torch._dynamo`` on its first call (~1.2 s, for a graph-break
    marker) and costs ~140 us of dispatch per call; this does the same update (torch's formula:
    moments, bias corrections, ``eps`` outside the square root, coupled or decoupled weight
    decay) on numpy views of the same tensors, so ``optimizer.state_dict()`` saves it and
    ``optimizer.step()`` can take over at any time. :meth:`of` says whether it applies.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.decoupled = isinstance(optimizer, torch.optim.AdamW)
        self._views: dict[int, tuple[Any, Any, np.ndarray, np.ndarray, np.ndarray]] = {}

    @classmethod
    def of(cls, optimizer: torch.optim.Optimizer) -> AdamStep | None:
        """An :class:`AdamStep` for plain Adam/AdamW on CPU float32 parameters, else None."""
        if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW):
            return None
        for group in optimizer.param_groups:
            if group.get("amsgrad") or group.get("maximize") or group.get("differentiable"):
                return None
            if any(isinstance(group[k], torch.Tensor) for k in ("lr", "betas", "eps")):
                return None
            for p in group["params"]:
                if p.device.type != "cpu" or p.dtype != torch.float32:
                    return None
        return cls(optimizer)

    def _state(self, p: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Numpy views of the parameter and its two moments (created as torch creates them)."""
        state = self.optimizer.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        cached = self._views.get(id(p))
        if cached is None or cached[0] is not m or cached[1] is not v:  # loaded: new tensors
            cached = (m, v, p.detach().numpy(), m.numpy(), v.numpy())
            self._views[id(p)] = cached
        return cached[2], cached[3], cached[4]

    def __call__(self) -> None:
        """One step for every parameter that has a gradient."""
        for group in self.optimizer.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            decay = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                param, m, v = self._state(p)
                grad = p.grad.numpy()
                step_t = self.optimizer.state[p]["step"]
                step_t += 1
                step = float(step_t)
                if decay and self.decoupled:
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
