"""How good a forecast is: MAE and MAPE per series, per forecaster and per horizon step.

Every forecaster is scored on the same steps of the same held-out series: from one period into
the series (the seasonal-naive forecast reads the load one period back) to its end, each step
``t`` forecasting ``t .. t + steps - 1``. MAE is in requests per step; MAPE (in %) counts only
steps whose true load is at least :data:`MAPE_FLOOR` requests, where a percentage means
something. Results are averaged over the held-out seeds of a series' pattern and noise level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rlbench.envs.forecasters import Forecaster
from rlbench.forecast.data import PERIOD, Series, windows

MAPE_FLOOR = 10.0  # requests per step: steps with less true load are left out of the MAPE


@dataclass
class Score:
    """One forecaster on one series label (pattern and noise level, all held-out seeds)."""

    label: str
    forecaster: str
    mae: float
    mape: float
    mae_by_step: list[float] = field(default_factory=list)
    mape_by_step: list[float] = field(default_factory=list)
    forecasts: int = 0


def score(
    forecasters: Mapping[str, Forecaster],
    series: Sequence[Series],
    steps: int,
    period: float = PERIOD,
) -> list[Score]:
    """Every forecaster on every series label, in the order of first appearance."""
    start = max([round(period), *(f.window for f in forecasters.values())])
    labels: dict[str, list[Series]] = {}
    for s in series:
        labels.setdefault(s.label, []).append(s)
    out = []
    for label, group in labels.items():
        cut = [windows(s.loads, start, steps, start) for s in group]
        history = np.concatenate([c[0] for c in cut])
        t = np.concatenate([c[1] for c in cut])
        future = np.concatenate([c[2] for c in cut])
        if len(t) == 0:
            continue
        for name, forecaster in forecasters.items():
            predicted = forecaster.predict(history[:, start - forecaster.window :], t, period)
            out.append(_score(label, name, predicted[:, :steps], future))
    return out


def _score(label: str, name: str, predicted: np.ndarray, future: np.ndarray) -> Score:
    error = np.abs(predicted - future)
    counted = future >= MAPE_FLOOR
    ape = np.where(counted, error / np.maximum(future, MAPE_FLOOR), 0.0)
    per_step = counted.sum(axis=0)
    mape_by_step = np.where(per_step > 0, 100.0 * ape.sum(axis=0) / np.maximum(per_step, 1), np.nan)
    mape = 100.0 * ape.sum() / counted.sum() if counted.any() else float("nan")
    return Score(
        label=label,
        forecaster=name,
        mae=float(error.mean()),
        mape=float(mape),
        mae_by_step=[float(v) for v in error.mean(axis=0)],
        mape_by_step=[float(v) for v in mape_by_step],
        forecasts=len(future),
    )


def table(scores: Sequence[Score]) -> str:
    """MAE and MAPE of each forecaster side by side, one line per series label."""
    names = list(dict.fromkeys(s.forecaster for s in scores))
    by = {(s.label, s.forecaster): s for s in scores}
    labels = list(dict.fromkeys(s.label for s in scores))
    width = max([len("series"), *(len(label) for label in labels)])
    mae = "".join(f"{n:>11}" for n in names)
    mape = "".join(f"{n:>11}" for n in names)
    lines = [
        f"{'':<{width}}  {'MAE (requests/step)':^{11 * len(names)}}  "
        f"{'MAPE (%)':^{11 * len(names)}}",
        f"{'series':<{width}}  {mae}  {mape}",
    ]
    for label in labels:
        row = [by.get((label, n)) for n in names]
        cells = "".join(f"{s.mae:>11.1f}" if s else f"{'-':>11}" for s in row)
        pcts = "".join(f"{s.mape:>11.2f}" if s else f"{'-':>11}" for s in row)
        lines.append(f"{label:<{width}}  {cells}  {pcts}")
    return "\n".join(lines)


def as_dict(scores: Sequence[Score]) -> dict[str, dict[str, dict[str, object]]]:
    """``{label: {forecaster: {mae, mape, mae_by_step, mape_by_step, forecasts}}}`` (for JSON)."""
    out: dict[str, dict[str, dict[str, object]]] = {}
    for s in scores:
        out.setdefault(s.label, {})[s.forecaster] = {
            "mae": s.mae,
            "mape": s.mape,
            "mae_by_step": s.mae_by_step,
            "mape_by_step": s.mape_by_step,
            "forecasts": s.forecasts,
        }
    return out
