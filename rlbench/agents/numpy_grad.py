"""A torch MLP trained from numpy: forward, backward and gradient clipping on views.

For the 64x64 networks our agents use, autograd's bookkeeping and torch's per-call dispatch
are most of an update's time, not the arithmetic. :class:`MLPView` sees a torch MLP (Linear
layers with one tanh or ReLU activation between them) through numpy views of its parameters
and of their ``.grad`` tensors: no copies either way, so the network's torch optimizer (fused
Adam by default) steps on gradients written here exactly as after ``loss.backward()``, and the
weights it changes are the ones the next forward pass reads. CPU tensors only. The arithmetic
(forward, backward, clipping, Adam's formula) is :mod:`rlbench.agents.numpy_mlp`'s, shared with
the torch-free DQN.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from rlbench.agents.numpy_mlp import MLP, adam_update

ACTIVATIONS = (torch.nn.Tanh, torch.nn.ReLU)
#: optimizer -> its AdamStep (see AdamStep.of)
_STEPS: weakref.WeakKeyDictionary[torch.optim.Optimizer, AdamStep] = weakref.WeakKeyDictionary()


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


class MLPView(MLP):
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
        # all of them as one array, where they lie side by side (flatten_parameters)
        self.flat_grad = (
            _flat_view(self.params[0].grad, [p.grad for p in self.params]) if grads else None
        )


def flatten_parameters(optimizer: torch.optim.Optimizer) -> bool:
    """Make each param group's parameters, and their gradients, views of one contiguous
    float32 buffer, in the group's order; True where every group could be (CPU float32).

    The values stay; the Parameter objects stay (the optimizer, modules and state keep them),
    only their storage moves. :class:`AdamStep` then updates a whole group with a dozen numpy
    calls instead of a dozen per parameter. Views made before this call (``MLPView``) see the
    old storage: flatten right after a model is built, before anything looks at its weights.
    """
    groups = optimizer.param_groups
    params = [p for g in groups for p in g["params"]]
    if not params or any(p.device.type != "cpu" or p.dtype != torch.float32 for p in params):
        return False
    with torch.no_grad():
        for group in groups:
            size = sum(p.numel() for p in group["params"])
            values, grads = torch.empty(size), torch.zeros(size)
            start = 0
            for p in group["params"]:
                end = start + p.numel()
                values[start:end].copy_(p.reshape(-1))
                if p.grad is not None:
                    grads[start:end].copy_(p.grad.reshape(-1))
                p.data = values[start:end].view(p.shape)
                p.grad = grads[start:end].view(p.shape)
                start = end
    return True


class _FlatGroup:
    """One param group as flat numpy arrays: parameters, gradients, both moments, the steps.

    Valid while the tensors it was made from are the ones in use (:meth:`current`): a loaded
    optimizer state or a gradient replaced by a new tensor sends :class:`AdamStep` back to its
    per-parameter path, which rebuilds this on its next call."""

    def __init__(self, optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> None:
        params = group["params"]
        first = params[0]
        self.param = _flat_view(first, [p.detach() for p in params])
        self.grad = _flat_view(first.grad, [p.grad for p in params])
        # the moments and step counters: moved into flat buffers of their own (same values)
        size = sum(p.numel() for p in params)
        m, v, steps = np.zeros(size, np.float32), np.zeros(size, np.float32), []
        start = 0
        for p in params:
            state = optimizer.state[p]
            end = start + p.numel()
            m[start:end] = state["exp_avg"].numpy().reshape(-1)
            v[start:end] = state["exp_avg_sq"].numpy().reshape(-1)
            steps.append(float(state["step"]))
            start = end
        self.steps = np.array(steps, dtype=np.float32)
        self.m, self.v = m, v
        mt, vt, st = torch.from_numpy(m), torch.from_numpy(v), torch.from_numpy(self.steps)
        start = 0
        for i, p in enumerate(params):
            state, end = optimizer.state[p], start + p.numel()
            state["exp_avg"] = mt[start:end].view(p.shape)
            state["exp_avg_sq"] = vt[start:end].view(p.shape)
            state["step"] = st[i]
            start = end
        self._tensors = [
            (p, p.grad, optimizer.state[p]["exp_avg"], optimizer.state[p]["exp_avg_sq"])
            for p in params
        ]

    @classmethod
    def of(cls, optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> _FlatGroup | None:
        """A flat view of ``group`` where its parameters and gradients are already contiguous
        (:func:`flatten_parameters`) and its steps agree; else None."""
        params = group["params"]
        if not params or any(p.grad is None for p in params):
            return None
        grads = [p.grad for p in params]
        if _flat_view(params[0], params) is None or _flat_view(grads[0], grads) is None:
            return None
        steps = {float(optimizer.state[p]["step"]) for p in params if optimizer.state[p]}
        if len(steps) > 1 or (steps and any(not optimizer.state[p] for p in params)):
            return None
        for p in params:
            state = optimizer.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return cls(optimizer, group)

    def current(self, optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> bool:
        """Whether the group still holds the tensors this was made from."""
        params, state = group["params"], optimizer.state
        return len(params) == len(self._tensors) and all(
            q is p
            and p.grad is g
            and state[p].get("exp_avg") is m
            and state[p].get("exp_avg_sq") is v
            for q, (p, g, m, v) in zip(params, self._tensors, strict=True)
        )


def _flat_view(first: torch.Tensor, tensors: Sequence[torch.Tensor]) -> np.ndarray | None:
    """A 1-d numpy view over ``tensors`` when they lie one after another in one storage."""
    base, storage = first.data_ptr(), first.untyped_storage().data_ptr()
    expected = base
    for t in tensors:  # separate tensors may lie side by side too: one storage is the test
        if t.data_ptr() != expected or t.untyped_storage().data_ptr() != storage:
            return None
        if not t.is_contiguous():
            return None
        expected += t.numel() * t.element_size()
    total = (expected - base) // first.element_size()
    flat = torch.empty(0, dtype=first.dtype).set_(
        first.untyped_storage(), first.storage_offset(), (total,)
    )
    return flat.numpy()


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
        self._flat: dict[int, _FlatGroup | None] = {}  # param group index -> its flat arrays

    @property
    def flat(self) -> bool:
        """Whether every param group took the flat path (:func:`flatten_parameters`) last step."""
        return bool(self._flat) and all(f is not None for f in self._flat.values())

    @classmethod
    def of(cls, optimizer: torch.optim.Optimizer) -> AdamStep | None:
        """An :class:`AdamStep` for plain Adam/AdamW on CPU float32 parameters, else None."""
        cached = _STEPS.get(optimizer)
        if cached is not None:  # one per optimizer: its flat arrays outlive a train() call
            return cached
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
        step = _STEPS[optimizer] = cls(optimizer)
        return step

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
        for i, group in enumerate(self.optimizer.param_groups):
            flat = self._flat.get(i)
            if flat is None or not flat.current(self.optimizer, group):
                flat = self._flat[i] = _FlatGroup.of(self.optimizer, group)
            if flat is not None:  # the whole group at once: the same arithmetic, flat arrays
                flat.steps += 1
                self._update(flat.param, flat.grad, flat.m, flat.v, float(flat.steps[0]), group)
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                param, m, v = self._state(p)
                step_t = self.optimizer.state[p]["step"]
                step_t += 1
                self._update(param, p.grad.numpy(), m, v, float(step_t), group)

    def _update(
        self,
        param: np.ndarray,
        grad: np.ndarray,
        m: np.ndarray,
        v: np.ndarray,
        step: float,
        group: dict[str, Any],
    ) -> None:
        """torch's Adam/AdamW formula on arrays of any shape (one parameter or a flat group)."""
        adam_update(param, grad, m, v, step, group, self.decoupled)
