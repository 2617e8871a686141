"""Moved to :mod:`rlbench.results.plots`; this name gives that module itself."""

import sys

from rlbench.results import plots

sys.modules[__name__] = plots
