"""Serving: registered policies answer decisions over HTTP.

- :mod:`.queue`: the bounded real-time queue (drop-oldest with a count, enqueue/dequeue times,
  delay statistics), shared with the live loop and the forecaster as a producer/consumer queue;
- :mod:`.server`: ``rlbench-serve`` (FastAPI + uvicorn): requests through the queue, one batcher,
  the alias followed and a new version swapped in between batches; :mod:`.shedding` its
  overload answer in the HTTP protocol; :mod:`.metrics` its Prometheus page; :mod:`.cli` its
  command line;
- :mod:`.registry_cli`: ``rlbench-registry`` (register, list, promote, rollback) over
  :mod:`rlbench.tracking.registry`, where the registry itself lives (training registers too).

Layer: above ``results``, beside ``offline``. May import :mod:`rlbench.errors`,
:mod:`rlbench.config`, :mod:`rlbench.cli`, ``envs``, ``agents``, ``tracking``, ``run`` and
``results``; never ``offline`` or ``live``.
"""
