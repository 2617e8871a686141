"""The one exception type that means "the user asked for something wrong".

Command-line entry points catch :class:`UserError` and print its message as one line, exit
non-zero and show no traceback (unless ``HYDRA_FULL_ERROR=1``). Raise it with a message that
names what is wrong and how to fix it.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: a config value, a file, an unreachable service. The message is shown as is."""
