"""Moved to :mod:`rlbench.results.stats`; this name gives that module itself."""

import sys

from rlbench.results import stats

sys.modules[__name__] = stats
