"""Reading a store that may be damaged: a one-line error instead of a traceback, and no writes.

MLflow opens any SQLite file it is pointed at and, when the file lacks MLflow's tables, creates
them: a reader pointed at the wrong file (another program's database) would turn it into an
MLflow store, and a damaged file surfaces as a raw ``sqlite3.DatabaseError`` from deep inside
SQLAlchemy. :func:`check_readable_store` looks at a SQLite file read-only first;
:func:`reading_store` turns database errors met later (a damaged page found mid-search) into a
:class:`~rlbench.errors.UserError` naming the store and the fix.
"""

from __future__ import annotations

import contextlib
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path

from rlbench.cli import store_options
from rlbench.errors import UserError, first_line
from rlbench.tracking.store import sqlite_path, sqlite_tables

#: tables every MLflow store has (its schema has more; these tell an MLflow store from others)
MLFLOW_TABLES = frozenset({"experiments", "runs", "params", "metrics", "tags", "alembic_version"})
SQLITE_MAGIC = b"SQLite format 3\x00"


def damaged_hint() -> str:
    """What to do about a damaged store, in the running command's own options."""
    return f"restore it from a backup, or point {store_options().key} at another MLflow store"


def check_readable_store(uri: str) -> None:
    """For a ``sqlite:///`` store that exists: a :class:`UserError` unless it is an MLflow store
    that SQLite can read (never creates or migrates it: :func:`sqlite_tables`); other
    stores, and files that do not exist, are left to the client (which says so)."""
    db = sqlite_path(uri)
    if db is None or not db.is_file():
        return
    _check_header(db)
    try:
        tables = sqlite_tables(db)
    except sqlite3.OperationalError as err:  # cannot open it at all (permissions, a lock)
        raise UserError(f"cannot read the MLflow store {db}: {first_line(err)}") from None
    except sqlite3.DatabaseError as err:
        raise UserError(
            f"the MLflow store {db} is damaged ({first_line(err)}): {damaged_hint()}"
        ) from None
    if not tables:
        raise UserError(
            f"the MLflow store {db} is an empty SQLite database (no runs yet): train something "
            f"first (rlbench-train ...), or point {store_options().key} at your MLflow store"
        )
    missing = MLFLOW_TABLES - tables
    if missing == MLFLOW_TABLES:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise UserError(
            f"{db} is a SQLite database but not an MLflow store (its tables: {shown}): point "
            f"{store_options().key} at your MLflow store (it was left untouched)"
        )
    if missing:
        raise UserError(
            f"the MLflow store {db} is incomplete (no table {', '.join(sorted(missing))}): "
            f"{damaged_hint()}"
        )


def _check_header(db: Path) -> None:
    """Not a SQLite file at all, or shorter than its header says (a truncated copy)."""
    try:
        with db.open("rb") as f:
            header = f.read(100)
        size = db.stat().st_size
    except OSError as err:
        raise UserError(f"cannot read the MLflow store {db}: {err.strerror or err}") from None
    if size == 0:
        raise UserError(
            f"the MLflow store {db} is an empty file (no runs yet): train something first "
            f"(rlbench-train ...), or point {store_options().key} at your MLflow store"
        )
    if not header.startswith(SQLITE_MAGIC) or len(header) < 100:
        raise UserError(
            f"the MLflow store {db} is not a SQLite database (it does not start with SQLite's "
            f"header): {damaged_hint()}"
        )
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    (change_counter,) = struct.unpack(">I", header[24:28])
    (pages,) = struct.unpack(">I", header[28:32])
    (valid_for,) = struct.unpack(">I", header[92:96])
    # the header's page count is reliable when its version-valid-for number matches the
    # change counter (SQLite's file format, section 1.3.7)
    if pages and valid_for == change_counter and size < pages * page_size:
        raise UserError(
            f"the MLflow store {db} is truncated ({size} bytes; its header says "
            f"{pages * page_size}): {damaged_hint()}"
        )


@contextlib.contextmanager
def reading_store(uri: str | None) -> Iterator[None]:
    """Database errors raised while reading ``uri`` (a damaged page found mid-search, a text
    value that is not UTF-8) as one :class:`UserError` line naming the store and the fix, also
    when MLflow or :func:`~rlbench.tracking.client.mlflow_call` wrapped them first; other errors
    pass through."""
    try:
        yield
    except Exception as err:
        if uri and sqlite_path(uri) is None:  # a server: unreachable or refusing, not damaged
            from rlbench.tracking.databases import server_message
            from rlbench.tracking.redaction import mask_passwords

            # a UserError's own text already holds the reason: read the error behind it
            origin = err.__context__ if isinstance(err, UserError) else err
            said = server_message(origin, uri) if origin is not None else None
            if said is not None:
                raise UserError(
                    f"cannot read the MLflow store {mask_passwords(uri)}: {said}"
                ) from None
        cause = _database_error(err, sqlite=sqlite_path(uri or "") is not None)
        if cause is None:
            raise
        raise UserError(_damaged(uri, cause)) from None


def _database_error(err: BaseException, sqlite: bool) -> BaseException | None:
    """The SQLite/SQLAlchemy database error behind ``err`` (its causes and contexts), if any."""
    from sqlalchemy.exc import DatabaseError

    seen: set[int] = set()
    node: BaseException | None = err
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, sqlite3.DatabaseError) and not isinstance(
            node, sqlite3.OperationalError
        ):
            return node
        if isinstance(node, DatabaseError) and not isinstance(node.orig, sqlite3.OperationalError):
            return node.orig or node
        if sqlite and isinstance(node, UnicodeDecodeError) and _from_the_database(node):
            return node  # SQLite text that is not UTF-8 (not an artifact file that is not)
        node = node.__cause__ or node.__context__
    return None


def _from_the_database(err: BaseException) -> bool:
    """Whether ``err`` was raised while SQLAlchemy or sqlite3 read rows."""
    tb = err.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if "sqlalchemy" in name or "sqlite3" in name:
            return True
        tb = tb.tb_next
    return False


def _damaged(uri: str | None, err: BaseException) -> str:
    where = sqlite_path(uri) if uri else None
    return f"the MLflow store {where or uri} is damaged ({first_line(err)}): {damaged_hint()}"
