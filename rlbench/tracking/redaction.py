"""Passwords out of what we record: URLs such as ``postgresql://user:secret@host/db``.

An Optuna storage or MLflow server URL may carry a password. Runs record their resolved config,
the Hydra overrides and error messages in MLflow, where a whole team reads them; every value goes
through :func:`mask_passwords` first. The job itself still gets the real URL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

MASK = "***"
# scheme://user:password@  (the password may not contain "@", "/" or whitespace, as in a URL)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/:@]*):[^\s/@]+@")


def mask_passwords(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` URL replaced by ``***``."""
    return _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)


def mask_values(values: Mapping[str, object]) -> dict[str, str]:
    """String values of ``values`` with passwords masked (keys unchanged)."""
    return {str(k): mask_passwords(str(v)) for k, v in values.items()}
