"""Offline: learning from logged interactions.

What it owns: the interaction log (:mod:`.log`: one JSON line per decision with its
propensity, append-only, day-partitioned, fsynced in batches; a validating reader), collecting
one under known exploration (:mod:`.collect`, ``rlbench-collect``), agents that learn from a log
(:mod:`.agents`: ``qlearning_replay``, ``offline_dqn``, ``cql``, ``bc``, reached by
``rlbench-train algo=... data=...`` through ``rlbench.agents.OFFLINE_AGENTS``), off-policy
evaluation with bootstrap intervals and paired comparisons (:mod:`.ope`, ``rlbench-ope``), and
the log as an MLflow dataset input of the runs that use it (:mod:`.tracking`).

Layer: above ``results``, beside ``serve``. May import :mod:`rlbench.errors`,
:mod:`rlbench.config`, :mod:`rlbench.cli`, ``envs``, ``agents``, ``tracking``, ``run`` and
``results``; never ``serve`` or ``live``.
"""
