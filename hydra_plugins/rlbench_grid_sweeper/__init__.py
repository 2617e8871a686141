"""rlbench's grid sweeper for Hydra: ``hydra/sweeper=rlbench_grid`` (the experiment presets').

Hydra's basic sweeper (the cartesian product of ``a=1,2 b=x,y``) with one change: before
launching, it composes a covering set of the jobs (every swept value at least once) instead of
every job. Hydra composes each job again where it runs, so composing all of them up front only
moves that work into the sweep's own process, serially, before any job starts: ~9 s of a
180-job grid on 2 cores. Add ``hydra/sweeper=rlbench_grid`` to a grid of your own for the same.
Imports from rlbench only inside the function that checks the jobs (Hydra imports the plugin
at every app's start): :mod:`rlbench.errors`, :mod:`rlbench.config`, :mod:`rlbench.run.job_checks`.
"""
