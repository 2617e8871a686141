"""Moved to :mod:`rlbench.results.analysis`; ``import rlbench.analysis`` (notebooks, users' code)
gives that module itself, so every name and every patch of it is shared."""

import sys

from rlbench.results import analysis

sys.modules[__name__] = analysis
