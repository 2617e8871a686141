"""rlbench's Optuna sweeper for Hydra: ``hydra/sweeper=rlbench_optuna`` (or a ``search=`` preset).

A drop-in for Hydra's own hydra-optuna-sweeper (which pins ``optuna<3``): its documented configs
and command lines work with only the sweeper's name changed (``config.py`` has its keys and
defaults). On top, with a storage URL, it prunes through the study's storage, resumes a study up
to its total ``n_trials`` and shares it between processes. Hydra imports ``config`` and
``rlbench_optuna_sweeper`` when it scans plugins; Optuna itself is imported only in ``_sweep``.

Modules: ``_sweep`` (the study loop), ``_space`` (the search-space grammar), ``_study`` (storage,
samplers, claims), ``_parent_run`` (the sweep's MLflow parent run). May import from rlbench only
:mod:`rlbench.errors`, :mod:`rlbench.config`, ``rlbench.tracking``, the job side of a trial,
:mod:`rlbench.run.trial`, and the up-front job checks, :mod:`rlbench.run.job_checks`, inside the
function that runs them (tests/test_layout.py checks it).
"""
