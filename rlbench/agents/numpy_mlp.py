"""A torch MLP's forward pass in numpy, for deciding a few observations at a time.

A live loop asks for one decision per step; torch spends ~200-300 us per call on dispatch
alone, numpy ~10-20 us for the same small network. :func:`copy_linear` copies the weights of a
network's ``Linear`` layers once (the caller takes a new copy whenever training has moved on);
:func:`forward` applies them with an activation between layers, none after the last.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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
