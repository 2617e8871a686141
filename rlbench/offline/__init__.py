"""Offline: learning from logged interactions (the interaction-log and OPE issue builds it here).

What it will own: the interaction log (one record per decision with its propensity, append-only,
flushed in batches), offline training from a log (tabular Q-learning by replay), and off-policy
evaluation estimators (IPS, SNIPS, doubly robust) with honest intervals, checked against the
simulators' truth.

Layer: above ``results``, beside ``serve``. May import :mod:`rlbench.errors`,
:mod:`rlbench.config`, :mod:`rlbench.cli`, ``envs``, ``agents``, ``tracking``, ``run`` and
``results``; never ``serve`` or ``live``.
"""
