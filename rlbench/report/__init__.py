"""Moved to :mod:`rlbench.results`; ``rlbench.report.stats`` and ``rlbench.report.plots`` (the
notebooks' old imports, users' code) still import, as those modules themselves."""
