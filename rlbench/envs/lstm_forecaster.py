"""A trained LSTM load forecaster, run in numpy: the ``lstm`` of ``env.forecast``.

:mod:`rlbench.forecast` trains the model with torch and writes it here as a folder; this module
reads that folder and runs the same network with numpy alone (no torch, no MLflow: the
environment's layer imports neither), so an environment copy pays microseconds per forecast.

The network, for each copy: the last ``window`` loads ``x_s`` (steps ``s = t - window .. t - 1``)
divided by their mean ``m`` (at least ``scale.floor`` requests) become the inputs
``[x_s / m - 1, sin(2π s / period), cos(2π s / period)]`` of a one-layer LSTM (``hidden``
units, PyTorch's gate equations); a linear head maps its last hidden state to ``steps``
outputs ``y_j``, and the forecast for step ``t + j`` is ``max(x_{t-1} + m * y_j, 0)``: a change
relative to the last load, in units of the window's mean. Dividing by the window's mean makes
one model serve any load level (``env.base_load``, a trace's counts).

The folder (see :func:`save_forecaster`):

- ``forecaster.json``: ``format_version``, ``kind`` ("lstm"), ``window``, ``steps``,
  ``hidden``, ``scale``, ``input_features``, ``target``, ``period`` (of training), ``training``
  (patterns, traces, seeds, noise levels, budget), ``metrics`` and ``weights_sha256``;
- ``weights.npz``: the arrays of :data:`ARRAYS`, read with ``allow_pickle=False``.

Inference runs in float32 (numpy's float32 ``tanh`` is several times faster than float64's):
the same inputs always give the same forecast, but a copy forecast alone and the same copy in a
batch agree to float32 rounding (relative ~1e-7), not bit for bit, because BLAS orders its sums
by the batch's shape.

Anything wrong with the folder is a one-line ``ValueError`` (:class:`~rlbench.errors.UserError`)
naming the file and what to do; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rlbench.errors import UserError, first_line

FORMAT_VERSION = 1
KIND = "lstm"
META_FILE = "forecaster.json"
WEIGHTS_FILE = "weights.npz"
INPUT_FEATURES = ("load / window mean - 1", "sin(2 pi s / period)", "cos(2 pi s / period)")
TARGET = "(load[t+j] - load[t-1]) / window mean"
#: array name -> shape, in terms of H (hidden), F (input features), K (steps); PyTorch's
#: nn.LSTM layout (gates in the order input, forget, cell, output) with its two biases summed
ARRAYS = {
    "lstm.weight_ih": ("4H", "F"),
    "lstm.weight_hh": ("4H", "H"),
    "lstm.bias": ("4H",),
    "head.weight": ("K", "H"),
    "head.bias": ("K",),
}
RETRAIN = "retrain with `rlbench-forecast train` (docs/forecasting.md)"


class LSTMForecaster:
    """The :class:`~rlbench.envs.forecasters.Forecaster` of a trained LSTM (numpy inference).

    ``weights``: the arrays of :data:`ARRAYS`; ``meta``: what ``forecaster.json`` holds
    (``window``, ``steps``, ``hidden``, ``scale``...). Build one with :func:`load_forecaster`.
    """

    name = KIND

    def __init__(self, weights: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        self.meta = dict(meta)
        self.window = int(meta["window"])
        self.steps = int(meta["steps"])
        self.hidden = int(meta["hidden"])
        self.floor = float(meta["scale"]["floor"])
        h = self.hidden
        w_ih = np.asarray(weights["lstm.weight_ih"], dtype=np.float64)
        w_hh = np.asarray(weights["lstm.weight_hh"], dtype=np.float64)
        bias = np.asarray(weights["lstm.bias"], dtype=np.float64)
        # Gates reordered to (input, forget, output, cell) and the sigmoid gates' rows halved:
        # sigmoid(z) = (tanh(z / 2) + 1) / 2, so one tanh call serves all four gates per step.
        # float32 throughout: numpy's float32 tanh is vectorised (~6x float64's speed here).
        order = np.r_[0 : 2 * h, 3 * h : 4 * h, 2 * h : 3 * h]
        half = np.r_[np.full(3 * h, 0.5), np.ones(h)]
        f32 = np.float32
        # The state is kept as columns, (hidden, N), so each gate is a contiguous block of rows.
        self._w_ih_t = np.ascontiguousarray((w_ih[order] * half[:, None]).T, dtype=f32)
        self._w_hh = np.ascontiguousarray(w_hh[order] * half[:, None], dtype=f32)
        self._bias = (bias[order] * half).astype(f32)
        self._w_out_t = np.ascontiguousarray(np.asarray(weights["head.weight"]).T, dtype=f32)
        self._b_out = np.asarray(weights["head.bias"], dtype=f32)

    def _inputs(
        self, history: np.ndarray, t: np.ndarray, period: float
    ) -> tuple[np.ndarray, np.ndarray]:
        return network_inputs(history, t, period, self.window, self.floor)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The network on inputs ``x`` ``(N, window, 3)``: outputs ``(N, steps)`` in units of the
        window's mean (what the torch model of :mod:`rlbench.forecast.lstm` computes)."""
        n, w, f = x.shape
        hid, h3 = self.hidden, 3 * self.hidden
        # the input projection of every step in one matmul; only the recurrence loops
        flat = np.ascontiguousarray(x, dtype=np.float32).reshape(n * w, f)
        xp = flat @ self._w_ih_t
        xp += self._bias
        xp = np.ascontiguousarray(xp.reshape(n, w, 4 * hid).transpose(1, 2, 0))  # (W, 4H, N)
        # Buffers and their views made once: a numpy call costs ~1 µs, so the loop makes only
        # ten (no slicing, no temporaries).
        z = np.tanh(xp[0])  # the hidden state is 0 before the first step
        sig, i, fg, o, g = z[:h3], z[:hid], z[hid : 2 * hid], z[2 * hid : h3], z[h3:]
        c = np.zeros((hid, n), dtype=np.float32)
        h = np.empty((hid, n), dtype=np.float32)
        ig = np.empty((hid, n), dtype=np.float32)
        w_hh = self._w_hh
        for s in range(w):
            if s:
                np.matmul(w_hh, h, out=z)
                np.add(z, xp[s], out=z)
                np.tanh(z, out=z)
            np.multiply(sig, 0.5, out=sig)
            np.add(sig, 0.5, out=sig)  # input, forget, output gates: sigmoids
            np.multiply(c, fg, out=c)
            np.multiply(i, g, out=ig)
            np.add(c, ig, out=c)
            np.tanh(c, out=h)
            np.multiply(h, o, out=h)
        return (h.T @ self._w_out_t + self._b_out).astype(np.float64)

    def predict(self, history: np.ndarray, t: np.ndarray, period: float) -> np.ndarray:
        """``(N, steps)`` forecasts for steps ``t .. t + steps - 1`` (requests per step, >= 0)
        from ``history`` ``(N, window)``, the loads at ``t - window .. t - 1``."""
        x, mean = self._inputs(history, t, period)
        out = self.forward(x)
        out *= mean
        out += np.asarray(history, dtype=np.float64)[:, -1:]
        return np.maximum(out, 0.0, out=out)


def network_inputs(
    history: np.ndarray, t: np.ndarray, period: float, window: int, floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """The network's inputs ``(N, window, 3)`` for the last ``window`` loads of ``history``
    ``(N, >= window)`` before steps ``t`` ``(N,)``, and the window means ``(N, 1)`` (at least
    ``floor``) that scale them."""
    loads = np.asarray(history, dtype=np.float64)
    if loads.ndim != 2 or loads.shape[1] < window:
        raise ValueError(
            f"the lstm forecaster needs a history of shape (N, {window}), got {loads.shape}"
        )
    loads = loads[:, loads.shape[1] - window :]
    mean = np.maximum(loads.mean(axis=1, keepdims=True), floor)
    steps = np.asarray(t, dtype=np.float64).reshape(-1, 1) + np.arange(-window, 0)
    phase = (2.0 * math.pi / float(period)) * steps
    x = np.empty((loads.shape[0], window, 3))
    np.divide(loads, mean, out=x[:, :, 0])
    x[:, :, 0] -= 1.0
    np.sin(phase, out=x[:, :, 1])
    np.cos(phase, out=x[:, :, 2])
    return x, mean


def expected_shapes(meta: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """The shape of every array of :data:`ARRAYS` for the sizes in ``meta``."""
    sizes = {"H": int(meta["hidden"]), "F": len(INPUT_FEATURES), "K": int(meta["steps"])}
    sizes["4H"] = 4 * sizes["H"]
    return {name: tuple(sizes[d] for d in dims) for name, dims in ARRAYS.items()}


def save_forecaster(
    folder: str | os.PathLike[str], weights: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> Path:
    """Write ``weights`` (the arrays of :data:`ARRAYS`) and ``meta`` (at least ``window``,
    ``steps``, ``hidden``; the format's fields are filled in) as a forecaster folder; returns
    it. The JSON is written last, so a folder with one is complete."""
    folder = Path(folder)
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        "input_features": list(INPUT_FEATURES),
        "target": TARGET,
        "scale": {"kind": "window mean", "floor": 1.0},
        **dict(meta),
    }
    arrays = {name: np.asarray(weights[name], dtype=np.float32) for name in ARRAYS}
    _check_arrays(arrays, meta, folder / WEIGHTS_FILE)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META_FILE).unlink(missing_ok=True)
    np.savez(folder / WEIGHTS_FILE, **arrays)  # type: ignore[arg-type]
    meta["weights_sha256"] = _sha256(folder / WEIGHTS_FILE)
    tmp = folder / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    tmp.replace(folder / META_FILE)
    return folder


def load_forecaster(folder: str | os.PathLike[str]) -> LSTMForecaster:
    """The forecaster saved in ``folder``; a one-line ``ValueError`` naming the file and what to
    do if the folder or a file is missing, unreadable, of another format, or corrupt."""
    folder = Path(folder)
    meta_path, weights_path = folder / META_FILE, folder / WEIGHTS_FILE
    if not folder.is_dir():
        raise UserError(
            f"forecaster {folder}: no such folder; give a folder written by "
            "`rlbench-forecast train --out DIR` or models:/<name>@<alias>"
        )
    meta = _read_meta(meta_path)
    if not weights_path.is_file():
        raise UserError(f"{weights_path}: missing; {RETRAIN}")
    if _sha256(weights_path) != meta["weights_sha256"]:
        raise UserError(
            f"{weights_path}: corrupt (its sha256 differs from {META_FILE}'s); {RETRAIN}"
        )
    try:
        with np.load(weights_path, allow_pickle=False) as data:
            arrays = {name: np.asarray(data[name]) for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise UserError(f"{weights_path}: unreadable ({first_line(err)}); {RETRAIN}") from None
    _check_arrays(arrays, meta, weights_path)
    return LSTMForecaster(arrays, meta)


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: missing (not a forecaster folder?); {RETRAIN}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not readable JSON ({first_line(err)}); {RETRAIN}") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: not a forecaster description (a JSON object); {RETRAIN}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(
            f"{path}: format_version {version!r}, this rlbench reads {FORMAT_VERSION}; "
            f"{RETRAIN} (or use the rlbench that wrote it)"
        )
    if meta.get("kind") != KIND:
        raise UserError(f"{path}: kind {meta.get('kind')!r}, expected {KIND!r}; {RETRAIN}")
    for key in ("window", "steps", "hidden"):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{path}: {key} must be an integer >= 1, got {value!r}; {RETRAIN}")
    period = meta.get("period")  # the time-of-day inputs' cycle: the env's must be the same
    if isinstance(period, bool) or not isinstance(period, int | float) or not period > 0:
        raise UserError(
            f"{path}: period must be a number of steps > 0, got {period!r} (a corrupt "
            f"forecaster); {RETRAIN}"
        )
    scale = meta.get("scale")
    floor = scale.get("floor") if isinstance(scale, dict) else None
    if isinstance(floor, bool) or not isinstance(floor, int | float) or not floor > 0:
        raise UserError(f"{path}: scale.floor must be a number > 0, got {floor!r}; {RETRAIN}")
    if len(meta.get("input_features") or ()) != len(INPUT_FEATURES):
        raise UserError(
            f"{path}: input_features must name {len(INPUT_FEATURES)} features; {RETRAIN}"
        )
    if not isinstance(meta.get("weights_sha256"), str):
        raise UserError(f"{path}: weights_sha256 is missing; {RETRAIN}")
    return meta


def _check_arrays(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], path: Path) -> None:
    for name, shape in expected_shapes(meta).items():
        if name not in arrays:
            raise UserError(f"{path}: array {name!r} is missing; {RETRAIN}")
        array = arrays[name]
        if array.shape != shape:
            raise UserError(
                f"{path}: array {name!r} has shape {array.shape}, expected {shape} for "
                f"hidden={meta['hidden']}, steps={meta['steps']}; {RETRAIN}"
            )
        if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
            raise UserError(f"{path}: array {name!r} is not all finite numbers; {RETRAIN}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
