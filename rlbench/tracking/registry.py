"""The MLflow Model Registry: a trained run's policy becomes a versioned model with aliases.

``register`` logs the run's final model as a pyfunc model (:mod:`.policy_model`, models-from-code
around rlbench's own safe files, with a signature, an input example and pinned pip requirements)
and registers it: the first version of a name becomes ``champion``, later ones ``challenger``.
``promote`` moves ``champion`` to a version (the challenger by default), ``rollback`` moves it back
to the version it replaced; every move records who, when and why as version tags, so the
registry's history is the audit trail. Used by ``rlbench-registry``, ``tracking.register=NAME``
at training time, and the decision server (which follows an alias).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import logging
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from rlbench.errors import UserError, first_line
from rlbench.tracking import schema
from rlbench.tracking.client import mlflow_client, resolve_tracking_uri, using_store
from rlbench.tracking.redaction import display_uri

CODE_FILE = Path(__file__).with_name("policy_model.py")
SEARCH_PAGE = 10_000  # model versions read at once (MLflow's own upper bound per page)
REQUIREMENTS = ("rlbench", "mlflow", "numpy", "pandas", "torch", "stable-baselines3", "gymnasium")


@dataclass
class Version:
    """One registered version of a policy, as ``rlbench-registry list`` shows it."""

    name: str
    version: str
    aliases: list[str]
    run_id: str | None
    created: str
    tags: dict[str, str]


def _mlflow(uri: str | None) -> tuple[str, Any]:
    """The store's URI and a client on it (tracking and registry)."""
    uri = resolve_tracking_uri(uri)
    return uri, mlflow_client(uri)


def _who_when_why(action: str, reason: str | None) -> dict[str, str]:
    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = "unknown"
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return {
        f"{schema.REGISTRY_TAG_PREFIX}{action}_by": user,
        f"{schema.REGISTRY_TAG_PREFIX}{action}_at": now,
        f"{schema.REGISTRY_TAG_PREFIX}{action}_why": reason or "",
    }


def _pip_requirements() -> list[str]:
    pins = []
    for dist in REQUIREMENTS:
        try:
            pins.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pins.append(dist)
    return pins


def _policy_run(client: Any, run_id: str) -> Any:
    """The MLflow run ``run_id``; :class:`UserError` when there is none, or it trained a load
    forecaster (rlbench-forecast), which is no policy."""
    try:
        run = client.get_run(run_id)
    except Exception as err:
        raise UserError(f"no MLflow run {run_id!r}: {first_line(err)}") from None
    if run.data.tags.get(schema.KIND_TAG) == schema.FORECAST_KIND:
        raise UserError(
            f"run {run_id} trained a load forecaster (rlbench-forecast), not a policy: "
            "rlbench-registry registers rlbench-train runs (register a forecaster with "
            "rlbench-forecast train --register NAME)"
        )
    return run


def _run_policy(
    client: Any, uri: str, run_id: str, tmp: Path
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """The run's final model file, its environment as a policy records it (its forecaster
    pinned: from the run's config.yaml, see :func:`_pinned_env`) and the kwargs to build it."""
    from omegaconf import OmegaConf

    from rlbench.config import env_spec

    run = _policy_run(client, run_id)
    if run.info.status != "FINISHED":
        raise UserError(f"run {run_id} is {run.info.status}: only a FINISHED run can be registered")
    files = [f.path for f in client.list_artifacts(run_id, schema.MODEL_DIR) if not f.is_dir]
    final = [p for p in files if Path(p).stem == schema.MODEL_STEM]
    if not final:
        raise UserError(
            f"run {run_id} has no {schema.MODEL_DIR}/{schema.MODEL_STEM}.* artifact: "
            "was it logged by rlbench-train?"
        )
    model = Path(client.download_artifacts(run_id, final[0], str(tmp)))
    config = client.download_artifacts(run_id, schema.CONFIG_ARTIFACT, str(tmp))
    env_id, env_kwargs = env_spec(OmegaConf.load(config).env)
    trained = _trained_forecaster(run.data.tags)
    try:
        pinned = _pinned_env(env_kwargs, trained, uri)
    except UserError as err:
        raise UserError(f"run {run_id} cannot be registered: {err}") from None
    spec: dict[str, Any] = {"env_id": env_id, "env_kwargs": pinned.env_kwargs}
    if pinned.sha256:
        spec[FORECASTER_SHA256] = pinned.sha256
    return model, spec, pinned.local_kwargs


#: env.json's key for the weights' digest of the forecaster the policy was trained with
FORECASTER_SHA256 = "forecaster_sha256"


def _trained_forecaster(tags: dict[str, str]) -> str | None:
    """The forecaster weights' digest a training run recorded (``rlbench.forecaster``)."""
    value = str(tags.get(schema.FORECASTER_TAG) or "")
    return value.removeprefix("sha256:") or None


def _pinned_env(env_kwargs: dict[str, Any], trained: str | None, uri: str) -> Any:
    """A policy's env settings with its trained forecaster pinned (:mod:`rlbench.forecast`)."""
    from rlbench.envs.forecasters import pin_policy_forecaster

    return pin_policy_forecaster(env_kwargs, trained, uri)


def log_policy(run_id: str, tracking_uri: str | None = None) -> str:
    """Log run ``run_id``'s final policy as a pyfunc model of that run; returns its model URI."""
    import mlflow
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    from rlbench.agents import load_agent
    from rlbench.envs import make_vec

    uri, client = _mlflow(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="rlbench-register-") as tmp:
        model, env, local_kwargs = _run_policy(client, uri, run_id, Path(tmp))
        venv = make_vec(env["env_id"], 2, seed=0, **local_kwargs)
        try:
            load_agent(model, venv, "cpu")  # refuse a file that would not load when served
            example = np.asarray(venv.reset(), dtype=np.float32)
        except UserError as err:  # named as the run's artifact: the download is gone after
            where = f"run {run_id}'s artifact {schema.MODEL_DIR}/{model.name}"
            raise UserError(str(err).replace(str(model), where)) from None
        finally:
            venv.close()
        env_file = Path(tmp) / schema.POLICY_ENV_FILE
        env_file.write_text(json.dumps(env))
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *example.shape[1:]))]),
            outputs=Schema([TensorSpec(np.dtype(np.int64), (-1,))]),
            params=ParamSchema(
                [
                    ParamSpec("probabilities", "boolean", False),
                    ParamSpec("deterministic", "boolean", True),
                ]
            ),
        )
        # logging into the run reopens it; its status and end time are put back whatever
        # happens (an interrupted registration left a FINISHED run RUNNING or FAILED)
        before = client.get_run(run_id).info
        try:
            with using_store(uri), mlflow.start_run(run_id=run_id), _quiet_example_check():
                info = mlflow.pyfunc.log_model(
                    name=schema.POLICY_MODEL_NAME,
                    python_model=str(CODE_FILE),
                    artifacts={"policy": str(model), "env": str(env_file)},
                    signature=signature,
                    input_example=example,
                    pip_requirements=_pip_requirements(),
                )
        finally:
            client.set_terminated(run_id, status=before.status, end_time=before.end_time)
    return info.model_uri


#: what MLflow says, at INFO on stderr, for every model logged with an input example
EXAMPLE_CHECK = "Validating input example against model signature"


class _DropExampleCheck(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(EXAMPLE_CHECK)


@contextlib.contextmanager
def _quiet_example_check() -> Iterator[None]:
    """Without MLflow's "Validating input example ..." line while a policy is logged: printed
    on every registration (a training run's, rlbench-registry's, rlbench-live's), it says
    nothing a user acts on. Only that line of ``mlflow.pyfunc`` is dropped; its warnings and
    errors (a failing example) still show."""
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    quiet = _DropExampleCheck()
    pyfunc_log.addFilter(quiet)
    try:
        yield
    finally:
        pyfunc_log.removeFilter(quiet)


#: what rlbench logs (log_policy): MLflow's models-from-code loader, rlbench's code file, and
#: the two artifacts it reads; anything else in a version is not loaded
CODE_LOADER = "mlflow.pyfunc.loaders.code_model"
POLICY_ARTIFACTS = {"policy", "env"}


def load_version(name: str, version: str, tracking_uri: str | None = None) -> tuple[Any, Any]:
    """The agent of version ``version`` of ``name`` and the single-copy env it acts in (see
    :func:`load_version_env`)."""
    agent, venv, _, _ = load_version_env(name, version, tracking_uri)
    return agent, venv


def load_version_env(
    name: str, version: str, tracking_uri: str | None = None
) -> tuple[Any, Any, str, dict[str, Any]]:
    """The agent of version ``version`` of ``name``, the single-copy env it acts in, and that
    env's id and settings (its forecaster pinned, as a local folder: build more copies with
    them), read from the version's artifacts without running anything stored with it.

    ``mlflow.pyfunc.load_model`` would unpickle a cloudpickled model, or execute the code file
    stored with a models-from-code one: anyone who can register a version could run code in a
    server. Only a version that has rlbench's form (:func:`log_policy`) is accepted, and its
    ``policy`` artifact is read by rlbench's own loader (SB3 zip with ``weights_only``, NPZ,
    JSON); rlbench's own code does the rest."""
    import mlflow

    from rlbench.agents import load_agent
    from rlbench.envs import make_vec
    from rlbench.envs.lstm_forecaster import META_FILE as FORECASTER_META

    uri = resolve_tracking_uri(tracking_uri)
    what = f"{name} version {version}"
    with tempfile.TemporaryDirectory(prefix="rlbench-load-") as tmp:
        try:
            with using_store(uri):
                local = Path(
                    mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=tmp)
                )
            forecaster = (local / FORECASTER_META).is_file() and not (local / "MLmodel").exists()
            text = "" if forecaster else (local / "MLmodel").read_text()
        except Exception as err:
            raise UserError(f"cannot load {what}: {_stored(first_line(err), tmp)}") from None
        if forecaster:
            raise UserError(
                f"{what} is a load forecaster (registered by rlbench-forecast), not a policy: "
                f"use it as env.forecast_model=models:/{name}/{version}; rlbench-registry, "
                "rlbench-serve and rlbench-collect take policies (rlbench-registry register "
                "RUN_ID NAME with an rlbench-train run)"
            )
        flavor = _flavor(text, what)
        artifacts = flavor.get("artifacts") or {}
        ours = flavor.get("loader_module") == CODE_LOADER and set(artifacts) == POLICY_ARTIFACTS
        if not ours or any(local.rglob("*.pkl")):
            raise UserError(
                f"{what} is not an rlbench policy (registered by rlbench-registry or "
                "tracking.register); it is not loaded: another MLflow model could run "
                "arbitrary code when loaded"
            )
        paths = {
            k: str(a.get("path", "")) if isinstance(a, dict) else "" for k, a in artifacts.items()
        }
        inside = [(local / path).resolve() for path in paths.values()]
        if not all(p.is_relative_to(local.resolve()) for p in inside):
            raise UserError(f"{what}: its artifacts point outside the model: it is not loaded")
        env_path, policy_path = paths["env"], paths["policy"]
        try:
            spec = json.loads((local / env_path).read_text())
            env_kwargs = _acting_env(spec, name, version, uri)
            venv = make_vec(spec["env_id"], 1, **env_kwargs)
        except UserError as err:
            raise UserError(f"cannot load {what}: {err}") from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            reason = _stored(first_line(err), local)
            raise UserError(f"cannot load {what}: its artifact {env_path} ({reason})") from None
        if not (local / policy_path).is_file():
            venv.close()
            raise UserError(f"cannot load {what}: its artifact {policy_path} is missing")
        try:
            agent = load_agent(local / policy_path, venv, device="cpu")
        except UserError as err:
            venv.close()
            reason = str(err).replace(str(local / policy_path), f"its artifact {policy_path}")
            raise UserError(f"cannot load {what}: {_stored(reason, local)}") from None
    return agent, venv, str(spec["env_id"]), env_kwargs


def _acting_env(spec: dict[str, Any], name: str, version: str, uri: str) -> dict[str, Any]:
    """The kwargs to build a version's env with: its forecaster, by the digest its env.json
    records (versions registered before it did: the run's tag), read from the local folder of
    the forecaster it was trained with, looked up in ``uri`` (the command's store)."""
    kwargs = dict(spec["env_kwargs"])
    if str(kwargs.get("forecast") or "none").strip().lower() != "lstm":
        return kwargs
    trained = spec.get(FORECASTER_SHA256)
    if not trained:
        run_id = mlflow_client(uri).get_model_version(name, version).run_id
        trained = (
            _trained_forecaster(mlflow_client(uri).get_run(run_id).data.tags) if run_id else None
        )
    return _pinned_env(kwargs, trained, uri).local_kwargs


#: keys MLflow writes into every MLmodel file: ``utc_time_created`` sorts last, so a file cut
#: short anywhere before its end lacks it
MLMODEL_KEYS = ("flavors", "utc_time_created")


def _flavor(text: str, what: str) -> dict[str, Any]:
    """The ``python_function`` flavor of an MLmodel file's text; ``UserError`` naming a file
    that does not parse or is cut short (a damaged copy, not a foreign model)."""
    import yaml

    try:
        meta = yaml.safe_load(text)
    except yaml.YAMLError as err:
        problem = f"it does not parse: {first_line(err)}"
    else:
        missing = [k for k in MLMODEL_KEYS if not isinstance(meta, dict) or not meta.get(k)]
        flavors = meta.get("flavors") if isinstance(meta, dict) else None
        if not missing and isinstance(flavors, dict):
            flavor = flavors.get("python_function")
            return flavor if isinstance(flavor, dict) else {}
        problem = f"it lacks {', '.join(missing) or 'its flavors'} (cut short?)"
    raise UserError(
        f"cannot load {what}: its MLmodel file is unreadable or damaged ({problem}): restore "
        "it in the artifact store, or serve another version"
    )


def _stored(text: str, folder: str | Path) -> str:
    """``text`` with the temporary download folder taken out of its paths: what is left names
    the file inside the stored model (the folder is deleted by the time anyone reads this)."""
    return text.replace(f"{folder}/", "").replace(str(folder), "the downloaded model")


def register(
    run_id: str, name: str, reason: str | None = None, tracking_uri: str | None = None
) -> Version:
    """Register run ``run_id``'s policy as a new version of ``name``; ``champion`` if it is the
    first version, else ``challenger``. A run already registered under ``name`` keeps its
    version (registering twice makes no duplicate)."""
    from mlflow.exceptions import MlflowException

    if not str(name).strip() or any(c in str(name) for c in "/:"):
        raise UserError(
            f"model name {name!r}: give a non-empty name without '/' or ':' (MLflow's rule), "
            "e.g. autoscaler"
        )
    _policy_run(_mlflow(tracking_uri)[1], run_id)  # before "already registered": a forecaster's
    earlier = [v for v in versions_of_runs([run_id], tracking_uri) if v.name == name]
    if earlier:
        return earlier[0]
    model_uri = log_policy(run_id, tracking_uri)
    uri, client = _mlflow(tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)
    with using_store(uri):  # the version's source (models:/m-<id>) is resolved through it
        mv = client.create_model_version(name, model_uri, run_id=run_id)
    for key, value in _who_when_why("registered", reason).items():
        client.set_model_version_tag(name, mv.version, key, value)
    alias = schema.CHALLENGER if _alias_version(client, name, schema.CHAMPION) else schema.CHAMPION
    try:
        _move_alias(client, name, alias, str(mv.version), tracking_uri)
    except UserError as err:  # the stored copy of a file that loaded a moment ago
        raise UserError(f"registered as version {mv.version} of {name}, but {err}") from None
    return _version(client, name, mv.version)


def promote(
    name: str,
    version: str | None = None,
    reason: str | None = None,
    tracking_uri: str | None = None,
) -> Version:
    """Make ``version`` (default: the ``challenger``) the ``champion``; the replaced champion is
    remembered on the new one, for :func:`rollback`."""
    uri, client = _mlflow(tracking_uri)
    _require_model(client, name, uri)
    version = version or _alias_version(client, name, schema.CHALLENGER)
    if version is None:
        raise UserError(f"{name} has no {schema.CHALLENGER}: name the version to promote")
    version = _require_version(client, name, str(version), uri)
    previous = _alias_version(client, name, schema.CHAMPION)
    if previous == str(version):
        raise UserError(f"version {version} of {name} is already the {schema.CHAMPION}")
    _move_alias(client, name, schema.CHAMPION, str(version), tracking_uri)
    tags = _who_when_why("promoted", reason)
    if previous is not None:
        tags[schema.REPLACED_VERSION_TAG] = previous
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)
    if _alias_version(client, name, schema.CHALLENGER) == str(version):
        client.delete_registered_model_alias(name, schema.CHALLENGER)
    return _version(client, name, str(version))


def rollback(name: str, reason: str | None = None, tracking_uri: str | None = None) -> Version:
    """Move ``champion`` back to the version the current champion replaced."""
    uri, client = _mlflow(tracking_uri)
    _require_model(client, name, uri)
    current = _alias_version(client, name, schema.CHAMPION)
    if current is None:
        raise UserError(f"{name} has no {schema.CHAMPION} to roll back")
    previous = client.get_model_version(name, current).tags.get(schema.REPLACED_VERSION_TAG)
    if not previous:
        raise UserError(
            f"version {current} of {name} replaced no earlier champion: nothing to roll back to "
            "(promote a version by number instead)"
        )
    _move_alias(client, name, schema.CHAMPION, previous, tracking_uri)
    for key, value in _who_when_why("rolled_back", reason).items():
        client.set_model_version_tag(name, current, key, value)
    return _version(client, name, previous)


def clear_alias(
    name: str, alias: str, only_version: str | None = None, tracking_uri: str | None = None
) -> bool:
    """Remove ``alias`` from ``name`` (only while it names ``only_version``, when given: a
    version registered since is not ours to clear). True when it was removed."""
    _, client = _mlflow(tracking_uri)
    current = _alias_version(client, name, alias)
    if current is None or (only_version is not None and current != str(only_version)):
        return False
    client.delete_registered_model_alias(name, alias)
    return True


def versions(name: str | None = None, tracking_uri: str | None = None) -> list[Version]:
    """Every version of ``name`` (of every registered model when None), newest first."""
    uri, client = _mlflow(tracking_uri)
    names = [name] if name else [m.name for m in client.search_registered_models()]
    if name:
        _require_model(client, name, uri)
    out = []
    for model_name in names:
        for mv in client.search_model_versions(f"name = '{model_name}'"):
            out.append(_version(client, model_name, mv.version))
    return sorted(out, key=lambda v: (v.name, -int(v.version)))


def versions_of_runs(run_ids: Iterable[str], tracking_uri: str | None = None) -> list[Version]:
    """The registered versions made from any of ``run_ids`` (for a report to link them)."""
    _, client = _mlflow(tracking_uri)
    wanted = set(run_ids)
    found = [
        _version(client, mv.name, mv.version)
        for mv in client.search_model_versions(max_results=SEARCH_PAGE)
        if mv.run_id in wanted
    ]
    return sorted(found, key=lambda v: (v.name, int(v.version)))


def resolve_alias(model_uri: str, tracking_uri: str | None = None) -> str:
    """The version number a ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``) URI names now."""
    uri, client = _mlflow(tracking_uri)
    name, version, alias = parse_model_uri(model_uri)
    _require_model(client, name, uri)
    if alias is not None:
        found = _alias_version(client, name, alias)
        if found is None:
            raise UserError(f"{name} has no alias {alias!r} in {display_uri(uri)}")
        return found
    return _require_version(client, name, str(version), uri)


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``(name, version, alias)`` of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``."""
    if not uri.startswith("models:/"):
        raise UserError(f"{uri!r} is not a registered model: write models:/NAME@ALIAS")
    rest = uri.removeprefix("models:/")
    if "@" in rest:
        name, _, alias = rest.partition("@")
        if name and alias:
            return name, None, alias
    else:
        name, _, version = rest.partition("/")
        if name and version.isdigit():
            return name, version, None
    raise UserError(f"{uri!r} is not models:/NAME@ALIAS or models:/NAME/VERSION")


def _move_alias(client: Any, name: str, alias: str, version: str, tracking_uri: str | None) -> None:
    """Point ``alias`` at ``version`` once it loads as a server would load it, and acts in the
    same kind of env as the champion (class, observation shape, actions): every alias move
    (register, promote, rollback, the live loop's) goes through here, so the registry never
    names a version that servers refuse, or that answers the model's clients from another env."""
    try:
        target = _acts_in(name, version, tracking_uri)
        champion = _alias_version(client, name, schema.CHAMPION)
        current = None
        if champion is not None and champion != str(version):
            with contextlib.suppress(UserError):  # a damaged champion: moving away from it is
                current = _acts_in(name, champion, tracking_uri)  # the repair, never refused
        if current is not None and target != current:  # its clients send the champion's kind
            raise UserError(
                f"{name} version {version} acts in {_shown(target)}, but the champion, "
                f"version {champion}, in {_shown(current)}: the model's clients send the "
                "champion's observations; register it under another model name"
            )
    except UserError as err:
        now = _alias_version(client, name, alias)
        stays = f"stays version {now}" if now else "is not set"
        raise UserError(f"{err} (the {alias} {stays})") from None
    client.set_registered_model_alias(name, alias, version)


def _acts_in(name: str, version: str, tracking_uri: str | None) -> tuple[str, str, str]:
    """The env a version decides in, as far as its clients can tell: its class, observation
    shape and actions (loading the version, as a server would)."""
    from rlbench.agents.base import env_signature
    from rlbench.envs import core_of

    _, venv = load_version(name, version, tracking_uri)
    try:
        signature = env_signature(venv)
        core = core_of(getattr(venv, "unwrapped", venv))
        kind = type(core).__name__ if core is not None else type(venv).__name__
        return kind, str(signature["observation_shape"]), str(signature["actions"])
    finally:
        venv.close()


def _shown(acts_in: tuple[str, str, str]) -> str:
    kind, shape, actions = acts_in
    return f"{kind} (observations {shape}, actions {actions})"


def _alias_version(client: Any, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _require_model(client: Any, name: str, uri: str) -> None:
    """``UserError`` naming the store searched (password masked) and the models it has: a
    command pointed at another store than meant says so."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        known = ", ".join(sorted(m.name for m in client.search_registered_models())) or "none"
        raise UserError(
            f"no registered model {name!r} in {display_uri(uri)} (registered: {known})"
        ) from None


def _require_version(client: Any, name: str, version: str, uri: str) -> str:
    """``version`` as the registry writes it ("02" is version "2"); ``UserError`` if none."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version(name, version).version)
    except MlflowException:
        raise UserError(f"{name} has no version {version!r} in {display_uri(uri)}") from None


def _version(client: Any, name: str, version: str) -> Version:
    mv = client.get_model_version(name, version)
    created = dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC)
    return Version(
        name=name,
        version=str(mv.version),
        aliases=sorted(mv.aliases or []),
        run_id=mv.run_id,
        created=created.isoformat(timespec="seconds"),
        tags=dict(mv.tags),
    )
