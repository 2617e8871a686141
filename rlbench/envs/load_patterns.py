"""Request-arrival patterns for the autoscaling environment: pure functions of time.

Each pattern maps an integer step array ``t`` (0, 1, ...), a :class:`LoadParams` and a
``numpy.random.Generator`` to requests per step, one value per entry of ``t``. The environment
draws a whole episode's series at reset, so its ``step`` only indexes an array and the series
depends on nothing but the copy's own generator. :func:`generate` adds the optional
multiplicative noise and clips everything to ``>= 0``.

The bundled ``data/sample_trace.csv`` is a synthetic one-day trace (288 five-minute counts: a
diurnal curve with a morning and an evening peak plus noise), not a measured production trace.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SAMPLE_TRACE = Path(__file__).with_name("data") / "sample_trace.csv"


@dataclass(frozen=True)
class LoadParams:
    """Shape parameters shared by the patterns; loads are in requests per step.

    ``period`` is in steps. ``trace`` holds the request counts replayed by the ``trace`` pattern
    (see :func:`read_trace`). Invalid values raise ``ValueError`` naming the parameter.
    """

    base_load: float = 2000.0
    amplitude: float = 1500.0
    period: float = 288.0
    harmonic: int = 4
    harmonic_weight: float = 0.5
    spike_height: float = 2500.0
    spike_every: int = 72
    spike_ramp: int = 3
    random_step: float = 150.0
    noise: float = 0.0
    trace_scale: float = 1.0
    trace: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        nonnegative = ("base_load", "amplitude", "harmonic_weight", "spike_height")
        nonnegative += ("random_step", "noise", "trace_scale")
        for name in nonnegative:
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not np.isfinite(self.period) or self.period <= 0:
            raise ValueError(f"period must be > 0 steps, got {self.period!r}")
        for name in ("harmonic", "spike_every", "spike_ramp"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if 2 * self.spike_ramp > self.spike_every:
            raise ValueError(
                f"spike_ramp must be at most spike_every / 2 (a spike ramps up and down over "
                f"2 * spike_ramp steps), got spike_ramp={self.spike_ramp}, "
                f"spike_every={self.spike_every}"
            )


def _phase(t: np.ndarray, p: LoadParams, cycles: float = 1.0) -> np.ndarray:
    return 2.0 * np.pi * cycles * t / p.period


def steady(t: np.ndarray, p: LoadParams, rng: np.random.Generator) -> np.ndarray:
    """``base_load`` every step."""
    return np.full(t.shape, float(p.base_load))


def sine_curve(t: np.ndarray, p: LoadParams, rng: np.random.Generator) -> np.ndarray:
    """One daily cycle: ``base_load + amplitude * sin(2πt / period)``."""
    return p.base_load + p.amplitude * np.sin(_phase(t, p))


def sinusoidal(t: np.ndarray, p: LoadParams, rng: np.random.Generator) -> np.ndarray:
    """A daily cycle plus a faster one (``harmonic`` cycles per period), kept within
    ``base_load ± amplitude``: ``base + amp * (sin(φ) + w sin(hφ)) / (1 + w)``."""
    w = p.harmonic_weight
    wave = np.sin(_phase(t, p)) + w * np.sin(_phase(t, p, p.harmonic))
    return p.base_load + p.amplitude * wave / (1.0 + w)


def spike(t: np.ndarray, p: LoadParams, rng: np.random.Generator) -> np.ndarray:
    """``base_load`` with a triangular spike starting every ``spike_every`` steps (at t = 0,
    spike_every, ...): up by ``spike_height / spike_ramp`` a step for ``spike_ramp`` steps, then
    back down over as many, so the peak ``base_load + spike_height`` is at ``t mod spike_every ==
    spike_ramp``."""
    u = np.mod(t, p.spike_every)
    rise = np.clip(np.minimum(u, 2 * p.spike_ramp - u), 0, None) / p.spike_ramp
    return p.base_load + p.spike_height * rise


def poisson(t: np.ndarray, p: LoadParams, rng: np.random.Generator) -> np.ndarray:
    """Independent ``Poisson(base_load)`` counts."""
    return rng.poisson(p.base_load, size=t.shape).astype(np.float64)


def random_walk(t: np.ndarray, p: LoadParams, rng: np.random.Generator) -> np.ndarray:
    """A random walk reflected into ``[max(base_load - amplitude, 0), base_load + amplitude]``:
    starts uniformly in that band, moves by ``Normal(0, random_step)`` each step."""
    lo, hi = max(p.base_load - p.amplitude, 0.0), p.base_load + p.amplitude
    width = hi - lo
    start = rng.uniform(0.0, width)
    moves = rng.normal(0.0, p.random_step, size=t.shape)
    if width == 0.0:
        return np.full(t.shape, lo)
    walk = start + np.cumsum(moves) - moves.flat[0]  # starts at ``start`` at t[0]
    # Reflecting at both walls = folding the unbounded walk onto [0, width].
    folded = np.mod(walk, 2.0 * width)
    return lo + np.where(folded <= width, folded, 2.0 * width - folded)


def trace(t: np.ndarray, p: LoadParams, rng: np.random.Generator) -> np.ndarray:
    """Replay ``trace`` (times ``trace_scale``) from its first row, wrapping around at its end."""
    if p.trace is None:
        raise ValueError("trace_path: the trace pattern needs a trace (see read_trace)")
    return p.trace[np.mod(t, len(p.trace))] * p.trace_scale


PATTERNS: dict[str, Callable[[np.ndarray, LoadParams, np.random.Generator], np.ndarray]] = {
    "steady": steady,
    "sine_curve": sine_curve,
    "sinusoidal": sinusoidal,
    "spike": spike,
    "poisson": poisson,
    "random": random_walk,
    "trace": trace,
}


def pattern_name(name: str) -> str:
    """The canonical (lower-case) pattern name; ``ValueError`` naming ``load`` if unknown."""
    key = str(name).strip().lower()
    if key not in PATTERNS:
        raise ValueError(f"load must be one of {', '.join(PATTERNS)}; got {name!r}")
    return key


def generate(name: str, t: np.ndarray, p: LoadParams, rng: np.random.Generator) -> np.ndarray:
    """Requests per step of pattern ``name`` at steps ``t``, times ``1 + noise * N(0, 1)``
    (drawn only when ``noise > 0``), clipped to ``>= 0``."""
    load = PATTERNS[pattern_name(name)](np.asarray(t), p, rng)
    if p.noise > 0:
        load = load * (1.0 + p.noise * rng.standard_normal(load.shape))
    return np.clip(load, 0.0, None)


def extend(
    name: str,
    series: np.ndarray,
    before: int,
    after: int,
    p: LoadParams,
    rng: np.random.Generator,
) -> np.ndarray:
    """``series`` (an episode's loads at steps ``0 .. n-1`` from :func:`generate`) with
    ``before`` loads in front (steps ``-before .. -1``: the history a forecaster reads at the
    episode's start) and ``after`` behind (steps ``n .. n+after-1``: what an oracle forecast
    sees near the end). The series itself is returned unchanged, so an environment with a
    forecast replays the same episodes as one without.

    The deterministic patterns and ``trace`` are evaluated at those steps (a trace wraps); a
    ``poisson`` load draws new counts; the ``random`` walk continues backwards from the first
    load and forwards from the last, reflected into its band; noise, if any, is drawn anew.
    """
    name, series = pattern_name(name), np.asarray(series, dtype=np.float64)
    n = len(series)
    if name == "random":
        head = _walk_from(series[0], before, p, rng)[::-1]
        tail = _walk_from(series[-1], after, p, rng)
    else:
        head = PATTERNS[name](np.arange(-before, 0), p, rng)
        tail = PATTERNS[name](np.arange(n, n + after), p, rng)
    if p.noise > 0:
        head = head * (1.0 + p.noise * rng.standard_normal(head.shape))
        tail = tail * (1.0 + p.noise * rng.standard_normal(tail.shape))
    return np.concatenate([np.clip(head, 0.0, None), series, np.clip(tail, 0.0, None)])


def _walk_from(start: float, count: int, p: LoadParams, rng: np.random.Generator) -> np.ndarray:
    """``count`` further steps of the reflected random walk after ``start``."""
    lo, hi = max(p.base_load - p.amplitude, 0.0), p.base_load + p.amplitude
    width = hi - lo
    if width == 0.0 or count == 0:
        return np.full(count, lo if width == 0.0 else start)
    walk = (min(max(start, lo), hi) - lo) + np.cumsum(rng.normal(0.0, p.random_step, count))
    folded = np.mod(walk, 2.0 * width)
    return lo + np.where(folded <= width, folded, 2.0 * width - folded)


def read_trace(path: str | Path) -> np.ndarray:
    """Request counts from a CSV with one number per row (an optional non-numeric header row,
    blank rows skipped). ``ValueError`` naming ``trace_path`` if the file is missing, empty,
    has a non-numeric or negative row (with its row number) or more than one column."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"trace_path: no such file {str(path)!r}")
    values: list[float] = []
    for row_number, row in enumerate(_trace_rows(path), start=1):
        cells = [c.strip() for c in row if c.strip()]
        if not cells:
            continue
        if len(cells) > 1:
            raise ValueError(
                f"trace_path: {path} row {row_number} has {len(cells)} columns; "
                "expected one request count per row"
            )
        try:
            value = float(cells[0])
        except ValueError:
            if row_number == 1:  # a header
                continue
            raise ValueError(
                f"trace_path: {path} row {row_number} is not a number: {cells[0]!r}"
            ) from None
        if not np.isfinite(value) or value < 0:
            raise ValueError(
                f"trace_path: {path} row {row_number} must be a count >= 0, got {cells[0]!r}"
            )
        values.append(value)
    if not values:
        raise ValueError(f"trace_path: {path} holds no request counts")
    return np.asarray(values, dtype=np.float64)


def _trace_rows(path: Path) -> list[list[str]]:
    """The CSV rows of a trace file read as UTF-8 (a byte-order mark is skipped); a
    ``ValueError`` naming the row and byte that is not UTF-8, or that CSV cannot parse."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"trace_path: cannot read {path} ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        start = err.start + (3 if data.startswith(codecs.BOM_UTF8) else 0)
        row = data.count(b"\n", 0, start) + 1
        raise ValueError(
            f"trace_path: {path} is not UTF-8 text: row {row}, byte {start} is "
            f"0x{data[start]:02x}; save it as a UTF-8 CSV with one request count per row"
        ) from None
    rows = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows.extend(reader)
    except csv.Error as err:
        raise ValueError(f"trace_path: {path} row {reader.line_num}: {err}") from None
    return rows
