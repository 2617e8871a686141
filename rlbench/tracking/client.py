"""Reading an MLflow store: one client for everything that reads runs back (the analysis frames,
reports, ``rlbench-verify``, ``+reproduce``).

Unlike the writers (:mod:`rlbench.tracking.store`), a reader never creates a store: opening a
missing SQLite file would silently make an empty one, so that is refused with a hint. Store
failures (an unreachable server, a bad filter) become one-line :class:`UserError` messages.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlbench.cli import store_options
from rlbench.errors import UserError, first_line
from rlbench.tracking.databases import database_tables, sql_backend, table_list
from rlbench.tracking.redaction import display_uri, mask_passwords
from rlbench.tracking.store import HTTP_ENV_DEFAULTS, check_store, resolve_uri, sqlite_path

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def no_store_hint() -> str:
    """The end of "no MLflow store at ...": how the running command is pointed at a store."""
    named = store_options().named()
    return f"train something first (rlbench-train ...) or point {named} at your store"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The store to read: ``uri`` if given (``--tracking-uri``, ``tracking.uri=``, a function's
    argument), else ``MLFLOW_TRACKING_URI``, else the embedded one (see
    :func:`~rlbench.tracking.store.resolve_uri`). Relative SQLite paths are made absolute
    (against the working directory)."""
    return resolve_uri(uri or None)


def mlflow_client(uri: str | None = None, *, missing_hint: str | None = None) -> MlflowClient:
    """An ``MlflowClient`` on an existing store; :class:`UserError` rather than creating one.

    ``missing_hint`` ends the message for a SQLite file that does not exist (default: the
    running command's own way to name a store, :func:`no_store_hint`). HTTP requests give
    up after seconds (MLflow's default retries for minutes); artifact downloads show no
    progress bar (one per file floods a report's log).
    """
    uri = resolve_tracking_uri(uri)
    hint = missing_hint or no_store_hint()
    db = sqlite_path(uri)
    if db is not None:
        if not db.is_file():
            raise UserError(f"no MLflow store at {display_uri(db)}: {hint}")
        _require_mlflow_tables(db)  # MLflow would make any file it opens a store
    elif sql_backend(uri) is not None:
        _require_mlflow_database(uri, hint)  # connects, and MLflow would make it a store
    elif not uri.startswith("sqlite:"):
        check_store(uri)  # a tracking server that does not answer fails in seconds, not minutes
    for key, value in HTTP_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.tracking import MlflowClient

    try:
        # rlbench's registry lives in the same store (never a stray MLFLOW_REGISTRY_URI)
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    except Exception as err:  # MLflow's own, SQLAlchemy's URL errors, a missing driver
        from rlbench.tracking.databases import server_message

        said = server_message(err, uri) or _masked_line(err)
        raise UserError(f"cannot open the MLflow store {display_uri(uri)}: {said}") from None


def _require_mlflow_tables(db: Path) -> None:
    """``UserError`` unless SQLite file ``db`` holds MLflow's tables (read, never changed)."""
    from rlbench.tracking.store import tables_of

    tables, why = tables_of(db)
    if "experiments" not in tables:
        raise UserError(
            f"no MLflow store at {display_uri(db)} ({why or 'no MLflow tables in it'}): point "
            f"{store_options().key} at your MLflow store (the file was left untouched)"
        )


def _require_mlflow_database(uri: str, hint: str) -> None:
    """``UserError`` unless the server database ``uri`` (PostgreSQL, MySQL, ...) holds MLflow's
    tables: its catalogue is read, nothing is created (MLflow would create its 65 tables in an
    empty database, or stumble over another program's, as over an Optuna storage's
    ``alembic_version``)."""
    tables = database_tables(uri, "the MLflow store")
    shown = display_uri(uri)
    if not tables:
        raise UserError(
            f"no MLflow store at {shown} (an empty database): {hint} (it was left untouched)"
        )
    if "experiments" not in tables or "runs" not in tables:
        raise UserError(
            f"{shown} is not an MLflow store (its tables: {table_list(tables)}): point "
            f"{store_options().named()} at your MLflow store (it was left untouched)"
        )


@contextlib.contextmanager
def using_store(uri: str) -> Iterator[None]:
    """MLflow's fluent API (``log_model``, ``load_model("models:/...")``) pointed at ``uri`` for
    one block. ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` (and the registry's
    twin) into the environment, where every later command of the process, and its children,
    would inherit it: both the process's setting and its environment come back afterwards."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_state
    from mlflow.tracking._tracking_service import utils as tracking_state

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    environment = {key: os.environ.get(key) for key in keys}
    saved = tracking_state._tracking_uri, registry_state._registry_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        tracking_state._tracking_uri, registry_state._registry_uri = saved
        for key, value in environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _masked_line(err: BaseException) -> str:
    return mask_passwords(first_line(err))


def mlflow_call(uri: str, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args)``, with store failures as one-line errors: a server that cannot be reached
    is "unreachable"; one that answered with an error (refused credentials, a failing server)
    says so with its status; a bad filter or a missing run is MLflow's message."""
    from mlflow.exceptions import MlflowException

    shown = display_uri(uri)
    try:
        return fn(*args, **kwargs)
    except MlflowException as err:
        raise UserError(f"{what} failed on the MLflow store {shown}: {_masked_line(err)}") from None
    except (OSError, ConnectionError) as err:  # requests' errors derive from OSError
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status is not None or type(err).__name__ in ("HTTPError", "RetryError"):
            refused = " (check the credentials)" if status in (401, 403) else ""
            raise UserError(
                f"{what} failed: the MLflow store {shown} answered with an error{refused} "
                f"({_masked_line(err)})"
            ) from None
        raise UserError(f"the MLflow store {shown} is unreachable ({_masked_line(err)})") from None


def experiment_id(client: MlflowClient, uri: str, experiment: str) -> str:
    """The id of an existing, not deleted experiment; else the experiments the store has."""
    found = mlflow_call(uri, "finding the experiment", client.get_experiment_by_name, experiment)
    if found is None or found.lifecycle_stage == "deleted":
        names = mlflow_call(uri, "listing experiments", client.search_experiments)
        known = ", ".join(sorted(e.name for e in names)) or "none"
        raise UserError(
            f"no MLflow experiment {experiment!r} in {display_uri(uri)} (experiments there: "
            f"{known})"
        )
    return found.experiment_id
