"""One job, config to score: ``rlbench-train`` and everything a single training run does.

- :mod:`.main`: the Hydra app (``rlbench-train``): compose, train or ``+reproduce``, print;
- :mod:`.train`: build the environment and the agent, learn, evaluate, record one MLflow run;
- :mod:`.periodic`: what happens between learning steps (statistics, validation, checkpoints,
  pruning, progress), one method each; :mod:`.forked_validation` runs a single run's
  validations on the idle core;
- :mod:`.evaluate`: the one evaluation protocol and the artifacts of its result;
- :mod:`.checkpoints`, :mod:`.resume`: where an interrupted run continues, which runs count
  as finished;
- :mod:`.env_presets`: a gymnasium task's tuned settings (``conf/env_presets.yaml``) under the
  user's own;
- :mod:`.divergence`, :mod:`.progress`, :mod:`.reproduce`, :mod:`.trial` (the job side of an
  Optuna sweep) and :mod:`.job_checks` (what a sweeper checks of its jobs up front): the only
  modules here the sweeper plugins import.

May import :mod:`rlbench.errors`, :mod:`rlbench.config`, :mod:`rlbench.cli`, ``envs``,
``agents`` and ``tracking``; never ``results`` or what builds on it.
"""
