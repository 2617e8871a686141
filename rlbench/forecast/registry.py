"""Trained forecasters in the MLflow Model Registry, and back to a local folder.

:func:`register_forecaster` makes the forecaster folder a training run logged (its
``forecaster/`` artifacts) a new version of a registered model (default ``load-forecaster``),
optionally under an alias. :func:`local_model_dir` turns ``models:/NAME/VERSION``,
``models:/NAME@ALIAS`` or ``models:/NAME@latest`` (the newest version; MLflow reserves
``latest`` as an alias name, so it is resolved here) into that version's folder, downloaded once
into ``~/.cache/rlbench/forecasters`` (``$XDG_CACHE_HOME``) under a key of the tracking store,
the name, the version and its source; the environment's ``env.forecast_model=models:/...``
goes through it (:data:`rlbench.envs.forecasters.URI_RESOLVERS`). The store is
``MLFLOW_TRACKING_URI``, else ``sqlite:///outputs/mlflow.db``, unless a caller names one.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rlbench.envs.lstm_forecaster import META_FILE
from rlbench.errors import UserError
from rlbench.tracking import registry, schema
from rlbench.tracking.client import mlflow_call, mlflow_client, resolve_tracking_uri
from rlbench.tracking.redaction import display_uri
from rlbench.tracking.store_template import cache_dir

LATEST = "latest"
NO_STORE_HINT = (
    "register a forecaster first (rlbench-forecast train --register NAME) or point "
    "MLFLOW_TRACKING_URI at the store that has it"
)


def register_forecaster(
    run_id: str, name: str, alias: str | None = None, tracking_uri: str | None = None
) -> str:
    """Register run ``run_id``'s forecaster folder as a new version of ``name`` (created if
    new) and point ``alias`` at it; returns the version number."""
    from mlflow.exceptions import MlflowException

    check_alias(alias)
    uri = resolve_tracking_uri(tracking_uri)
    client = mlflow_client(uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        mlflow_call(uri, "registering the model", client.create_registered_model, name)
    source = f"runs:/{run_id}/{schema.FORECASTER_DIR}"
    version = mlflow_call(
        uri, "registering the forecaster", client.create_model_version, name, source, run_id
    )
    if alias:
        mlflow_call(
            uri,
            "setting the alias",
            client.set_registered_model_alias,
            name,
            alias,
            version.version,
        )
    return str(version.version)


def check_alias(alias: str | None) -> None:
    """A :class:`UserError` for an alias MLflow would refuse (``latest``, ``v3``, odd text)."""
    if alias is None:
        return
    if alias.lower() == LATEST:
        raise UserError(
            "--alias latest is reserved by MLflow; models:/NAME@latest already names the newest "
            "version (choose another alias, e.g. production)"
        )
    if not re.fullmatch(r"[A-Za-z_][\w\-]*", alias) or re.fullmatch(r"[vV]\d+", alias):
        raise UserError(
            f"--alias {alias!r}: use letters, digits, _ and - (not v<number>, which MLflow "
            "reads as a version)"
        )


def parse(uri: str) -> tuple[str, str | None, str | None]:
    """``(name, version, alias)`` of a ``models:/`` reference; ``latest`` is an alias here."""
    rest = uri.removeprefix("models:/")
    name, _, tail = rest.partition("/")
    if uri.startswith("models:/") and name and "@" not in rest and tail.lower() == LATEST:
        return name, None, LATEST
    return registry.parse_model_uri(uri)


def local_model_dir(uri: str, tracking_uri: str | None = None) -> Path:
    """The local folder of the registered forecaster ``uri`` (downloaded once, then cached);
    a one-line :class:`UserError` if the store, model, version or alias does not exist or the
    tracking server is unreachable."""
    name, version, alias = parse(uri)
    store = resolve_tracking_uri(tracking_uri)
    client = mlflow_client(store, missing_hint=NO_STORE_HINT)
    if alias is not None and alias.lower() == LATEST:
        version = _newest_version(client, store, name)
    else:
        version = mlflow_call(store, "resolving the model", registry.resolve_alias, uri, store)
    found = mlflow_call(store, "reading the model version", client.get_model_version, name, version)
    key = hashlib.sha256(f"{store}\n{name}\n{version}\n{found.source}".encode()).hexdigest()
    folder = cache_dir() / "forecasters" / f"{_safe(name)}-v{version}-{key[:16]}"
    if (folder / META_FILE).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    from mlflow.artifacts import download_artifacts

    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".download-") as tmp:
        source = mlflow_call(
            store,
            "finding the version's files",
            client.get_model_version_download_uri,
            name,
            version,
        )
        local = Path(
            mlflow_call(
                store,
                f"downloading {name} version {version}",
                download_artifacts,
                artifact_uri=source,
                dst_path=tmp,
                tracking_uri=store,
            )
        )
        if not (local / META_FILE).is_file():
            raise UserError(
                f"{name} version {version} in {display_uri(store)} holds no {META_FILE}: it is "
                "not a forecaster registered by rlbench-forecast"
            )
        try:
            local.rename(folder)
        except OSError:  # another process cached it first
            if not (folder / META_FILE).is_file():
                shutil.rmtree(folder, ignore_errors=True)
                local.rename(folder)
    return folder


def _newest_version(client: Any, store: str, name: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        raise UserError(f"no registered model {name!r} in {display_uri(store)}") from None
    found = mlflow_call(
        store, "listing the model's versions", client.search_model_versions, f"name = '{name}'"
    )
    if not found:
        raise UserError(f"{name} has no versions in {display_uri(store)}")
    return str(max(int(v.version) for v in found))


def _safe(name: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", name)
