"""Trained forecasters in the MLflow Model Registry, and back to a local folder.

:func:`register_forecaster` makes the forecaster folder a training run logged (its
``forecaster/`` artifacts) a new version of a registered model (default ``load-forecaster``),
optionally under an alias. :func:`local_model_dir` turns ``models:/NAME/VERSION``,
``models:/NAME@ALIAS`` or ``models:/NAME@latest`` (the newest version; MLflow reserves
``latest`` as an alias name, so it is resolved here) into that version's folder, downloaded once
into ``~/.cache/rlbench/forecasters`` (``$XDG_CACHE_HOME``) under a key of the tracking store,
the name, the version and its source; the environment's ``env.forecast_model=models:/...``
goes through it (:data:`rlbench.envs.forecasters.URI_RESOLVERS`). The store is the one the
caller names (a command's ``tracking.uri`` / ``--tracking-uri``), else ``MLFLOW_TRACKING_URI``,
else ``sqlite:///outputs/mlflow.db``; every message about a missing model names it.

:func:`pinned_reference` turns an alias into the version it names now (a training run keeps
that version); :func:`pin_policy_forecaster` finds the forecaster a policy was trained with,
by its weights' digest, so that a registered policy always acts with it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlbench.envs.lstm_forecaster import META_FILE
from rlbench.errors import UserError
from rlbench.tracking import registry, schema
from rlbench.tracking.client import mlflow_call, mlflow_client, resolve_tracking_uri
from rlbench.tracking.redaction import display_uri
from rlbench.tracking.store_template import cache_dir

LATEST = "latest"


def no_store_hint() -> str:
    """What to do when the store holds no forecaster, in the running command's own terms
    (``tracking.uri``, ``--tracking-uri`` or ``MLFLOW_TRACKING_URI``)."""
    from rlbench.cli import store_options

    return (
        "register a forecaster first (rlbench-forecast train --register NAME) or point "
        f"{store_options().named()} at the store that has it"
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
    name, _, _ = parse(uri)
    store = resolve_tracking_uri(tracking_uri)
    client = mlflow_client(store, missing_hint=no_store_hint())
    version = _version_now(client, store, uri)
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


def _version_now(client: Any, store: str, uri: str) -> str:
    """The version number ``uri`` (an alias, ``latest`` or a version) names now in ``store``."""
    name, _, alias = parse(uri)
    if alias is not None and alias.lower() == LATEST:
        return _newest_version(client, store, name)
    return str(mlflow_call(store, "resolving the model", registry.resolve_alias, uri, store))


def pinned_reference(uri: str, tracking_uri: str | None = None) -> str:
    """``models:/NAME/VERSION`` of the version ``uri`` names now in the store: what a training
    run records, so that it, its reruns and a policy registered from it keep that forecaster
    after the alias moves on."""
    name, _, _ = parse(uri)
    store = resolve_tracking_uri(tracking_uri)
    client = mlflow_client(store, missing_hint=no_store_hint())
    return f"models:/{name}/{_version_now(client, store, uri)}"


def weights_sha256(folder: Path) -> str | None:
    """The weights' digest a forecaster folder's description records (None if unreadable)."""
    try:
        found = json.loads((Path(folder) / META_FILE).read_text()).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def version_with_weights(name: str, sha256: str, tracking_uri: str | None = None) -> str | None:
    """The newest version of forecaster ``name`` whose weights have digest ``sha256`` (each
    version's small folder is downloaded once into the cache); None when none has them."""
    from mlflow.exceptions import MlflowException

    store = resolve_tracking_uri(tracking_uri)
    client = mlflow_client(store, missing_hint=no_store_hint())
    try:
        found = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    for version in sorted((int(v.version) for v in found), reverse=True):
        try:
            folder = local_model_dir(f"models:/{name}/{version}", store)
        except UserError:  # not a forecaster's version: not the one
            continue
        if weights_sha256(folder) == sha256:
            return str(version)
    return None


@dataclass(frozen=True)
class PinnedForecaster:
    """A policy's env settings with its forecaster pinned: ``env_kwargs`` to record (a
    registered forecaster as ``models:/NAME/VERSION``), ``local_kwargs`` to build the env with
    (the forecaster's local folder) and the weights' digest (None: no trained forecaster)."""

    env_kwargs: dict[str, Any]
    local_kwargs: dict[str, Any]
    sha256: str | None


def pin_policy_forecaster(
    env_kwargs: dict[str, Any], trained_sha256: str | None, tracking_uri: str | None = None
) -> PinnedForecaster:
    """The forecaster of a policy's env, pinned to the weights it was trained with
    (``trained_sha256``; None when unknown: the reference as it resolves now).

    A reference whose weights are no longer those (an alias moved on since: versions
    registered before references were pinned) is replaced by the version of the same model
    that has them; :class:`UserError` when none has them, or a folder was overwritten: the
    policy would act with a forecaster it never learned with."""
    from rlbench.envs.forecasters import is_uri, resolve_model

    model = env_kwargs.get("forecast_model")
    lstm = str(env_kwargs.get("forecast") or "none").strip().lower() == "lstm"
    if not lstm or not model:
        return PinnedForecaster(dict(env_kwargs), dict(env_kwargs), None)
    model = str(model)
    store = resolve_tracking_uri(tracking_uri)
    pinned = pinned_reference(model, store) if is_uri(model) else model
    folder = resolve_model(pinned, store)
    sha = weights_sha256(folder)
    if trained_sha256 and sha != trained_sha256:
        if not is_uri(model):
            raise UserError(
                f"its forecaster folder {model} now holds other weights (sha256 "
                f"{str(sha)[:12]}...) than it was trained with ({trained_sha256[:12]}...): "
                "restore that folder, or retrain the policy with this forecaster"
            )
        name = parse(model)[0]
        version = version_with_weights(name, trained_sha256, store)
        if version is None:
            raise UserError(
                f"it was trained with forecaster weights sha256 {trained_sha256[:12]}..., which "
                f"no version of {name} in {display_uri(store)} has ({model} names "
                f"{str(sha)[:12]}...): register that forecaster again, or retrain the policy "
                "with this one"
            )
        pinned, sha = f"models:/{name}/{version}", trained_sha256
        folder = resolve_model(pinned, store)
    return PinnedForecaster(
        {**env_kwargs, "forecast_model": pinned},
        {**env_kwargs, "forecast_model": str(folder)},
        sha,
    )


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
