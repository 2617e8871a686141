"""The one exception type that means "the user asked for something wrong".

Command-line entry points catch :class:`UserError` and print its message as one line, exit
non-zero and show no traceback (unless ``HYDRA_FULL_ERROR=1``). Raise it with a message that
names what is wrong and how to fix it.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: a config value, a file, an unreachable service. The message is shown as is."""


def first_line(err: BaseException) -> str:
    """The first line of an error's message (MLflow's ``.message`` if it has one), else its type.

    Library errors run over many lines (a server's HTML, a SQL statement); one line is what a
    user reads in ``error: ...``.
    """
    text = str(getattr(err, "message", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__
