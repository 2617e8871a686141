"""The report's first screen: who wins, by how much, how sure, in one table and one sentence.

A reader who stops after the first screen must still get the finding right, so everything here
follows the rank groups of :func:`rlbench.results.stats.rank_algorithms` (rank 1: no algorithm
was shown better) and never crowns one algorithm of a tied group. Pure functions of the
comparison tables: they return text and table cells; :mod:`rlbench.results.report` places them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from rlbench.results.stats import holm
from rlbench.tracking.links import number

OVERALL = "overall:"  # the key of an env's overall claim among the task labels
RANK1_MARK = "★"  # beside a cell whose algorithm is in the rank-1 group of that column
NO_RUNS = "–"


def interval(row: pd.Series, metric: str = "iqm") -> str:
    """``estimate [lo, hi]`` of one statistic of a comparison row."""
    return f"{number(row[metric])} [{number(row[f'{metric}_lo'])}, {number(row[f'{metric}_hi'])}]"


def task_label(env: str, load: str, many_envs: bool = True) -> str:
    """How a task (env, load pattern) is named: ``spike``, or ``autoscaling/spike``."""
    if load == "-":
        return env
    return f"{env}/{load}" if many_envs else load


def names(algos: Sequence[str], bold: bool = True) -> str:
    """``a``, ``a and b``, ``a, b and c`` (bold by default)."""
    shown = [f"**{a}**" if bold else str(a) for a in algos]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def summary_table(
    per_load: pd.DataFrame, overall: pd.DataFrame | None
) -> tuple[list[str], list[list[str]]]:
    """Algorithm x load pattern (and overall) of IQM [CI]; rank-1 cells bold and starred.

    Rows are ordered by the overall rank (else the mean per-pattern rank), then IQM, then name.
    """
    many_envs = per_load["env"].nunique() > 1
    tasks = sorted({(e, lo) for e, lo in zip(per_load["env"], per_load["load"], strict=True)})
    columns: list[tuple[str, pd.DataFrame]] = [
        (task_label(e, lo, many_envs), per_load[(per_load["env"] == e) & (per_load["load"] == lo)])
        for e, lo in tasks
    ]
    if overall is not None:
        for env, group in overall.groupby("env", sort=True):
            label = f"overall on {env} (normalised)" if many_envs else "overall (normalised)"
            columns.append((label, group))
    order_by = overall if overall is not None else per_load
    mean_rank = order_by.groupby("algo")["rank"].mean()
    mean_iqm = order_by.groupby("algo")["iqm"].mean() if "iqm" in order_by else {}
    algos = sorted(
        set(per_load["algo"]),
        key=lambda a: (mean_rank.get(a, 1e9), -mean_iqm.get(a, -1e300), a),
    )
    rows = []
    for algo in algos:
        cells = [algo]
        for _, table in columns:
            row = table[table["algo"] == algo]
            if row.empty:
                cells.append(NO_RUNS)
                continue
            r = row.iloc[0]
            text = interval(r)
            cells.append(f"**{text}** {RANK1_MARK}" if int(r["rank"]) == 1 else text)
        rows.append(cells)
    return ["algorithm", *(label for label, _ in columns)], rows


def rank1(table: pd.DataFrame) -> list[str]:
    """The rank-1 group of one comparison, highest IQM first."""
    top = table[table["rank"] == 1].sort_values("iqm", ascending=False)
    return list(top["algo"])


def verdict(
    per_load: pd.DataFrame,
    overall: pd.DataFrame | None,
    seeds: pd.Series,
    min_seeds: int,
    confidence: float = 0.95,
) -> str:
    """One plain sentence (two at most): the overall finding, where it holds, the seed caveat.

    ``seeds`` is the number of runs per (env, load, algo). Each winner the sentence names is a
    claim ("it beats every other algorithm there", ``p_claim`` of the tables); the claims are
    corrected together (Holm, familywise error ``1 - confidence``): with six load patterns,
    uncorrected claims named a winner among identical algorithms in half the reports.
    """
    many_envs = per_load["env"].nunique() > 1
    compared = overall is not None and len(overall) > 1
    # per env: did every algorithm there run on every one of its load patterns?
    covered = {
        env: group.groupby("algo")["load"].apply(frozenset).nunique() == 1
        for env, group in per_load.groupby("env", sort=True)
    }
    apart = compared and not all(covered.values())
    claims: dict[str, tuple[str, float]] = {}  # task label or OVERALL + env -> (algo, p_claim)
    tied, family = [], 0  # family: the hypotheses tested, one per compared load pattern
    for (env, load), group in per_load.groupby(["env", "load"], sort=True):
        if len(group) < 2:
            continue
        family += 1
        first = rank1(group)
        label = task_label(env, load, many_envs)
        if len(first) == 1:
            claims[label] = (first[0], _p_claim(group, first[0]))
        else:
            tied.append(label)
    overall_groups: list[tuple[str, pd.DataFrame]] = []  # one overall table per covered env
    if compared:
        split = overall.groupby("env", sort=True) if "env" in overall else [("", overall)]
        overall_groups = [
            (str(e) if many_envs else "", g)
            for e, g in split
            if len(g) > 1 and covered.get(e, len(covered) == 1 and all(covered.values()))
        ]
    for env, group in overall_groups:
        family += 1
        first = rank1(group)
        if len(first) == 1:
            claims[OVERALL + env] = (first[0], _p_claim(group, first[0]))
    shown = _holm_claims(claims, family, 1.0 - confidence)
    parts = []
    if apart:  # e.g. threshold ran on some load patterns only: an overall rank would mislead
        where = [e for e, ok in covered.items() if not ok]
        on = f" on {names(where, bold=False)}" if many_envs else ""
        parts.append(f"no overall winner{on}: not every algorithm ran on every load pattern")
    for env, group in overall_groups:
        where = f" on {env}" if env else ""
        first = rank1(group)
        if OVERALL + env in shown:
            best = group[group["algo"] == first[0]].iloc[0]
            parts.append(
                f"**{first[0]}** is best overall{where} (normalised score {interval(best)}, "
                "0 = baseline, 1 = best mean per pattern)" + _larger_mean(group, best)
            )
        elif len(first) == 1:
            parts.append(
                f"**{first[0]}** ranks first overall{where} but is not shown better than every "
                f"other algorithm once {_family_text(family)} are corrected together"
            )
        else:
            parts.append(f"{names(first)} cannot be told apart overall{where}")
    clear: dict[str, list[str]] = {}
    leads: dict[str, list[str]] = {}  # ranked first alone, but not after the correction
    for label, (algo, _) in claims.items():
        if not label.startswith(OVERALL):
            (clear if label in shown else leads).setdefault(algo, []).append(label)
    if clear:
        wins = "; ".join(f"{a} on {names(sorted(t), bold=False)}" for a, t in clear.items())
        parts.append(f"clear winners per load pattern: {wins}")
    if leads:
        first = "; ".join(f"{a} on {names(sorted(t), bold=False)}" for a, t in leads.items())
        parts.append(
            f"ranked first alone but not shown once {_family_text(family)} are corrected "
            f"together: {first}"
        )
    if tied:
        parts.append(f"no single winner on {names(sorted(tied), bold=False)} (see the ★ cells)")
    if not parts:
        parts.append("there is only one algorithm per load pattern: nothing to compare")
    low, high = int(seeds.min()), int(seeds.max())
    count = f"{low}" if low == high else f"{low} to {high}"
    caveat = (
        f"Each cell rests on {count} seed{'' if high == 1 else 's'}: differences smaller than "
        "the intervals could not be seen, and more seeds would tighten them."
    )
    if low < min_seeds:
        caveat += f" Cells with fewer than {min_seeds} seeds are never called different."
    elif _smallest_p(low) > 1.0 - confidence:  # e.g. 3 against 3: p >= 2/20 = 0.1 > 5%
        enough = next(k for k in range(low, 64) if _smallest_p(k) <= 1.0 - confidence)
        caveat += (
            f" With {low} seeds against {low}, no difference on one load pattern can be shown at "
            f"{1.0 - confidence:.0%} however large (the smallest p-value of the permutation test "
            f"is {_smallest_p(low):.2g}): train {enough} or more seeds."
        )
    sentence = "; ".join(parts)
    if not sentence.startswith("*"):  # a bold algorithm name keeps its case
        sentence = sentence[0].upper() + sentence[1:]
    return f"{sentence}. {caveat}"


def _smallest_p(seeds: int) -> float:
    """The smallest two-sided p-value an exact permutation test of ``seeds`` runs against
    ``seeds`` runs on one load pattern can give: the two extreme splits of C(2n, n)."""
    return min(1.0, 2.0 / math.comb(2 * seeds, seeds))


def _family_text(family: int) -> str:
    """What Holm corrected over: the compared load patterns and overall rankings."""
    return f"the {family} winner claims this sentence could make" if family > 1 else "it"


def _p_claim(table: pd.DataFrame, algo: str) -> float:
    value = table.loc[table["algo"] == algo, "p_claim"].iloc[0]
    return 1.0 if pd.isna(value) else float(value)


def _holm_claims(claims: dict[str, tuple[str, float]], family: int, alpha: float) -> set[str]:
    """The claims that survive Holm's correction over ``family`` hypotheses (one per compared
    load pattern and per overall table; a pattern without a single leader counts, with p = 1)."""
    labels = list(claims)
    p_values = [claims[k][1] for k in labels] + [1.0] * (family - len(labels))
    return {k for k, kept in zip(labels, holm(p_values, alpha)[: len(labels)], strict=True) if kept}


def _larger_mean(overall: pd.DataFrame, best: pd.Series) -> str:
    """A note when another algorithm's mean normalised score is above the winner's: the winner
    beats each other algorithm more often (P(X > Y)), not necessarily by more."""
    if "mean" not in overall:
        return ""
    above = overall[overall["mean"] > best["mean"]]
    if above.empty:
        return ""
    return (
        f"; it wins more often, but {names(list(above['algo']), bold=False)} "
        f"{'has' if len(above) == 1 else 'have'} a higher mean normalised score (wins by more "
        "where it wins)"
    )


def degenerate_note(per_load: pd.DataFrame, scores: pd.DataFrame) -> str | None:
    """Why some intervals have zero width, or None when none has.

    A cell of one run has nothing to resample: its interval is that run's score. Otherwise a
    deterministic policy on a deterministic load pattern replays the same episode for every
    test seed (standard deviation 0), and when its training seeds also agree, every bootstrap
    resample is the same number.
    """
    flat = per_load[per_load["iqm_lo"] == per_load["iqm_hi"]]
    if flat.empty:
        return None
    many_envs = per_load["env"].nunique() > 1
    single = flat["n_runs"] == 1 if "n_runs" in flat else pd.Series(False, index=flat.index)

    def listed(rows: pd.DataFrame) -> str:
        cells = [f"{r.algo} on {task_label(r.env, r.load, many_envs)}" for r in rows.itertuples()]
        return f"{len(cells)}: {', '.join(cells[:6])}{', ...' if len(cells) > 6 else ''}"

    parts = []
    agreed = flat[~single]
    if len(agreed):
        same = ""
        if "std_return" in scores:
            n = int((scores["std_return"].fillna(1.0) == 0).sum())
            same = (
                f" {n} of {len(scores)} runs scored the same on every test episode "
                "(standard deviation 0)."
            )
        parts.append(
            f"**Zero-width intervals** ({listed(agreed)}): a deterministic policy on a "
            "deterministic load pattern plays the same episode on every test seed, and its seeds "
            "agreed, so every bootstrap resample gives the same value." + same + " Zero width "
            "means these runs did not vary, not that the algorithm's score is known exactly on "
            "other loads or seeds."
        )
    if single.any():
        parts.append(
            f"**Zero-width intervals of a single run** ({listed(flat[single])}): one run per "
            "cell, so the bootstrap can only return that run's score; the width says nothing "
            "about how much the score varies over seeds. Train more seeds."
        )
    return " ".join(parts)
