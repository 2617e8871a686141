"""Retraining triggers: when the live loop should train a challenger.

Each trigger watches the stream of decisions since the last retraining and says why it fires
(a sentence for the log and the MLflow run), or nothing. From the seed systems:

- :class:`CountTrigger`: at least ``min_decisions`` decisions and a success rate below
  ``max_success_rate`` (the self-healing seed: 1000 actions, 0.8); or, with no rate, every
  ``min_decisions`` decisions (Qsentry retrains every 10 updates);
- :class:`ElapsedTrigger`: system time since the last retraining (``604800`` s = the
  recommender's weekly job); system time is the adapter's, so an accelerated simulation
  reaches "a week" in seconds;
- :class:`DriftTrigger`: the mean reward of the latest window fell below the reference window
  (the first decisions after the last retraining) by a Welch t-test on block means (blocks
  absorb the autocorrelation of consecutive rewards);
- :class:`FileTrigger`: a file appeared (``rlbench-live-ctl retrain``, or ``touch``); it is
  consumed, so one file is one retraining.

Every trigger's state is a small JSON-able dict, so a resumed session keeps its counts.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlbench.errors import UserError


def block_means(values: Sequence[float], size: int) -> np.ndarray:
    """Means of the latest whole blocks of ``size`` consecutive values (an incomplete oldest
    block is left out): nearly independent where consecutive values are not."""
    n = len(values) // size * size
    return np.asarray(values, dtype=float)[len(values) - n :].reshape(-1, size).mean(axis=1)


def welch(
    reference: Sequence[float], recent: Sequence[float], shift: float = 0.0
) -> tuple[float, float]:
    """Welch's t of ``mean(recent) - mean(reference) + shift`` and its Welch-Satterthwaite
    degrees of freedom (each sample needs 2 values). With no spread at all t is -inf, 0 or +inf
    by the difference's sign: identical constants are no evidence either way."""
    a, b = np.asarray(reference, dtype=float), np.asarray(recent, dtype=float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = float(b.mean() - a.mean() + shift)
    if va + vb == 0.0:
        return (-math.inf if diff < 0 else (math.inf if diff > 0 else 0.0)), len(a) + len(b) - 2.0
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return diff / math.sqrt(va + vb), float(df)


class Trigger:
    """Base: ``observe`` every decision, ``fired`` asks, ``reset`` after a retraining."""

    name = "trigger"

    def observe(self, reward: float, info: Mapping[str, Any], seconds: float) -> None:
        """One decision's reward and info; ``seconds`` of system time it covered."""

    def fired(self) -> str | None:
        """Why a retraining is due now, or None."""
        return None

    def reset(self) -> None:
        """A retraining happened: start counting again."""

    def state(self) -> dict[str, Any]:
        return {}

    def load(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state` (a resumed session)."""


class CountTrigger(Trigger):
    """``min_decisions`` decisions, and (when ``max_success_rate`` is set) a success rate below it.

    A decision's success is ``info[success_key] == success_value``; decisions whose info lacks
    the key (no outcome yet, e.g. no script ran that epoch) count but have no success.
    """

    name = "count"

    def __init__(
        self,
        min_decisions: int,
        max_success_rate: float | None = None,
        success_key: str = "success",
        success_value: float = 1.0,
    ) -> None:
        if int(min_decisions) < 1:
            raise UserError(f"triggers.count.min_decisions must be >= 1, got {min_decisions}")
        if max_success_rate is not None and not 0.0 < float(max_success_rate) <= 1.0:
            raise UserError(
                f"triggers.count.max_success_rate must be in (0, 1], got {max_success_rate}"
            )
        self.min_decisions = int(min_decisions)
        self.max_rate = None if max_success_rate is None else float(max_success_rate)
        self.key, self.value = success_key, float(success_value)
        self.reset()

    def observe(self, reward: float, info: Mapping[str, Any], seconds: float) -> None:
        self.decisions += 1
        if self.key in info:
            self.outcomes += 1
            self.successes += float(info[self.key]) == self.value

    def rate(self) -> float:
        return self.successes / self.outcomes if self.outcomes else math.nan

    def fired(self) -> str | None:
        if self.decisions < self.min_decisions:
            return None
        if self.max_rate is None:
            return f"{self.decisions} decisions since the last retraining"
        rate = self.rate()
        if self.outcomes and rate < self.max_rate:
            return (
                f"success rate {rate:.4f} < {self.max_rate} ({self.successes:g} of "
                f"{self.outcomes} decisions with {self.key} == {self.value:g})"
            )
        return None

    def reset(self) -> None:
        self.decisions = self.outcomes = 0
        self.successes = 0.0

    def state(self) -> dict[str, Any]:
        return {"decisions": self.decisions, "outcomes": self.outcomes, "successes": self.successes}

    def load(self, state: Mapping[str, Any]) -> None:
        self.decisions = int(state.get("decisions", 0))
        self.outcomes = int(state.get("outcomes", 0))
        self.successes = float(state.get("successes", 0.0))


class ElapsedTrigger(Trigger):
    """``seconds`` of system time since the last retraining (a schedule: 604800 = weekly)."""

    name = "elapsed"

    def __init__(self, seconds: float) -> None:
        if not float(seconds) > 0:
            raise UserError(f"triggers.elapsed_s must be > 0, got {seconds}")
        self.seconds = float(seconds)
        self.elapsed = 0.0

    def observe(self, reward: float, info: Mapping[str, Any], seconds: float) -> None:
        self.elapsed += seconds

    def fired(self) -> str | None:
        if self.elapsed >= self.seconds:
            return f"{self.elapsed:,.0f} s of system time since the last retraining"
        return None

    def reset(self) -> None:
        self.elapsed = 0.0

    def state(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed}

    def load(self, state: Mapping[str, Any]) -> None:
        self.elapsed = float(state.get("elapsed", 0.0))


class DriftTrigger(Trigger):
    """The reward's mean dropped: Welch's t on ``blocks`` block means of the reference window
    (the first ``window`` decisions after a reset) against the latest ``window`` decisions,
    firing when t < -``z``."""

    name = "drift"

    def __init__(self, window: int, blocks: int = 10, z: float = 3.0) -> None:
        if int(blocks) < 2 or int(window) < 2 * int(blocks):
            raise UserError(
                f"triggers.drift needs blocks >= 2 and window >= 2 * blocks, got "
                f"window={window}, blocks={blocks}"
            )
        self.blocks, self.z = int(blocks), float(z)
        self.window = self.blocks * (int(window) // self.blocks)  # whole blocks
        self.reset()

    def observe(self, reward: float, info: Mapping[str, Any], seconds: float) -> None:
        if len(self.reference) < self.window:
            self.reference.append(float(reward))
        else:
            self.recent.append(float(reward))

    def statistic(self) -> float:
        """Welch's t of recent minus reference block means (nan until both windows are full)."""
        if len(self.recent) < self.window:
            return math.nan
        size = self.window // self.blocks
        return welch(block_means(self.reference, size), block_means(self.recent, size))[0]

    def fired(self) -> str | None:
        t = self.statistic()
        if t < -self.z:
            ref, now = float(np.mean(self.reference)), float(np.mean(self.recent))
            return (
                f"reward drift: mean {now:.4g} over the last {self.window} decisions against "
                f"{ref:.4g} after the last retraining (t = {t:.1f} < -{self.z:g})"
            )
        return None

    def reset(self) -> None:
        self.reference: list[float] = []
        self.recent: deque[float] = deque(maxlen=self.window)

    def state(self) -> dict[str, Any]:
        return {"reference": list(self.reference), "recent": list(self.recent)}

    def load(self, state: Mapping[str, Any]) -> None:
        self.reference = [float(x) for x in state.get("reference", [])]
        self.recent.extend(float(x) for x in state.get("recent", []))


class FileTrigger(Trigger):
    """Fires once per appearance of ``path`` (the file is removed when the retraining starts)."""

    name = "file"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def fired(self) -> str | None:
        return f"trigger file {self.path}" if self.path.exists() else None

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)


def build_triggers(cfg: Mapping[str, Any], control_dir: Path) -> list[Trigger]:
    """The triggers ``triggers`` enables (any combination)."""
    out: list[Trigger] = []
    count = cfg.get("count") or {}
    if count.get("enabled", False):
        out.append(
            CountTrigger(
                count["min_decisions"],
                count.get("max_success_rate"),
                count.get("success_key", "success"),
                count.get("success_value", 1.0),
            )
        )
    if cfg.get("elapsed_s"):
        out.append(ElapsedTrigger(cfg["elapsed_s"]))
    drift = cfg.get("drift") or {}
    if drift.get("enabled", False):
        out.append(DriftTrigger(drift["window"], drift.get("blocks", 10), drift.get("z", 3.0)))
    if cfg.get("file", True):
        out.append(FileTrigger(control_dir / "retrain"))
    unknown = set(cfg) - {"count", "elapsed_s", "drift", "file"}
    if unknown:
        raise UserError(
            f"triggers.{sorted(unknown)[0]}: unknown trigger; the triggers are count, "
            "elapsed_s, drift and file"
        )
    return out
