"""The registry as the live session sees it: the champion's version, promotions, rollbacks and
the records on a retraining's run, all against one tracking store.

A thin face over :mod:`rlbench.tracking.registry` (whose alias moves are single atomic updates
of the store) so that the session names a model once and tests can stand in a fake registry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rlbench.errors import UserError
from rlbench.tracking import registry, schema


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

    def clear_challenger(self, model: str, version: str) -> bool:
        """Remove the ``challenger`` alias if it still names ``version`` (a challenger the session
        registered and then rejected): ``rlbench-registry promote NAME`` promotes the challenger
        by default, and a rejected one must not be it. True when the alias was removed."""
        return registry.clear_alias(model, schema.CHALLENGER, str(version), self.uri)

    def version_of_run(self, model: str, run_id: str) -> str:
        """The version of ``model`` registered from ``run_id``."""
        found = [v for v in registry.versions_of_runs([run_id], self.uri) if v.name == model]
        if not found:
            raise UserError(f"run {run_id} was not registered as {model}")
        return found[0].version

    def model_file(self, model: str, version: str, folder: Path) -> Path:
        """The saved model of ``version`` (its run's ``model/model.*``), downloaded."""
        from rlbench.offline.collect import run_model_file

        found = [v for v in registry.versions(model, self.uri) if v.version == str(version)]
        if not found or not found[0].run_id:
            raise UserError(f"{model} version {version} has no run to take its model from")
        return run_model_file(found[0].run_id, folder, self.uri)

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


#: waits before each retry of a decision rlbench-serve did not answer, or answered 503: a dropped
#: idle connection (uvicorn closes kept-alive ones after 5 s, e.g. over a retraining) is
#: reconnected at once; an overloaded or restarting server gets ~3 s in all before the error
RETRY_DELAYS_S = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4)  # ~13 s: a server restart


class ServedPolicy:
    """The champion as ``rlbench-serve`` answers for it: each decision is one ``POST /decide``
    on a kept-alive connection. The server follows the registry's alias itself, so ``version``
    is the version of its last answer (``version`` given here until the first one): the
    session records it on each decision. Exploration is applied here, around the server's
    greedy action (``explore.kind=epsilon``); softmax needs Q-values the server does not send.

    A dropped connection is reconnected and a 503 retried (:data:`RETRY_DELAYS_S`); a decision
    is stateless on the server, so asking again is safe."""

    def __init__(
        self,
        url: str,
        n_actions: int,
        timeout: float = 5.0,
        version: str = "?",
        delays: tuple[float, ...] = RETRY_DELAYS_S,
    ) -> None:
        import http.client
        import urllib.parse

        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise UserError(f"serve_url={url!r}: write http://HOST:PORT of rlbench-serve")
        self.url, self.n_actions, self.delays = url, n_actions, delays
        self._conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
        self.version = str(version)

    def action_probabilities(self, obs: Any, deterministic: bool = True) -> Any:
        body = json.dumps({"observations": np.asarray(obs).tolist(), "deterministic": True})
        answer = self._decide(body)
        self.version = str(answer.get("policy", {}).get("version", "?"))
        return np.eye(self.n_actions)[np.asarray(answer["actions"], dtype=np.int64)]

    def _decide(self, body: str) -> dict[str, Any]:
        """The server's answer to ``body``, asked again after a dropped connection or a 503."""
        import http.client
        import time

        why = ""
        for delay in self.delays:
            time.sleep(delay)
            try:
                self._conn.request("POST", "/decide", body, {"Content-Type": "application/json"})
                response = self._conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as err:
                self._conn.close()  # the next request opens a new connection
                why = f"did not answer: {str(err) or type(err).__name__}"
                continue
            if response.status == 503:  # overloaded, or restarting: a moment later it may not be
                why = f"answered 503: {data[:200].decode(errors='replace')}"
                continue
            try:
                answer = json.loads(data)
            except ValueError:
                raise UserError(
                    f"rlbench-serve at {self.url} answered {response.status} with no JSON: is "
                    "serve_url the address of rlbench-serve?"
                ) from None
            if response.status != 200:
                raise UserError(f"rlbench-serve at {self.url} answered {response.status}: {answer}")
            return answer
        raise UserError(
            f"rlbench-serve at {self.url} {why} (asked {len(self.delays)} times over "
            f"{sum(self.delays):.1f} s): start it, or give it more capacity, then rerun the same "
            "command (the session resumes)"
        )

    def predict(self, obs: Any, deterministic: bool = True) -> Any:
        return self.action_probabilities(obs).argmax(axis=1)
