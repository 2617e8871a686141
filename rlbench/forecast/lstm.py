"""The LSTM forecaster in torch: the network, its deterministic training, and its export.

:class:`LSTMNet` is the network :class:`rlbench.envs.lstm_forecaster.LSTMForecaster` runs in
numpy (same inputs, same gate equations, PyTorch's ``nn.LSTM`` then a linear head on the last
hidden state); :meth:`LSTMNet.export` gives the arrays that module saves and loads.

:func:`train` fits it with Adam on the mean squared error of the normalised targets (the change
from the last load in units of the window's mean, see the numpy module), in shuffled minibatches
of windows, for a fixed number of epochs with a cosine-decaying learning rate. Given the same
data and seed it is deterministic: one torch thread, a seeded initialisation and a seeded
shuffle, so the same command gives the same weights bit for bit (on the same machine and torch
version). ``max_seconds`` stops early at an epoch's end, which trades that determinism for a
time limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rlbench.envs.lstm_forecaster import ARRAYS, INPUT_FEATURES, network_inputs
from rlbench.forecast.data import Series, windows

SCALE_FLOOR = 1.0  # requests per step: the smallest window mean the inputs are divided by


@dataclass(frozen=True)
class TrainConfig:
    """What :func:`train` needs besides the data; the defaults are ``rlbench-forecast train``'s."""

    # 12 past loads and 16 units: as accurate on the held-out series as 24 and 32 (measured
    # side by side, docs/forecasting.md) at a quarter of the inference cost, which an
    # environment pays for every step of every episode
    window: int = 12
    steps: int = 6
    hidden: int = 16
    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 5e-3
    seed: int = 0
    max_seconds: float | None = None  # stop at the first epoch's end past this (not reproducible)
    period: float = 288.0


@dataclass
class TrainResult:
    """The exported weights, the loss of every epoch, and what the training cost."""

    weights: dict[str, np.ndarray]
    losses: list[float]
    epochs: int
    updates: int
    seconds: float
    windows: int


def _torch():
    import torch

    return torch


def make_net(hidden: int, steps: int, in_scale: float = 1.0, out_scale: float = 1.0):
    """A fresh :class:`LSTMNet` (torch imported on first use). It trains on standardised
    values: the load input is multiplied by ``in_scale`` and the head's outputs by
    ``out_scale`` inside ``forward``; :meth:`~LSTMNet.export` folds both into the weights."""
    torch = _torch()

    class LSTMNet(torch.nn.Module):
        """One-layer LSTM over the window, then a linear head on its last hidden state."""

        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(len(INPUT_FEATURES), hidden, batch_first=True)
            self.head = torch.nn.Linear(hidden, steps)
            scale = torch.ones(len(INPUT_FEATURES))
            scale[0] = in_scale
            self.register_buffer("in_scale", scale)
            self.out_scale = float(out_scale)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            _, (h, _) = self.lstm(x * self.in_scale)
            return self.head(h[-1]) * self.out_scale

        def export(self) -> dict[str, np.ndarray]:
            """The arrays of :data:`rlbench.envs.lstm_forecaster.ARRAYS` (float32)."""
            lstm, head = self.lstm, self.head
            arrays = {
                "lstm.weight_ih": lstm.weight_ih_l0 * self.in_scale,
                "lstm.weight_hh": lstm.weight_hh_l0,
                "lstm.bias": lstm.bias_ih_l0 + lstm.bias_hh_l0,
                "head.weight": head.weight * self.out_scale,
                "head.bias": head.bias * self.out_scale,
            }
            out = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in arrays.items()}
            assert set(out) == set(ARRAYS)
            return out

    return LSTMNet()


def dataset(
    series: Sequence[Series], window: int, steps: int, period: float
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(M, window, 3)`` and normalised targets ``(M, steps)`` of every window of every
    series, as float32."""
    xs, ys = [], []
    for s in series:
        history, t, future = windows(s.loads, window, steps)
        x, mean = network_inputs(history, t, period, window, SCALE_FLOOR)
        xs.append(x.astype(np.float32))
        ys.append(((future - history[:, -1:]) / mean).astype(np.float32))
    return np.concatenate(xs), np.concatenate(ys)


def train(
    series: Sequence[Series],
    config: TrainConfig,
    progress: Callable[[int, int, float, float], None] | None = None,
) -> TrainResult:
    """Fit a fresh network on every window of ``series``; ``progress(epoch, epochs, loss,
    elapsed_s)`` after each epoch."""
    torch = _torch()
    torch.set_num_threads(1)
    started = time.perf_counter()
    x_np, y_np = dataset(series, config.window, config.steps, config.period)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    torch.manual_seed(config.seed)
    in_scale = 1.0 / max(float(x_np[:, :, 0].std()), 1e-6)
    out_scale = max(float(y_np.std()), 1e-6)
    net = make_net(config.hidden, config.steps, in_scale, out_scale)
    shuffle = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    per_epoch = math.ceil(len(x) / config.batch_size)
    total = config.epochs * per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda i: 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(i / total, 1.0)))
    )
    losses: list[float] = []
    updates = 0
    for epoch in range(config.epochs):
        order = torch.randperm(len(x), generator=shuffle)
        summed = 0.0
        for i in range(per_epoch):
            batch = order[i * config.batch_size : (i + 1) * config.batch_size]
            loss = torch.nn.functional.mse_loss(net(x[batch]), y[batch]) / out_scale**2
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            summed += float(loss.detach()) * len(batch)
            updates += 1
        losses.append(summed / len(x))
        elapsed = time.perf_counter() - started
        if progress is not None:
            progress(epoch + 1, config.epochs, losses[-1], elapsed)
        if config.max_seconds is not None and elapsed >= config.max_seconds:
            break
    return TrainResult(
        weights=net.export(),
        losses=losses,
        epochs=len(losses),
        updates=updates,
        seconds=time.perf_counter() - started,
        windows=len(x),
    )
