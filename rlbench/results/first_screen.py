"""The report's first screen: who wins, by how much, how sure, in one table and one sentence.

A reader who stops after the first screen must still get the finding right, so everything here
follows the rank groups of :func:`rlbench.results.stats.rank_algorithms` (rank 1: no algorithm
was shown better) and never crowns one algorithm of a tied group. Pure functions of the
comparison tables: they return text and table cells; :mod:`rlbench.results.report` places them.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from rlbench.tracking.links import number

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

    Rows are ordered by the overall rank (else the mean per-pattern rank), then name.
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
    algos = sorted(set(per_load["algo"]), key=lambda a: (mean_rank.get(a, 1e9), a))
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
    per_load: pd.DataFrame, overall: pd.DataFrame | None, seeds: pd.Series, min_seeds: int
) -> str:
    """One plain sentence (two at most): the overall finding, where it holds, the seed caveat.

    ``seeds`` is the number of runs per (env, load, algo).
    """
    many_envs = per_load["env"].nunique() > 1
    clear, tied = {}, []
    for (env, load), group in per_load.groupby(["env", "load"], sort=True):
        first = rank1(group)
        label = task_label(env, load, many_envs)
        if len(first) == 1 and len(group) > 1:
            clear.setdefault(first[0], []).append(label)
        elif len(group) > 1:
            tied.append(label)
    parts = []
    tasks = per_load.groupby("algo")[["env", "load"]].apply(
        lambda g: frozenset(map(tuple, g.to_numpy().tolist()))
    )
    if overall is not None and len(overall) > 1 and tasks.nunique() > 1:
        # threshold on autoscaling and user_feedback on the scheduler were never compared
        parts.append("no overall winner: not every algorithm ran on every task")
    elif overall is not None and len(overall) > 1:
        first = rank1(overall)
        if len(first) == 1:
            best = overall[overall["algo"] == first[0]].iloc[0]
            parts.append(
                f"**{first[0]}** is best overall (normalised score {interval(best)}, "
                "0 = baseline, 1 = best mean per pattern)"
            )
        else:
            parts.append(f"{names(first)} cannot be told apart overall")
    if clear:
        wins = "; ".join(f"{a} on {names(sorted(t), bold=False)}" for a, t in clear.items())
        parts.append(f"clear winners per load pattern: {wins}")
    if tied:
        parts.append(f"no single winner on {names(tied, bold=False)} (see the ★ cells)")
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
    sentence = "; ".join(parts)
    if not sentence.startswith("*"):  # a bold algorithm name keeps its case
        sentence = sentence[0].upper() + sentence[1:]
    return f"{sentence}. {caveat}"


def degenerate_note(per_load: pd.DataFrame, scores: pd.DataFrame) -> str | None:
    """Why some intervals have zero width, or None when none has.

    A deterministic policy on a deterministic load pattern replays the same episode for every
    test seed (standard deviation 0), and when its training seeds also agree, every bootstrap
    resample is the same number.
    """
    flat = per_load[per_load["iqm_lo"] == per_load["iqm_hi"]]
    if flat.empty:
        return None
    many_envs = per_load["env"].nunique() > 1
    cells = [f"{r.algo} on {task_label(r.env, r.load, many_envs)}" for r in flat.itertuples()]
    same = ""
    if "std_return" in scores:
        n = int((scores["std_return"].fillna(1.0) == 0).sum())
        same = (
            f" {n} of {len(scores)} runs scored the same on every test episode "
            "(standard deviation 0)."
        )
    return (
        f"**Zero-width intervals** ({len(flat)}: {', '.join(cells[:6])}"
        f"{', ...' if len(cells) > 6 else ''}): a deterministic policy on a deterministic load "
        "pattern plays the same episode on every test seed, and its seeds agreed, so every "
        "bootstrap resample gives the same value." + same + " Zero width means these runs "
        "did not vary, not that the algorithm's score is known exactly on other loads or seeds."
    )
