"""Serving: policies leave the lab (the registry and serving issue builds it here).

What it will own: trained policies as MLflow Models in the Model Registry (alias ``champion``),
action probabilities for logging propensities, and a decision server with a bounded real-time
queue (overwrite the oldest when full), batching and hot swap of the served version.

Layer: above ``results``, beside ``offline``. May import :mod:`rlbench.errors`,
:mod:`rlbench.config`, :mod:`rlbench.cli`, ``envs``, ``agents``, ``tracking``, ``run`` and
``results``; never ``offline`` or ``live``.
"""
