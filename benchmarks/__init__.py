"""rlbench's performance benchmarks (issue 8): ``python -m benchmarks`` or ``make bench``.

One module per benchmark, each with ``run(quick=...) -> list[Row]``; :mod:`benchmarks.__main__`
runs them in one process, prints one table of absolute figures, references, ratios and
targets, and writes it to ``outputs/bench/results.{json,csv,md}``. Kept outside the test suite:
a full run takes several minutes (plain SB3 PPO alone is ~30-90 s per seed).
"""
