"""What one trial costs under rlbench's sweeper, beside Hydra's basic sweeper and plain Optuna.

``python -m benchmarks.sweeper_overhead [--trials 10,50] [--repeats 3]``

The same tiny Hydra app (``x^2``, no tracking) runs as a fresh process for every measurement:

- ``rlbench_optuna``: ``-m hydra/sweeper=rlbench_optuna hydra.sweeper.n_trials=N x=interval(-5,5)``
  with the sweeper's defaults (TPE, in-memory study, 2 jobs per batch, basic launcher); also with
  a SQLite storage, which adds the heartbeat and the trial overrides jobs report through;
- Hydra's basic sweeper: ``-m x=v1,...,vN`` with ``hydra.sweeper.max_batch_size=2``, the same N
  jobs of the same app through the same launcher;
- plain Optuna: ``study.optimize`` of the same function for N trials (TPE, in memory), timed
  inside its process around the loop (its ~1 ms per trial is below the noise of a process start).

A process's wall time includes Python's and Hydra's start; the per-trial cost is the slope
between two trial counts, (T(N2) - T(N1)) / (N2 - N1), each T the median of ``--repeats`` runs,
the variants interleaved so that load from other jobs hits them alike. Not part of the tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP = """
import hydra


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg):
    return float(cfg.x) ** 2


if __name__ == "__main__":
    main()
"""
CONFIG = "x: 0.0\nhydra:\n  job:\n    chdir: false\n"
PLAIN = """
import sys
import time

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(direction="minimize")
started = time.perf_counter()
study.optimize(lambda t: t.suggest_float("x", -5, 5) ** 2, n_trials=int(sys.argv[1]))
print(f"optimize_seconds={time.perf_counter() - started}")
"""
LIMIT = 1.5  # the bound: at most 1.5x Hydra's basic sweeper per trial


def commands(folder: Path, n: int) -> dict[str, list[str]]:
    app = [sys.executable, str(folder / "app.py"), "-m", f"hydra.sweep.dir={folder}/runs"]
    values = ",".join(f"{-5 + 10 * i / max(n - 1, 1):.4f}" for i in range(n))
    ours = [*app, "hydra/sweeper=rlbench_optuna", f"hydra.sweeper.n_trials={n}",
            "x=interval(-5.0, 5.0)"]  # fmt: skip
    return {
        "rlbench_optuna (memory)": ours,
        "rlbench_optuna (sqlite)": [
            *ours,
            f"hydra.sweeper.storage=sqlite:///{folder}/optuna-{time.monotonic_ns()}.db",
        ],
        "hydra basic sweeper": [*app, "hydra.sweeper.max_batch_size=2", f"x={values}"],
        "plain optuna (its loop)": [sys.executable, str(folder / "plain.py"), str(n)],
    }


def wall(cmd: list[str], cwd: Path) -> float:
    env = os.environ | {"OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd[:4])} ... failed:\n{proc.stderr[-2000:]}")
    last = proc.stdout.strip().splitlines()[-1:] or [""]
    if last[0].startswith("optimize_seconds="):  # plain Optuna: its loop, without the start
        return float(last[0].split("=", 1)[1])  # (~1 ms per trial drowns in start-up noise)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweeper_overhead")
    parser.add_argument("--trials", default="10,50", help="two trial counts: N1,N2")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        n1, n2 = sorted(int(v) for v in args.trials.split(","))
    except ValueError:
        parser.error("--trials takes two integers, e.g. 10,50")
    if n1 < 1 or n1 == n2 or args.repeats < 1:
        parser.error("--trials needs two different positive counts; --repeats at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "app.py").write_text(APP)
        (folder / "config.yaml").write_text(CONFIG)
        (folder / "plain.py").write_text(PLAIN)
        times: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.repeats):
            for n in (n1, n2):
                for name, cmd in commands(folder, n).items():
                    times.setdefault((name, n), []).append(wall(cmd, folder))
    names = list(commands(Path("."), n1))
    per_trial = {
        name: (statistics.median(times[name, n2]) - statistics.median(times[name, n1])) / (n2 - n1)
        for name in names
    }
    print(f"per-trial cost, slope between {n1} and {n2} trials, median of {args.repeats} runs")
    print(f"{'':26} {'T(' + str(n1) + ') s':>9} {'T(' + str(n2) + ') s':>9} {'ms/trial':>9}")
    for name in names:
        t1, t2 = statistics.median(times[name, n1]), statistics.median(times[name, n2])
        print(f"{name:26} {t1:9.2f} {t2:9.2f} {1000 * per_trial[name]:9.1f}")
    ratio = per_trial["rlbench_optuna (memory)"] / per_trial["hydra basic sweeper"]
    verdict = "within" if ratio <= LIMIT else "ABOVE"
    print(f"rlbench_optuna (memory) / hydra basic sweeper: {ratio:.2f}x ({verdict} {LIMIT}x)")
    return 0 if ratio <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
