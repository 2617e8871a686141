"""The registry as the live session sees it: the champion's version, promotions, rollbacks and
the records on a retraining's run, all against one tracking store.

A thin face over :mod:`rlbench.tracking.registry` (whose alias moves are single atomic updates
of the store) so that the session names a model once and tests can stand in a fake registry.
"""

from __future__ import annotations

from collections.abc import Mapping

from rlbench.errors import UserError
from rlbench.tracking import registry


class Registry:
    """The registry of ``tracking_uri`` (None: the configured default store)."""

    def __init__(self, tracking_uri: str | None) -> None:
        self.uri = tracking_uri

    def exists(self, model: str) -> bool:
        """Whether ``model`` has a champion."""
        try:
            registry.resolve_alias(f"models:/{model}@champion", self.uri)
        except UserError:
            return False
        return True

    def resolve_alias(self, model_uri: str) -> str:
        return registry.resolve_alias(model_uri, self.uri)

    def promote(self, model: str, version: str, why: str) -> None:
        registry.promote(model, version, f"rlbench-live gate: {why}", self.uri)

    def rollback(self, model: str, why: str) -> None:
        registry.rollback(model, f"rlbench-live rollback: {why}", self.uri)

    def version_of_run(self, model: str, run_id: str) -> str:
        """The version of ``model`` registered from ``run_id``."""
        found = [v for v in registry.versions_of_runs([run_id], self.uri) if v.name == model]
        if not found:
            raise UserError(f"run {run_id} was not registered as {model}")
        return found[0].version

    def annotate_run(
        self, run_id: str, tags: Mapping[str, str], metrics: Mapping[str, float]
    ) -> None:
        """Tags and metrics on a finished run (a retraining's gate verdict and numbers)."""
        from rlbench.tracking.client import mlflow_client
        from rlbench.tracking.store import resolve_uri

        client = mlflow_client(resolve_uri(self.uri))
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        for key, value in metrics.items():
            client.log_metric(run_id, key, float(value))
