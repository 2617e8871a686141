"""Live: the continuous-learning loop.

What it owns: ``rlbench-live`` (:mod:`.cli`, the session in :mod:`.loop`): act on a real or
simulated system (:mod:`.adapters`, :mod:`.scheduler` for real scripts), log every decision with
its propensity, trigger retraining (:mod:`.triggers`), train a challenger (:mod:`.retrain`),
gate it by the paired off-policy comparison (:mod:`.gate`), promote, watch and roll back through
the registry (:mod:`.champion`); one MLflow parent run per session, a child run per retraining.
Also ``rlbench-live-ctl`` (:mod:`.control`: kill switch, retrain, approve, users' script
commands), the terminal view (:mod:`.dashboard`) and ``rlbench-live-demo`` (:mod:`.demo`:
policies side by side on one load).

Layer: the top. May import everything below it: :mod:`rlbench.errors`, :mod:`rlbench.config`,
:mod:`rlbench.cli`, ``envs``, ``agents``, ``tracking``, ``run``, ``results``, ``serve`` and
``offline``.
"""
