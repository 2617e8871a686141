"""``python -m benchmarks [--quick] [--seeds N] [--only env,training,...] [--out DIR]``.

Runs the benchmarks one after the other in this process, prints the table, and writes
``results.json`` (rows with per-seed details and the machine), ``results.csv`` and
``results.md`` under ``--out`` (default ``outputs/bench``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

# one torch/BLAS thread, as `make bench` sets: fastest for small MLPs on CPU (README)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from benchmarks.common import MISS, PASS, machine, table, write

BENCHMARKS = (
    "device", "env", "qlearning", "training", "whole_command", "seed_script", "tracking", "report",
    "serving",
    "offline", "live", "forecasting", "scale_out",
)  # fmt: skip
MODULES = {"env": "env_throughput"}
# only when named in --only: rlzoo builds a virtualenv of rl-zoo3 and runs it (minutes); demo
# runs make demo's commands against the 30k-step demo's, twice each (~12 minutes)
OPTIONAL = ("rlzoo", "demo")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small budgets: a smoke run")
    parser.add_argument("--seeds", type=int, default=None, help="training seeds (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 100k)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    parser.add_argument("--out", default="outputs/bench", help="where the results go")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(BENCHMARKS) - set(OPTIONAL))
    if unknown:
        known = ", ".join(BENCHMARKS + OPTIONAL)
        parser.error(f"unknown benchmark(s) {unknown}; choose from {known}")
    if args.seeds is None:
        args.seeds = 1 if args.quick else 3
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    meta = machine() | {"quick": args.quick, "seeds": args.seeds}
    rows = []
    started = time.perf_counter()
    for name in args.only:
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"benchmarks.{MODULES.get(name, name)}")
        t0 = time.perf_counter()
        if name == "training":
            found = module.run(quick=args.quick, seeds=args.seeds, steps=args.steps)
        elif name == "seed_script":
            found = module.run(quick=args.quick, seeds=args.seeds)
        else:
            found = module.run(quick=args.quick)
        print(f"   {name}: {time.perf_counter() - t0:.0f} s", flush=True)
        rows += found
    meta["total_seconds"] = round(time.perf_counter() - started, 1)
    if hasattr(os, "getloadavg"):
        meta["load_average_at_end"] = os.getloadavg()
    text = table(rows)
    print()
    print(text)
    passed = sum(r.status == PASS for r in rows)
    missed = [r.case for r in rows if r.status == MISS]
    print(
        f"\ntargets: {passed} PASS, {len(missed)} MISS"
        + (f" ({'; '.join(missed)})" if missed else "")
    )
    out = Path(args.out)
    json_path, csv_path = write(rows, meta, out)
    (out / "results.md").write_text(text + "\n")
    print(f"written: {json_path}, {csv_path}, {out / 'results.md'} ({meta['total_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
