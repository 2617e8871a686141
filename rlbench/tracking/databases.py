"""Database servers behind the stores (PostgreSQL): the driver, the pool, and one line on refusal.

An Optuna storage (``hydra.sweeper.storage``) or an MLflow store (``tracking.uri``, or a tracking
server's ``--backend-store-uri``) may be a PostgreSQL URL. rlbench's driver is psycopg 3; a plain
``postgresql://`` URL, which SQLAlchemy would hand to psycopg2, is given to psycopg 3 when psycopg2
is not installed (:func:`with_driver`), so the URL a team already has works unchanged.

Connections: every process that opens a storage keeps a small pool (:data:`POOL_SIZE` plus
:data:`MAX_OVERFLOW` connections at most, checked before use, so a restarted server costs no
failed trial). A sweep worker uses at most two at once (its loop and its heartbeat thread), its
job process one more engine of the same size; see docs/scale-out.md for the server's limit.

:func:`server_message` turns what the driver says when the server cannot be used into one line:
unreachable, credentials refused, no such database, no permission to create or write the
tables, driver missing. Callers put the URL (password masked) in front.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any

PSYCOPG = "postgresql+psycopg"
POOL_SIZE = 2  # connections a process keeps open per storage
MAX_OVERFLOW = 2  # and may open beyond that for a moment
CONNECT_TIMEOUT_S = 5  # an unreachable server fails in seconds, not minutes
POOL_RECYCLE_S = 600  # reopen connections older than this (a proxy may drop idle ones)
SQLITE_BUSY_TIMEOUT_S = 60.0  # a SQLite writer waits this long for the lock


def with_driver(url: str) -> str:
    """``url`` with psycopg 3 named as the driver of a plain ``postgresql://`` (or
    ``postgres://``) URL when psycopg2, SQLAlchemy's default for it, is not installed."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix) and importlib.util.find_spec("psycopg2") is None:
            return f"{PSYCOPG}://{url[len(prefix) :]}"
    return url


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql", "postgres:"))


#: SQLAlchemy backends a store or storage may live in besides SQLite (MLflow's database engines)
SQL_BACKENDS = frozenset({"postgresql", "mysql", "mssql", "oracle"})


def sql_backend(url: str) -> str | None:
    """The database backend of a server database URL (``postgresql``, ``mysql``, ...); None
    for SQLite files, tracking servers and anything that is not a database URL."""
    from sqlalchemy.engine import make_url

    try:
        backend = make_url(url).get_backend_name()
    except Exception:  # http://, a bare path, databricks: not SQLAlchemy's
        return None
    return backend if backend in SQL_BACKENDS else None


def database_tables(url: str, what: str, timeout: float = CONNECT_TIMEOUT_S) -> set[str]:
    """The tables of the database behind ``url`` (its default schema), read from the server's
    catalogue: nothing is created or changed. A :class:`UserError` naming ``what`` and the URL
    (password masked) when the server cannot be read."""
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.pool import NullPool

    from rlbench.errors import UserError, first_line
    from rlbench.tracking.redaction import display_uri, mask_passwords

    driven = with_driver(url)
    args = {"connect_timeout": int(timeout)} if is_postgres(driven) else {}
    try:
        engine = create_engine(driven, poolclass=NullPool, connect_args=args)
        try:
            return set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
    except Exception as err:
        reason = server_message(err, driven) or mask_passwords(first_line(err))
        raise UserError(f"cannot open {what} {display_uri(url)}: {reason}") from None


def table_list(tables: set[str], most: int = 5) -> str:
    """A few of ``tables`` for a message: ``runs, studies, ...``."""
    names = sorted(tables)
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine arguments: a busy timeout for SQLite; for PostgreSQL a small pool
    whose connections are checked before use, and a connect timeout."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    if is_postgres(url):
        return {
            "pool_size": POOL_SIZE,
            "max_overflow": MAX_OVERFLOW,
            "pool_pre_ping": True,
            "pool_recycle": POOL_RECYCLE_S,
            "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S},
        }
    return {}


def mlflow_pool_env() -> dict[str, str]:
    """MLflow's own pool settings (its SQLAlchemy store reads them) at rlbench's sizes."""
    return {
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(POOL_SIZE),
        "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(MAX_OVERFLOW),
    }


# SQLAlchemy's driver modules and the pip packages that bring them
_DRIVER_PACKAGES = {
    "psycopg": "'psycopg[binary]'",
    "psycopg2": "psycopg2-binary",
    "mysqldb": "mysqlclient",
    "pymysql": "pymysql",
    "pyodbc": "pyodbc",
    "oracledb": "oracledb",
    "cx_oracle": "oracledb",
}


def _missing_driver(drivername: str, module: str | None) -> str:
    """One line for a database URL whose driver module is not installed."""
    module = (module or "").split(".")[0]
    package = _DRIVER_PACKAGES.get(module.lower())
    if drivername.startswith("postgresql"):
        package = package or _DRIVER_PACKAGES["psycopg"]
    name = f" ({module})" if module else ""
    fix = f"pip install {package}" if package else "install the driver SQLAlchemy names for it"
    return f"the database driver for {drivername}:// URLs{name} is not installed: {fix}"


def _texts(err: BaseException) -> list[str]:
    """The messages of ``err`` and of the exceptions behind it (SQLAlchemy's ``orig`` too)."""
    seen, out, todo = set(), [], [err]
    while todo:
        exc = todo.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        out.append(str(exc))
        todo += [exc.__cause__, exc.__context__, getattr(exc, "orig", None)]
    return out


def server_message(err: BaseException, url: str) -> str | None:
    """One line saying why the database server behind ``url`` refused, or None when ``err``
    is not such a refusal. The line names no password (the caller shows the masked URL)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return None
    text = " ".join(_texts(err))
    low = text.lower()
    missing = re.search(r"no module named '?([\w.]+)", text, re.IGNORECASE)
    if missing or "failed to import db access module" in low:
        return _missing_driver(parsed.drivername, missing.group(1) if missing else None)
    if parsed.get_backend_name() != "postgresql":
        return None
    if "@" in (parsed.host or ""):  # the host would show the password's tail
        return (
            "the password in the URL contains a raw '@', so the part after it was read as the "
            "host: percent-encode the password's special characters ('@' as %40, '/' as %2F, "
            "':' as %3A, '%' as %25)"
        )
    user, db = parsed.username or "(none)", parsed.database or "(none)"
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    if "password authentication failed" in low or "no password supplied" in low:
        return (
            f"the PostgreSQL server {where} refused the credentials of user {user} (password "
            "authentication failed): check the user and password in the URL"
        )
    if "does not exist" in low and re.search(r'database "[^"]*" does not exist', low):
        return (
            f"the PostgreSQL server {where} has no database {db}: create it "
            f"(createdb -h {parsed.host or 'localhost'} -p {parsed.port or 5432} -U {user} {db}) "
            "or name another one in the URL"
        )
    if "permission denied" in low or "insufficientprivilege" in low or "must be owner" in low:
        # up to the end of the driver's clause: not into a message already formatted around it
        found = re.search(r"permission denied for [^\n():]*", text, flags=re.IGNORECASE)
        what = found.group(0).strip().rstrip(".") if found else "permission denied"
        return (
            f"user {user} may not create or write the tables in database {db} on {where} "
            f"({what}): make {user} the database's owner (ALTER DATABASE {db} OWNER TO {user}) "
            f"or GRANT ALL ON SCHEMA public TO {user}"
        )
    if "no pg_hba.conf entry" in low:
        return (
            f"the PostgreSQL server {where} does not accept user {user} from this host "
            "(no pg_hba.conf entry): ask its administrator to allow it"
        )
    unreachable = (
        "connection refused", "could not connect", "timeout expired", "timed out",
        "could not translate host name", "name or service not known", "no route to host",
        "network is unreachable", "server closed the connection", "connection failed",
    )  # fmt: skip
    if any(s in low for s in unreachable):
        reason = next((s for s in unreachable if s in low), "no answer")
        return (
            f"the PostgreSQL server {where} is unreachable ({reason}): start it, or check "
            "the host and port in the URL"
        )
    return None
