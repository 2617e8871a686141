"""Load forecasters an environment can add to its observation: the contract and the baselines.

A forecaster reads the last ``window`` loads of each of ``N`` copies and returns the next
``steps`` loads, in one numpy call for many histories. It is stateless: the same history gives
the same forecast and a reset needs no bookkeeping. The environment therefore makes all of an
episode's forecasts at its reset, one call per copy over every step's window (each window holds
only the loads before its step), and a step only looks its forecast up: the cost is one forward
pass per episode, and a copy gets the same numbers in a batch and alone.

- :class:`LastValue`: the last load, repeated (persistence).
- :class:`SeasonalNaive`: the load one period earlier ("the same time yesterday").
- ``lstm``: a trained LSTM (:mod:`rlbench.envs.lstm_forecaster`, numpy inference of a model
  that :mod:`rlbench.forecast` trains with torch).

The ``oracle`` (the true future load) is not a forecaster: the environment reads it from its own
load series.

A ``models:/<name>/<version>`` or ``models:/<name>@<alias>`` reference to a registered forecaster
is resolved to local files by the function named in :data:`URI_RESOLVERS` (as :data:`ENVIRONMENTS
<rlbench.envs.ENVIRONMENTS>` names classes): the registry lives in a higher layer, which this
module must not import, and a plain folder needs none of it.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

MODES = ("none", "naive", "last_value", "lstm", "oracle")
"""``env.forecast`` values: ``naive`` is :class:`SeasonalNaive`; ``oracle`` the true future."""

#: URI prefix -> "module:function" turning such a reference into a local model folder
URI_RESOLVERS: dict[str, str] = {"models:/": "rlbench.forecast.registry:local_model_dir"}


@runtime_checkable
class Forecaster(Protocol):
    """Forecasts the next ``steps`` loads of ``N`` copies from their last ``window`` loads."""

    name: str
    window: int
    steps: int

    def predict(self, history: np.ndarray, t: np.ndarray, period: float) -> np.ndarray:
        """``history``: ``(N, window)`` loads (requests per step) at steps ``t - window`` ..
        ``t - 1`` of each copy; ``t``: ``(N,)`` the next step of each copy (its time of day is
        ``t / period`` cycles). Returns ``(N, steps)`` forecasts for steps ``t .. t + steps - 1``,
        requests per step, ``>= 0``."""
        ...


class LastValue:
    """Persistence: every future load equals the last one seen."""

    name = "last_value"
    window = 1

    def __init__(self, steps: int) -> None:
        self.steps = _positive("forecast_steps", steps)

    def predict(self, history: np.ndarray, t: np.ndarray, period: float) -> np.ndarray:
        return np.repeat(np.asarray(history, dtype=np.float64)[:, -1:], self.steps, axis=1)


class SeasonalNaive:
    """The load one ``period`` earlier: the forecast for step ``t + j`` is the load at
    ``t + j - period``. Needs ``steps <= period``."""

    name = "naive"

    def __init__(self, steps: int, period: int) -> None:
        self.steps = _positive("forecast_steps", steps)
        self.window = _positive("period", period)
        if self.steps > self.window:
            raise ValueError(
                f"forecast_steps ({steps}) must be <= the period ({period} steps) for the "
                "seasonal-naive forecast (it reads the load one period earlier)"
            )

    def predict(self, history: np.ndarray, t: np.ndarray, period: float) -> np.ndarray:
        return np.array(np.asarray(history, dtype=np.float64)[:, : self.steps], copy=True)


def make_forecaster(mode: str, steps: int, period: float, model: str | None) -> Forecaster | None:
    """The forecaster of ``env.forecast=mode`` (None for ``none`` and ``oracle``, which need
    none); ``ValueError`` naming the setting that is wrong."""
    mode = str(mode).strip().lower()
    if mode not in MODES:
        raise ValueError(f"forecast must be one of {', '.join(MODES)}; got {mode!r}")
    if mode == "lstm":
        if not model:
            raise ValueError(
                "forecast_model: forecast=lstm needs a trained forecaster: a folder written by "
                "`rlbench-forecast train` or models:/<name>@<alias> (see docs/forecasting.md)"
            )
        from rlbench.envs.lstm_forecaster import load_forecaster

        forecaster = load_forecaster(resolve_model(str(model)))
        if forecaster.steps < int(steps):
            raise ValueError(
                f"forecast_steps ({steps}) exceeds what the forecaster {model!r} predicts "
                f"({forecaster.steps} steps); lower forecast_steps or train one with more"
            )
        return forecaster
    if mode == "naive":
        return SeasonalNaive(steps, round(period))
    if mode == "last_value":
        return LastValue(steps)
    return None


@functools.lru_cache(maxsize=32)
def resolve_model(reference: str) -> Path:
    """A local forecaster folder for ``reference`` (a path, or a URI with a resolver)."""
    for prefix, entry in URI_RESOLVERS.items():
        if reference.startswith(prefix):
            module, name = entry.split(":")
            return Path(getattr(importlib.import_module(module), name)(reference))
    return Path(reference).expanduser()


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:  # type: ignore[call-overload]
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)  # type: ignore[call-overload]
