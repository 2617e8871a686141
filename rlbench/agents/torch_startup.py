"""Keep torch's compiler out of a process that never compiles.

torch marks its optimizers' methods (``add_param_group``, ``zero_grad``, the per-algorithm
step functions...) with ``torch._disable_dynamo``: "never trace this with torch.compile". The
mark is lazy: the first call of a marked function imports ``torch._dynamo`` (about 1.2 s and
250 MB of modules on a 2-core machine: a fifth of a short run's wall time, paid before the first
gradient step) to build the disabled wrapper, and every later call still goes through dynamo's
frame hooks (~80 us per optimizer step). rlbench's agents never call ``torch.compile``, so
"disabled" is the same as "called directly". :func:`optimizers_without_dynamo` records exactly
that in the cache the mark looks up (``fn.__dynamo_disable = fn``), for the marked functions of
``torch.optim``. It changes nothing when ``torch._dynamo`` is already imported (someone may be
compiling) or when torch's wrapper is not the one this was written against (torch 2.13's
``torch/_compile.py``); ``RLBENCH_TORCH_DYNAMO=1`` turns it off.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from collections.abc import Iterator
from typing import Any

_CACHE = "__dynamo_disable"  # the attribute that wrapper caches its disabled function in
_done = False


def optimizers_without_dynamo() -> int:
    """Mark torch.optim's dynamo-disabled functions as already disabled; how many (0 when
    nothing was changed: already done, dynamo imported, turned off or an unknown torch)."""
    global _done
    if _done or "torch._dynamo" in sys.modules or os.environ.get("RLBENCH_TORCH_DYNAMO") == "1":
        return 0
    import torch.optim
    from torch._compile import _disable_dynamo

    wrapper = _disable_dynamo(lambda: None)  # its code object is every marked function's
    count = 0
    for fn in _marked(torch.optim, wrapper.__code__):
        if getattr(fn.__wrapped__, _CACHE, None) is None:
            setattr(fn.__wrapped__, _CACHE, fn.__wrapped__)
            count += 1
    _done = True
    return count


def _marked(package: Any, code: Any) -> Iterator[Any]:
    """Functions of ``package``'s modules (and their classes) wrapped by ``_disable_dynamo``."""
    modules = [package]
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            modules.append(importlib.import_module(info.name))
    seen: set[int] = set()
    for module in modules:
        for value in vars(module).values():
            owners = [value] if isinstance(value, type) else []
            candidates = [value] + [f for cls in owners for f in vars(cls).values()]
            for fn in candidates:
                marked = getattr(fn, "__code__", None) is code and hasattr(fn, "__wrapped__")
                if marked and id(fn) not in seen:
                    seen.add(id(fn))
                    yield fn
