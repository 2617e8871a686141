"""Live: the continuous-learning loop (the live-loop issue builds it here).

What it will own: ``rlbench-live``: act on a real or simulated system, log every decision,
trigger retraining (counts and success rate, a schedule, drift), gate a challenger by off-policy
evaluation, promote or roll back; one MLflow parent run per live session.

Layer: the top. May import everything below it: :mod:`rlbench.errors`, :mod:`rlbench.config`,
:mod:`rlbench.cli`, ``envs``, ``agents``, ``tracking``, ``run``, ``results``, ``serve`` and
``offline``.
"""
