"""What a long phase of a report or a verification is doing, said on stderr.

:func:`phase` prints its line at once when stderr is a terminal; otherwise (CI logs, a pipe) only
once the phase has run :data:`SLOW_AFTER_S` seconds, then every :data:`REPEAT_S` seconds, so a
quick command stays quiet and a slow one never looks hung. :func:`warn` is the one-line
``warning: ...`` of the readers (a run skipped, a report not recorded).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator

SLOW_AFTER_S = 10.0
REPEAT_S = 30.0


def warn(text: str) -> None:
    """``warning: <text>`` as one line on stderr."""
    print(f"warning: {text}", file=sys.stderr, flush=True)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def phase(what: str, detail: Callable[[], str] | None = None) -> Iterator[None]:
    """Say ``what`` (``loading 180 runs of experiment 'rlbench'``) while the block runs.

    ``detail`` (optional) adds how far it got (``12/180 models``) to the later lines.
    """
    start = time.monotonic()
    if _is_terminal():
        _say(f"{what} ...")
    done = threading.Event()

    def report() -> None:
        wait = SLOW_AFTER_S
        while not done.wait(wait):
            elapsed = time.monotonic() - start
            more = f", {detail()}" if detail is not None else ""
            _say(f"{what} ... (still running after {elapsed:.0f} s{more})")
            wait = REPEAT_S

    watcher = threading.Thread(target=report, name=f"phase: {what}", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def _is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced stream
        return False
