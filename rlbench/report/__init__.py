"""Comparison reports: runs → statistics (:mod:`.stats`) → figures (:mod:`.plots`) → documents.

Import the submodule you need (``from rlbench.report import stats``): this package imports
nothing itself, so ``rlbench-report --help`` does not pay for scipy and matplotlib.
Notebooks and the report call the same :func:`rlbench.report.stats.compare`.
"""
