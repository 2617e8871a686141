"""The one exception type that means "the user asked for something wrong".

Command-line entry points catch :class:`UserError` and print its message as one line, exit
non-zero and show no traceback (unless ``HYDRA_FULL_ERROR=1``). Raise it with a message that
names what is wrong and how to fix it. :func:`storage_message` turns an OS write failure (a full
disk, a size limit, a read-only file system), however a library wrapped it, into such a line.
"""

from __future__ import annotations

import errno
from os import PathLike


class UserError(ValueError):
    """Bad input: a config value, a file, an unreachable service. The message is shown as is."""


def first_line(err: BaseException) -> str:
    """The first line of an error's message (MLflow's ``.message`` if it has one), else its type.

    Library errors run over many lines (a server's HTML, a SQL statement); one line is what a
    user reads in ``error: ...``. A first line that only introduces the reason (ends with ``:``,
    as Hydra's "ConfigKeyError raised while composing config:") keeps the line after it.
    """
    text = str(getattr(err, "message", None) or err).strip()
    if not text:
        return type(err).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines[0].endswith(":") and len(lines) > 1:  # "... raised while composing config:" + why
        return f"{lines[0]} {lines[1]}"
    return lines[0]


# an OS write failure that is the machine's, not the program's: the disk, a quota, a size limit
_STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EFBIG: "file too large (a file size limit, ulimit -f)",
    errno.EROFS: "read-only file system",
    errno.EDQUOT: "disk quota exceeded",
}
# the same failures as libraries report them in text (SQLite, SQLAlchemy, Optuna, MLflow)
_STORAGE_TEXTS = {
    "database or disk is full": "database or disk is full",
    "no space left on device": "no space left on device",
    "file too large": "file too large (a file size limit, ulimit -f)",
    "disk quota exceeded": "disk quota exceeded",
    "read-only file system": "read-only file system",
    "attempt to write a readonly database": "the database is read-only",
}


def storage_failure(err: BaseException) -> tuple[str, str | None] | None:
    """``(cause, path)`` when ``err`` (or an exception behind it) is an OS write failure:
    no space, a file size limit, a read-only file system, a quota. ``path`` may be unknown.

    Such an error must end a command with one line naming the cause and the path, never with a
    score: the results were not (all) recorded.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        exc = todo.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
            return _STORAGE_ERRNOS[exc.errno], exc.filename or _open_file_in(exc)
        text = str(exc).lower()
        for needle, cause in _STORAGE_TEXTS.items():
            if needle in text:
                return cause, None
        todo += [exc.__cause__, exc.__context__, getattr(exc, "orig", None)]
    return None


def _open_file_in(err: BaseException) -> str | None:
    """The file being written where ``err`` was raised: a write that fails when the file is
    flushed or closed names no file, but the file object is still a local of that frame."""
    import io

    tb = err.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):  # innermost first
        for value in frame.f_locals.values():
            # a file object, or what wraps one (a zip file being written, a writer's stream)
            for candidate in (value, getattr(value, "fp", None), getattr(value, "_fileobj", None)):
                name = getattr(candidate, "name", None)
                writing = any(m in str(getattr(candidate, "mode", "w")) for m in "wa+")
                if (
                    isinstance(candidate, io.IOBase)
                    and isinstance(name, str | PathLike)
                    and writing
                ):
                    return str(name)
    return None


def _io_error_on_full_disk(err: BaseException, path: object) -> bool:
    """SQLite says only "disk I/O error" when its journal or shared memory file cannot grow;
    a file system with (almost) no space left is then the cause."""
    import os

    if "disk i/o error" not in str(err).lower():
        return False
    folder = os.path.dirname(os.fspath(path)) if not os.path.isdir(os.fspath(path)) else path
    try:
        stats = os.statvfs(folder)
    except (OSError, TypeError):
        return False
    return stats.f_bavail * stats.f_frsize < 256 * 1024


def storage_message(err: BaseException, path: object = None) -> str | None:
    """The one line for an OS write failure behind ``err`` (see :func:`storage_failure`):
    what failed, where, and what to do. ``path`` names the place when the error does not."""
    found = storage_failure(err)
    if found is None and path is not None and _io_error_on_full_disk(err, path):
        found = ("no space left on device", None)  # SQLite's journal could not grow
    if found is None:
        return None
    cause, where = found
    where = where or path
    place = f" writing {where}" if where else ""
    return f"{cause}{place}: free space there (or lift the limit), or write elsewhere"
