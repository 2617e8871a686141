"""Comparison reports: runs → statistics (:mod:`.stats`) → figures (:mod:`.plots`).

The statistics are importable without matplotlib; import :mod:`rlbench.report.plots` for figures.
Notebooks and the report call the same :func:`compare`.
"""

from rlbench.report.stats import (
    METRICS,
    TASK_COLS,
    compare,
    curve_intervals,
    interval_estimates,
    iqm,
    normalise_scores,
    performance_profile,
    probability_of_improvement,
    probability_of_improvement_table,
)

__all__ = [
    "METRICS",
    "TASK_COLS",
    "compare",
    "curve_intervals",
    "interval_estimates",
    "iqm",
    "normalise_scores",
    "performance_profile",
    "probability_of_improvement",
    "probability_of_improvement_table",
]
