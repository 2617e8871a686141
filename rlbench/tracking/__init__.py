"""MLflow tracking: everything rlbench writes to or reads from an MLflow store.

- :mod:`.schema`: every tag key, artifact path, metric name and Optuna attribute name, once;
- :mod:`.tracker`: the run of one job (:class:`Tracker`, :func:`make_tracker`), config as params;
- :mod:`.store`: MLflow operations on one store (all writes go through it);
- :mod:`.store_template`: a migrated empty SQLite store, copied to make a new one at once;
- :mod:`.helper`: the helper process that runs those operations off the job's critical path;
- :mod:`.forkserver`: a per-user process with MLflow imported that forks those helpers;
- :mod:`.client`: reading a store back (analysis, reports, verify, reproduce share it);
- :mod:`.provenance`: git commit, library versions, host, Hydra overrides as tags;
- :mod:`.redaction`: passwords masked out of everything recorded;
- :mod:`.importance`: a study's parameter importances, one evaluator everywhere;
- :mod:`.registry`: the Model Registry (register, promote, rollback; aliases champion and
  challenger), with :mod:`.policy_model`, the pyfunc model MLflow loads as code.

May import :mod:`rlbench.errors`, :mod:`rlbench.config`, ``envs`` and ``agents`` (the registry
checks that a policy loads); MLflow lazily, where used. ``run``, ``results``, ``serve`` and the
sweeper build on it.
"""

from __future__ import annotations

import importlib
from typing import Any

# public names -> the module that defines them; imported on first use, so that the helper
# process (python -m rlbench.tracking.helper) starts without loading the tracker around it
_EXPORTS = {
    "run_tags": "provenance",
    "check_store": "store",
    "resolve_uri": "store",
    "DEFAULT_ARTIFACTS": "tracker",
    "DEFAULT_EXPERIMENT": "tracker",
    "MlflowTracker": "tracker",
    "Tracker": "tracker",
    "check_name": "tracker",
    "end_status": "tracker",
    "flatten_config": "tracker",
    "format_value": "tracker",
    "make_tracker": "tracker",
    "mark_stale_runs_failed": "tracker",
    "shutdown": "tracker",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
