"""Load forecasting: train, evaluate and register the LSTM that ``env.forecast=lstm`` runs.

Owns ``rlbench-forecast`` (:mod:`.cli`) and what it is made of, one job per module:

- :mod:`.data`: the load series to train and evaluate on (the built-in patterns on fixed
  training and held-out seeds, disjoint from every seed an agent uses; user CSV traces);
- :mod:`.lstm`: the torch model (the same network :mod:`rlbench.envs.lstm_forecaster` runs in
  numpy), its deterministic training loop and its export;
- :mod:`.metrics`: MAE and MAPE per pattern and horizon step, the LSTM against the
  seasonal-naive and last-value baselines;
- :mod:`.registry`: a trained forecaster as a version of a registered MLflow model, and
  ``models:/NAME@ALIAS`` back to a local folder (the resolver
  :data:`rlbench.envs.forecasters.URI_RESOLVERS` names).

May import :mod:`rlbench.errors`, :mod:`rlbench.config`, :mod:`rlbench.cli`, ``rlbench.envs``
and ``rlbench.tracking``; torch and MLflow lazily, where used. Nothing imports it but the
environments' resolver (by name, at run time).
"""
