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
module must not import, and a plain folder needs none of it. The store it is looked up in is the
caller's (``store``); a command that knows its store turns the reference into the local folder
once (:func:`with_local_model`) before it builds environments, so every copy it builds reads
the same files whatever the alias names later, and no copy looks in another store.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

DEFAULT_PERIOD = 288  # the environment's default (its horizon), where rlbench-forecast trains
MODES = ("none", "naive", "last_value", "lstm", "oracle")
"""``env.forecast`` values: ``naive`` is :class:`SeasonalNaive`; ``oracle`` the true future."""

#: URI prefix -> "module:function" turning such a reference into a local model folder
URI_RESOLVERS: dict[str, str] = {"models:/": "rlbench.forecast.registry:local_model_dir"}
#: pins a registered policy's forecaster to the weights it trained with (the registry's layer)
POLICY_PINNER = "rlbench.forecast.registry:pin_policy_forecaster"


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


def make_forecaster(
    mode: str, steps: int, period: float, model: str | None, store: str | None = None
) -> Forecaster | None:
    """The forecaster of ``env.forecast=mode`` (None for ``none`` and ``oracle``, which need
    none); ``ValueError`` naming the setting that is wrong. ``store``: the tracking store a
    ``models:/`` reference is looked up in (None: ``MLFLOW_TRACKING_URI``, else the default)."""
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

        forecaster = load_forecaster(resolve_model(str(model), store))
        _check_period(forecaster.meta.get("period"), period, model)
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


def _check_period(trained: object, period: float, model: object) -> None:
    """``ValueError`` when the forecaster learned another period than the environment's: its
    time-of-day inputs (``sin``/``cos`` of ``t / period``) would then mean another time of day,
    and its forecasts would be wrong without any error."""
    if not isinstance(trained, int | float) or isinstance(trained, bool):
        return  # a forecaster description without a period is refused when it is read
    if not math.isclose(float(trained), float(period)):
        raise ValueError(
            f"forecast_model: the forecaster {model!r} was trained at period {trained:g} steps, "
            f"but this environment's period is {float(period):g} (env.period, else env.horizon): "
            f"set env.period={trained:g}, or use a forecaster trained at period {float(period):g} "
            f"(rlbench-forecast train makes them at the default period, {DEFAULT_PERIOD})"
        )


def is_uri(reference: str) -> bool:
    """Whether ``reference`` names a registered forecaster (a resolver's prefix), not a folder."""
    return any(str(reference).startswith(prefix) for prefix in URI_RESOLVERS)


def resolve_model(reference: str, store: str | None = None) -> Path:
    """A local forecaster folder for ``reference`` (a path, or a URI with a resolver), looked
    up in ``store``. Not cached here: an alias is read anew each time (a long-lived process
    follows it), and the resolver caches the version's files on disk."""
    for prefix, entry in URI_RESOLVERS.items():
        if reference.startswith(prefix):
            module, name = entry.split(":")
            return Path(getattr(importlib.import_module(module), name)(reference, store))
    return Path(reference).expanduser()


def pin_policy_forecaster(env_kwargs: dict, trained_sha256: str | None, store: str | None):
    """A policy's env settings with its forecaster pinned to the weights it was trained with
    (:data:`POLICY_PINNER`, imported by name like the resolvers): the policy registry calls
    it, a layer below the forecasters' registry."""
    module, name = POLICY_PINNER.split(":")
    return getattr(importlib.import_module(module), name)(env_kwargs, trained_sha256, store)


def with_local_model(env_kwargs: dict, store: str | None) -> dict:
    """``env_kwargs`` with a registered ``forecast_model`` replaced by its local folder, looked
    up in ``store`` (the command's own); other settings unchanged. Environments built from the
    result read those files, never the registry."""
    model = env_kwargs.get("forecast_model")
    lstm = str(env_kwargs.get("forecast") or "none").strip().lower() == "lstm"
    if not lstm or not model or not is_uri(str(model)):
        return dict(env_kwargs)
    return {**env_kwargs, "forecast_model": str(resolve_model(str(model), store))}


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:  # type: ignore[call-overload]
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)  # type: ignore[call-overload]
