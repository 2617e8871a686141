"""The load series a forecaster learns from and is scored on.

Series come from the built-in patterns of :mod:`rlbench.envs.load_patterns` (their
:class:`~rlbench.envs.load_patterns.LoadParams` defaults, the environment's default period of
288 steps) and from user CSV traces (replayed from their first row, wrapping around). Each is
several periods long, so the windows cut from it start at every time of day.

Seeds: agents train on environment seeds ``seed .. seed + num_envs - 1`` (``seed`` < 1000 in
practice) and are evaluated on ``1_000_000 + 1000 * seed + i``
(:func:`rlbench.run.evaluate.evaluation_seeds`). The forecaster trains on :data:`TRAIN_SEEDS`
(7_000_000 ...) and is scored on :data:`HELD_OUT_SEEDS` (8_000_000 ...): disjoint from each
other and from every agent's seeds. Only ``poisson``, ``random`` and noisy series depend on the
seed; the noise-free ``steady``, ``sine_curve``, ``sinusoidal`` and ``spike`` are the same
curves in training and evaluation (as they are in the environment), and so is a trace.

Noise: every pattern and trace is trained on without noise (the environment's default,
``env.noise=0``) on all :data:`TRAIN_SEEDS`, and with :data:`NOISY` (10 % multiplicative
Gaussian noise) on the first :data:`NOISY_TRAIN_SEEDS` of them, so the model has seen clean
curves and curves it must not chase. A third of the windows are noisy: more drowned the clean
patterns' signal in a 30-second budget (measured: steady and sine_curve errors grew ~2x when
half were). Both levels are scored (:data:`NOISE_LEVELS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlbench.envs import load_patterns
from rlbench.errors import UserError

PATTERNS = ("steady", "sine_curve", "sinusoidal", "spike", "poisson", "random")
PERIOD = 288  # the environment's default period (its horizon): one day of 5-minute steps
TRAIN_SEEDS = tuple(range(7_000_000, 7_000_004))
HELD_OUT_SEEDS = tuple(range(8_000_000, 8_000_003))
NOISY = 0.1
NOISY_TRAIN_SEEDS = 2
NOISE_LEVELS = (0.0, NOISY)  # trained on and reported for both
TRAIN_PERIODS = 4  # a training series is this many periods long
EVAL_PERIODS = 3  # an evaluation series: one period of history for the seasonal naive, two scored


@dataclass(frozen=True)
class Series:
    """One load series: ``source`` (a pattern name or a trace's file name), its noise level,
    the seed that drew it, and the loads at steps 0 .. len - 1 (requests per step)."""

    source: str
    noise: float
    seed: int
    loads: np.ndarray

    @property
    def label(self) -> str:
        """``sine_curve`` or ``sine_curve/noise_0.1``: how tables and metrics name it."""
        return self.source if self.noise == 0 else f"{self.source}/noise_{self.noise:g}"


def check_patterns(names: Sequence[str]) -> tuple[str, ...]:
    """The canonical names of ``names``; a :class:`UserError` for one that is not a built-in
    pattern (a trace is given by its file: ``--traces``)."""
    out = []
    for name in names:
        key = str(name).strip().lower()
        if key not in PATTERNS:
            hint = "; give a trace as --traces FILE.csv" if key == "trace" else ""
            raise UserError(
                f"--patterns: unknown pattern {name!r}: choose from {', '.join(PATTERNS)}{hint}"
            )
        if key not in out:
            out.append(key)
    return tuple(out)


def read_traces(paths: Sequence[str | Path]) -> dict[str, np.ndarray]:
    """File name -> request counts of each CSV trace; :class:`UserError` naming a bad one."""
    traces = {}
    for path in paths:
        try:
            counts = load_patterns.read_trace(path)
        except ValueError as err:
            raise UserError(f"--traces: {str(err).removeprefix('trace_path: ')}") from None
        traces[Path(path).name] = counts
    return traces


def pattern_series(
    name: str, seed: int, noise: float, length: int, period: float = PERIOD
) -> Series:
    """Pattern ``name`` at steps 0 .. length - 1, drawn with ``default_rng(seed)``."""
    params = load_patterns.LoadParams(period=float(period), noise=float(noise))
    rng = np.random.default_rng(seed)
    loads = load_patterns.generate(name, np.arange(length), params, rng)
    return Series(name, float(noise), int(seed), loads)


def trace_series(name: str, counts: np.ndarray, seed: int, noise: float, length: int) -> Series:
    """A trace replayed over steps 0 .. length - 1 (wrapping around), with its noise."""
    params = load_patterns.LoadParams(noise=float(noise), trace=counts)
    rng = np.random.default_rng(seed)
    loads = load_patterns.generate("trace", np.arange(length), params, rng)
    return Series(name, float(noise), int(seed), loads)


def make_series(
    patterns: Sequence[str],
    traces: dict[str, np.ndarray],
    seeds: Sequence[int],
    noises: Sequence[float],
    length: int,
) -> list[Series]:
    """Every pattern and trace on every seed at every noise level."""
    out = []
    for noise in noises:
        for seed in seeds:
            out += [pattern_series(p, seed, noise, length) for p in patterns]
            out += [trace_series(n, c, seed, noise, length) for n, c in traces.items()]
    return out


def training_series(patterns: Sequence[str], traces: dict[str, np.ndarray]) -> list[Series]:
    """The training set, :data:`TRAIN_PERIODS` periods each: every series without noise on
    :data:`TRAIN_SEEDS`, and with :data:`NOISY` noise on the first :data:`NOISY_TRAIN_SEEDS`."""
    length = TRAIN_PERIODS * PERIOD
    clean = make_series(patterns, traces, TRAIN_SEEDS, (0.0,), length)
    noisy = make_series(patterns, traces, TRAIN_SEEDS[:NOISY_TRAIN_SEEDS], (NOISY,), length)
    return clean + noisy


def held_out_series(
    patterns: Sequence[str], traces: dict[str, np.ndarray], noises: Sequence[float] = NOISE_LEVELS
) -> list[Series]:
    """The evaluation set: :data:`HELD_OUT_SEEDS`, :data:`EVAL_PERIODS` periods each."""
    return make_series(patterns, traces, HELD_OUT_SEEDS, noises, EVAL_PERIODS * PERIOD)


def windows(
    loads: np.ndarray, window: int, steps: int, start: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ``(history, t, future)`` of a series: ``history`` ``(M, window)`` the loads at
    ``t - window .. t - 1``, ``future`` ``(M, steps)`` those at ``t .. t + steps - 1``, for
    ``t`` from ``start`` (default ``window``) to ``len(loads) - steps``."""
    start = window if start is None else start
    if start < window:
        raise ValueError(f"start ({start}) must be >= window ({window})")
    t = np.arange(start, len(loads) - steps + 1)
    if len(t) == 0:
        empty = np.empty((0, window)), t, np.empty((0, steps))
        return empty
    view = np.lib.stride_tricks.sliding_window_view(loads, window + steps)
    rows = view[t - window]
    return np.array(rows[:, :window]), t, np.array(rows[:, window:])
