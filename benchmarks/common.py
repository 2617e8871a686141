"""What every benchmark shares: one result row, timing, the printed table and the files.

A row holds an absolute figure, the reference it is set beside (with the reference's figure and
the ratio between them) and, where issue 8 sets one, the target and whether it was met. Ratios
always read "how many times better ours is": throughput ours/reference, time reference/ours.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PASS, MISS, NOT_JUDGED = "PASS", "MISS", "-"


@dataclass
class Row:
    """One measured figure, optionally beside a reference figure and judged against a target."""

    group: str  # env | training | qlearning | tracking | report
    case: str  # what was measured, e.g. "batched, 1024 copies"
    value: float
    unit: str  # "steps/s", "s", "return"
    cpu_seconds: float | None = None  # this process's CPU time for a timed figure (see below)
    reference: str = ""  # what it is compared with, e.g. "SyncVectorEnv, 1024 copies"
    reference_value: float | None = None
    ratio: float | None = None  # times better than the reference (> 1 is better)
    target: str = ""  # issue 8's target for this figure, in words
    status: str = NOT_JUDGED  # PASS | MISS | - (no target, or not judged in --quick mode)
    details: dict[str, Any] = field(default_factory=dict)  # per-seed figures and the like


def judged(ok: bool, quick: bool = False) -> str:
    """PASS/MISS, or ``-`` when a budget-dependent target is not judged in ``--quick`` mode."""
    if quick:
        return NOT_JUDGED
    return PASS if ok else MISS


def time_call(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall seconds of ``fn()``, this process's CPU seconds during it, and its result.

    On a machine shared with other jobs the wall time includes waiting for a core; single-
    threaded work's CPU time is close to what the wall time would be on an idle machine.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # as `make bench` runs


def rlbench_train(
    args: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None
) -> tuple[float, str]:
    """Wall seconds and standard output of one whole ``rlbench-train`` process, as a user
    types it (``env``: this process's environment with one torch/BLAS thread by default)."""
    exe = Path(sys.executable).with_name("rlbench-train")
    env = os.environ | ONE_THREAD if env is None else env
    start = time.perf_counter()
    done = subprocess.run(
        [str(exe), *args], check=True, capture_output=True, text=True, cwd=cwd, env=dict(env)
    )
    return time.perf_counter() - start, done.stdout


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def mean(values: Iterable[float]) -> float:
    return float(statistics.fmean(list(values)))


def fmt(value: float | None, unit: str = "") -> str:
    """A figure with 3-4 significant digits (``1.23M``, ``45.6``, ``-211``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if unit == "steps/s":
        for scale, suffix in ((1e6, "M"), (1e3, "k")):
            if abs(value) >= scale:
                return f"{value / scale:.3g}{suffix}"
        return f"{value:.3g}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table (also readable on a terminal)."""
    head = ["group", "case", "value", "unit", "cpu s", "reference", "ref. value", "ratio"]
    head += ["target", "status"]
    body = [
        [
            r.group,
            r.case,
            fmt(r.value, r.unit),
            r.unit,
            fmt(r.cpu_seconds),
            r.reference,
            fmt(r.reference_value, r.unit),
            "" if r.ratio is None else f"{fmt(r.ratio)}x",
            r.target,
            r.status,
        ]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    lines = [
        "| " + " | ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)) + " |"
        for line in [head, ["-" * w for w in widths], *body]
    ]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """Where the figures come from: CPU, cores, load, versions, thread settings."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import version

    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    for package in ("numpy", "torch", "stable-baselines3", "gymnasium", "mlflow"):
        info[package] = version(package)
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = os.getloadavg()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        info["git_commit"] = commit or None
    except OSError:
        info["git_commit"] = None
    info["command"] = " ".join([Path(sys.executable).name, "-m", "benchmarks", *sys.argv[1:]])
    return info


def write(rows: Sequence[Row], meta: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """``results.json`` (rows, details and the machine) and ``results.csv`` (the table)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / "results.json", out_dir / "results.csv"
    payload = {"machine": meta, "rows": [asdict(r) for r in rows]}
    json_path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    columns = [k for k in asdict(rows[0]) if k != "details"] if rows else []
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow(asdict(r))
    return json_path, csv_path
