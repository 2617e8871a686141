"""rlbench's Optuna sweeper for Hydra: ``hydra/sweeper=rlbench_optuna`` (or a ``search=`` preset).

Hydra's own hydra-optuna-sweeper pins ``optuna<3`` and cannot persist studies under SQLAlchemy 2;
this one runs on current Optuna, prunes through the study's storage, resumes a study up to its
total ``n_trials`` and shares it between processes. Hydra imports ``config`` and
``rlbench_optuna_sweeper`` when it scans plugins; Optuna itself is imported only in ``_impl``.
"""
