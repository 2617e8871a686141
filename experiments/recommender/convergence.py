"""How many interactions until each recommender policy converges (issue 22's question for UCB
against the seed's Q-learning), from the learning curves of ``experiment=recommender``.

    .venv/bin/python experiments/recommender/convergence.py [--benchmark recommender]

Per algorithm, over its seeds: the validation return at a few budgets (interpolated between
evaluations), the final level (mean of the last three evaluations) and the interactions to
converge, defined before the recommender's runs: the first evaluation step at which the seeds'
mean curve reaches 90% of the way from the random policy's level (its test score; rules log no
curve) to the algorithm's own final level. Intervals are 95% percentile bootstraps over seeds
(2000 resamples, seeded), the whole computation redone on every resample. ``--reference``
(the seed's Q-learning) adds the interactions each algorithm needs to reach that one's final
level: a common bar, so "faster" compares the same level.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd

from rlbench.results.analysis import load_curves, load_runs, score_table

BUDGETS = (1000, 2000, 5000, 10000, 20000, 50000)
FRACTION = 0.9
REPS = 2000


def curves_by_algo(benchmark: str, uri: str | None) -> tuple[dict[str, pd.DataFrame], np.ndarray]:
    """Per learning algorithm, a (seeds x evaluation steps) table of validation returns; and the
    random policy's test returns (rules log no curve: their level is their score)."""
    runs = load_runs(filter=f"tags.benchmark = '{benchmark}'", tracking_uri=uri, status="FINISHED")
    if runs.empty or "random" not in set(runs["algo"]):
        raise SystemExit(f"error: no finished runs tagged benchmark={benchmark} with random")
    runs = score_table(runs)  # the runs the report compares: one per configuration and seed
    curves = load_curves(runs, tracking_uri=uri)
    tables = {  # a step some seed did not evaluate at is left out, not averaged over fewer
        algo: frame.pivot(index="seed", columns="step", values="value").dropna(axis=1)
        for algo, frame in curves.groupby("algo")
    }
    return tables, runs.loc[runs["algo"] == "random", "score"].to_numpy(float)


def converge_step(mean: np.ndarray, steps: np.ndarray, floor: float) -> float:
    """The first step where ``mean`` reaches FRACTION of the way from ``floor`` to its end."""
    final = mean[-3:].mean()
    if final <= floor:
        return float("nan")  # never better than random: nothing to converge to
    return first_reaching(mean, steps, floor + FRACTION * (final - floor))


def first_reaching(mean: np.ndarray, steps: np.ndarray, level: float) -> float:
    """The first evaluation step where ``mean`` is at ``level`` or above (inf: never)."""
    reached = np.nonzero(mean >= level)[0]
    return float(steps[reached[0]]) if reached.size else float("inf")


def summarise(
    tables: dict[str, pd.DataFrame], floor_scores: np.ndarray, reference: str | None
) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    ref = tables[reference].to_numpy() if reference else None
    for algo, table in sorted(tables.items()):
        values, steps = table.to_numpy(), table.columns.to_numpy()
        n, m = len(values), len(floor_scores)
        estimates, boots = [], []
        for resample in range(REPS + 1):
            pick = np.arange(n) if resample == 0 else rng.integers(0, n, n)
            pick_floor = np.arange(m) if resample == 0 else rng.integers(0, m, m)
            mean = values[pick].mean(axis=0)
            floor = floor_scores[pick_floor].mean()
            if ref is not None:  # the reference's final level, resampled over its own seeds
                pick_ref = (
                    np.arange(len(ref)) if resample == 0 else rng.integers(0, len(ref), len(ref))
                )
                level = ref[pick_ref].mean(axis=0)[-3:].mean()
            # PPO and DQN evaluate at multiples of their rollout: the curve between evaluations
            at = [np.interp(b, steps, mean) if steps[0] <= b <= steps[-1] else np.nan
                  for b in BUDGETS]  # fmt: skip
            row = [*at, mean[-3:].mean(), converge_step(mean, steps, floor)]
            if ref is not None:
                row.append(first_reaching(mean, steps, level))
            (estimates if resample == 0 else boots).append(row)
        boots = np.array(boots)
        returns = len(BUDGETS) + 1  # the return columns; then steps (inf: never reached)
        with warnings.catch_warnings():  # a column of NaN: a budget past this curve's end
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanpercentile(boots[:, :returns], [2.5, 97.5], axis=0)
            # steps: evaluation steps themselves, not values between two of them
            lo = [*lo, *np.nanpercentile(boots[:, returns:], 2.5, axis=0, method="lower")]
            hi = [*hi, *np.nanpercentile(boots[:, returns:], 97.5, axis=0, method="higher")]
        names = [*(f"return at {b}" for b in BUDGETS), "final", "interactions to converge"]
        if ref is not None:
            names.append(f"interactions to reach {reference}'s final")
        cells = {
            name: f"{e:.2f} [{a:.2f}, {b:.2f}]" if name.startswith("return") or name == "final"
            else _steps_cell(e, a, b, first=steps[0])
            for name, e, a, b in zip(names, estimates[0], lo, hi, strict=True)
        }  # fmt: skip
        if algo == reference:  # its own final level is no bar for itself
            cells[names[-1]] = "-"
        rows.append({"algorithm": algo, "seeds": n, **cells})
    table = pd.DataFrame(rows)
    return table.loc[:, (table != "nan [nan, nan]").any()]  # budgets no run evaluated at


def _steps_cell(estimate: float, lo: float, hi: float, first: float) -> str:
    """Steps with their interval; "<=" when the curve's first evaluation is already there."""
    if np.isnan(estimate):
        return "-"  # no better than random: nothing to converge to
    if np.isinf(estimate):
        return "never"
    at_most = "<= " if estimate == first else ""
    upper = "never" if np.isinf(hi) else f"{hi:.0f}"
    return f"{at_most}{estimate:.0f} [{lo:.0f}, {upper}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", default="recommender")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument(
        "--reference", default="qlearning_seed",
        help="also count the interactions each algorithm needs to reach this one's final level",
    )  # fmt: skip
    args = parser.parse_args()
    tables, floor = curves_by_algo(args.benchmark, args.tracking_uri)
    if args.reference not in tables:
        raise SystemExit(f"error: no learning curve of {args.reference}; have {sorted(tables)}")
    table = summarise(tables, floor, args.reference)
    print("| " + " | ".join(table.columns) + " |")
    print("|" + " --- |" * len(table.columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join(map(str, row)) + " |")


if __name__ == "__main__":
    main()
