"""Paired forecast-vs-none differences of ``experiment=forecasting``: where a forecast helps,
by how much, and how much of the oracle's gain the LSTM captures.

    python experiments/forecasting/analyse.py [--tracking-uri URI] [--out DIR]

Every run of one seed is evaluated on the same held-out episodes whatever its forecast (the
evaluation seeds depend on the training seed only, and a forecast never changes the loads), so
the gain of a forecast is a paired difference per seed: ``score(mode) - score(none)``, in
dollars per day (higher is better). Intervals: 95 % percentile bootstrap over seeds (2,000
replicates; over seeds within each load pattern for the all-pattern rows). "Captured" is
``mean gain(lstm) / mean gain(oracle)`` under the same replicates, reported only where the
oracle's own gain is clearly positive (its interval above 0). Writes ``gains.csv``,
``gains.md`` and ``gains.png`` to ``--out`` (default ``experiments/forecasting/results``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from rlbench.results.analysis import load_runs, score_table

MODES = ("naive", "lstm", "oracle")
REPS = 2000
HERE = Path(__file__).resolve().parent


def paired(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (algorithm, load, seed): the score of every forecast mode side by side."""
    split = table["algo"].str.partition("+")
    frame = table.assign(base=split[0], forecast=split[2].replace("", "none"))
    wide = frame.pivot_table(index=["base", "load", "seed"], columns="forecast", values="score")
    missing = [m for m in ("none", *MODES) if m not in wide.columns]
    if missing:
        raise SystemExit(f"no runs with env.forecast={', '.join(missing)}: run the experiment")
    return wide.dropna().reset_index()


def _boot(gains: dict[str, np.ndarray], groups: np.ndarray, rng: np.random.Generator):
    """Bootstrap means of each gain array, resampling seeds within each group."""
    idx = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    draws = {m: np.empty(REPS) for m in gains}
    for r in range(REPS):
        pick = np.concatenate([rng.choice(i, size=len(i)) for i in idx])
        for m, g in gains.items():
            draws[m][r] = g[pick].mean()
    return draws


def summarise(wide: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Mean gain per mode with its interval, and the share of the oracle's gain per cell."""
    rng = np.random.default_rng(seed)
    rows = []
    cells = [(b, lo, sub) for (b, lo), sub in wide.groupby(["base", "load"])]
    cells += [(b, "all patterns", sub) for b, sub in wide.groupby("base")]
    for base, load, sub in cells:
        gains = {m: (sub[m] - sub["none"]).to_numpy() for m in MODES}
        draws = _boot(gains, sub["load"].to_numpy(), rng)
        row = {"algorithm": base, "load": load, "seeds": len(sub), "none": sub["none"].mean()}
        for m in MODES:
            lo, hi = np.percentile(draws[m], [2.5, 97.5])
            row |= {m: gains[m].mean(), f"{m}_lo": lo, f"{m}_hi": hi}
            row[f"{m}_better_seeds"] = int((gains[m] > 0).sum())
        if row["oracle_lo"] > 0:
            share = draws["lstm"] / draws["oracle"]
            lo, hi = np.percentile(share, [2.5, 97.5])
            row |= {"captured": gains["lstm"].mean() / gains["oracle"].mean()}
            row |= {"captured_lo": lo, "captured_hi": hi}
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(summary: pd.DataFrame) -> str:
    def cell(r: pd.Series, m: str) -> str:
        mark = "**" if r[f"{m}_lo"] > 0 else ""
        return f"{mark}{r[m]:+.1f} [{r[f'{m}_lo']:+.1f}, {r[f'{m}_hi']:+.1f}]{mark}"

    head = "| algorithm | load | none | naive - none | lstm - none | oracle - none | lstm/oracle |"
    lines = [head, "|" + " --- |" * 7]
    for _, r in summary.iterrows():
        captured = ""
        if not pd.isna(r.get("captured", np.nan)):
            captured = f"{r['captured']:.0%} [{r['captured_lo']:.0%}, {r['captured_hi']:.0%}]"
        lines.append(
            f"| {r['algorithm']} | {r['load']} | {r['none']:.1f} | {cell(r, 'naive')} | "
            f"{cell(r, 'lstm')} | {cell(r, 'oracle')} | {captured} |"
        )
    return "\n".join(lines) + "\n"


def figure(summary: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algos = sorted(summary["algorithm"].unique())
    loads = [lo for lo in summary["load"].unique() if lo != "all patterns"] + ["all patterns"]
    fig, axes = plt.subplots(len(algos), 1, figsize=(11, 2.6 * len(algos)), sharex=True)
    colors = {"naive": "#8c8c8c", "lstm": "#1f77b4", "oracle": "#2ca02c"}
    for ax, algo in zip(np.atleast_1d(axes), algos, strict=True):
        sub = summary[summary["algorithm"] == algo].set_index("load").reindex(loads)
        x = np.arange(len(loads))
        for k, m in enumerate(MODES):
            err = [sub[m] - sub[f"{m}_lo"], sub[f"{m}_hi"] - sub[m]]
            ax.bar(x + (k - 1) * 0.27, sub[m], 0.27, yerr=err, color=colors[m], label=m, capsize=2)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_ylabel(f"{algo}\n$ / day vs none")
    ax.set_xticks(np.arange(len(loads)), loads)
    np.atleast_1d(axes)[0].legend(ncol=3, loc="upper left", frameon=False)
    fig.suptitle("Gain of a load forecast in the observation (paired by seed, 95 % bootstrap)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--experiment", default="rlbench")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    runs = load_runs(args.experiment, "tags.benchmark = 'forecasting'", args.tracking_uri)
    summary = summarise(paired(score_table(runs)))
    args.out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(args.out / "gains.csv", index=False)
    text = markdown(summary)
    (args.out / "gains.md").write_text(text)
    figure(summary, args.out / "gains.png")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
