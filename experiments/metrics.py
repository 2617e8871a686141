"""Per algorithm, the mean over seeds of final-evaluation metrics, with 95% bootstrap intervals:
the environment-specific figures (cost, success rate, recovery time) the studies' READMEs set
beside the report's ranking of the return.

    .venv/bin/python experiments/metrics.py --benchmark selfhealing \\
        test/mean_return test/success_rate test/mean_recovery_time

Runs are the FINISHED ones tagged ``benchmark=<name>`` in the default store (``outputs/``) or
``--tracking-uri``; algorithms are named as the report names them (the ``algo=`` preset). Each
cell is the mean over seeds [2.5th, 97.5th percentile of 2000 seeded bootstrap means]; a metric
is the run's mean over its evaluation episodes (``test/`` = held-out test seeds).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from rlbench.results.analysis import load_runs, score_table

REPS = 2000


def cell(values: np.ndarray, rng: np.random.Generator) -> str:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return "-"
    means = rng.choice(values, (REPS, values.size)).mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    digits = 4 if np.abs(values).max() < 1000 else 1
    return f"{values.mean():.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", required=True)
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument(
        "--paired-with", metavar="BENCHMARK",
        help="also: per algorithm in both, the mean per-seed difference (this - that) of the "
        "first metric, with its bootstrap interval over seeds (an ablation on the same seeds)",
    )  # fmt: skip
    parser.add_argument("metrics", nargs="+", help="metric keys, e.g. test/mean_return")
    args = parser.parse_args()
    runs = finished(args.benchmark, args.tracking_uri)
    missing = [m for m in args.metrics if f"metrics.{m}" not in runs.columns]
    if missing:
        print(f"error: no run logged {', '.join(missing)}", file=sys.stderr)
        raise SystemExit(2)
    rng = np.random.default_rng(0)
    print("| algorithm | seeds | " + " | ".join(args.metrics) + " |")
    print("|" + " --- |" * (len(args.metrics) + 2))
    order = runs.groupby("algo")[f"metrics.{args.metrics[0]}"].mean().sort_values(ascending=False)
    for algo in order.index:
        group = runs[runs["algo"] == algo]
        cells = [cell(group[f"metrics.{m}"].to_numpy(float), rng) for m in args.metrics]
        print(f"| {algo} | {len(group)} | " + " | ".join(cells) + " |")
    if args.paired_with:
        other = finished(args.paired_with, args.tracking_uri)
        key = f"metrics.{args.metrics[0]}"
        print(f"\n| algorithm | seeds | {args.metrics[0]}: {args.benchmark} - {args.paired_with} |")
        print("| --- | --- | --- |")
        for algo in sorted(set(runs["algo"]) & set(other["algo"])):
            mine = runs[runs["algo"] == algo].set_index("seed")[key]
            theirs = other[other["algo"] == algo].set_index("seed")[key]
            diff = (mine - theirs).dropna().to_numpy(float)
            print(f"| {algo} | {diff.size} | {cell(diff, rng)} |")


def finished(benchmark: str, uri: str | None) -> pd.DataFrame:
    """The runs tagged ``benchmark`` that the report compares (``score_table``: finished, not
    pruned, a configuration trained twice counted once by its newest run), all their metrics."""
    runs = load_runs(filter=f"tags.benchmark = '{benchmark}'", tracking_uri=uri, status="FINISHED")
    if runs.empty:
        print(f"error: no finished runs tagged benchmark={benchmark}", file=sys.stderr)
        raise SystemExit(2)
    return runs[runs["run_id"].isin(score_table(runs)["run_id"])]


if __name__ == "__main__":
    main()
