"""Claims on a run key: one live process at a time trains a configuration.

Two processes running the same grid with ``resume=true`` must not both train a job, nor resume
each other's live checkpoint. Before a job reads its checkpoint or looks for a finished run, it
claims its run key (``rlbench.run_key``, the hash of what is learned); a second process waits
for the claim to end, then finds the run finished (and reuses it) or takes over.

Two kinds, chosen by ``tracking.claim`` (``auto``: by the store):

- ``file``: an advisory lock (``flock``) on ``<store>.claims/<key>.lock`` beside a SQLite store
  (or in the checkpoint folder when tracking is off), a file that exists only while claimed.
  The kernel drops the lock when its process dies, so a dead process never holds a claim.
  Local file systems only (not NFS).
- ``lease``: for a store shared across hosts (a tracking server, a database). A claim is a run
  in the MLflow experiment ``rlbench-claims`` whose ``rlbench.claim.beat`` tag its holder renews
  every ``ttl / 4`` seconds. A bid wins when, after a settling pause, it is the oldest live
  claim of its key; a claim not renewed for ``tracking.claim_ttl_s`` seconds is dead (ended
  FAILED) and taken over. Host clocks must agree to well within the TTL (NTP does).

The checkpoint folder is also locked by ``file``, whatever the store, since it is local.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlbench.errors import UserError
from rlbench.tracking.provenance import hostname, process_tag
from rlbench.tracking.store import sqlite_path

log = logging.getLogger(__name__)

KINDS = ("auto", "file", "lease", "off")
POLL_S = 0.5  # how often a waiting process looks again
SAY_AGAIN_S = 60.0  # a waiting process repeats its line this often
SETTLE_S = 1.0  # a lease bid waits this long for earlier bids to become visible


def _owner() -> str:
    return f"{process_tag()}@{hostname()}"


def _describe(owner: str) -> str:
    """``"process 123 on host"`` from an owner string."""
    proc, _, host = owner.partition("@")
    return f"process {proc.partition(':')[0]} on {host or 'this host'}"


class _Waiting:
    """Says once (and then every minute) whom a claim waits for."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.since: float | None = None
        self.said = 0.0

    def tick(self, holder: str | None) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
        if now - self.said >= SAY_AGAIN_S:
            self.said = now
            who = _describe(holder) if holder else "another process"
            waited = f" (waiting {now - self.since:.0f} s)" if now > self.since + 1 else ""
            log.info(
                "waiting for %s, which trains the same configuration (run key %s)%s",
                who, self.key, waited,
            )  # fmt: skip
        time.sleep(POLL_S * (0.5 + random.random()))


@contextlib.contextmanager
def file_claim(path: Path, key: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``, waiting while another process has it.

    The file exists only while it is claimed (nothing is left behind): the holder deletes it
    before unlocking, and a process that locked a file already deleted opens the new one.
    """
    waiting = _Waiting(key)
    while True:
        fd = _open_claim_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or None
            os.close(fd)
            waiting.tick(holder)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its holder deleted it as we locked it: claim the new file
    try:
        with contextlib.suppress(OSError):  # who holds it, for a waiting process's message
            os.pwrite(fd, _owner().encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)  # releases the lock
        with contextlib.suppress(OSError):  # the folder too, once no claim is left in it
            path.parent.rmdir()


def _open_claim_file(path: Path) -> int:
    for _ in range(100):  # the folder may vanish between mkdir and open (the last holder left)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            continue
        except OSError as err:
            raise UserError(
                f"cannot create the claim file {path} ({err.strerror or err}): "
                "choose a writable train.checkpoint_dir / tracking.uri"
            ) from None
    raise UserError(f"cannot create the claim file {path}: its folder keeps disappearing")


@contextlib.contextmanager
def lease_claim(tracker: Any, key: str, ttl: float) -> Iterator[None]:
    """Hold the lease on ``key`` in the tracker's store (see the module docstring)."""
    owner = _owner()
    waiting = _Waiting(key)
    claim_id = None
    while claim_id is None:
        holder = tracker.claim_holder(key, ttl)
        if holder is not None:
            waiting.tick(holder["owner"])
            continue
        bid = tracker.claim_bid(key, owner)
        time.sleep(SETTLE_S)
        holder = tracker.claim_holder(key, ttl)
        if holder is not None and holder["claim_id"] == bid:
            claim_id = bid
        else:  # an earlier bid won: withdraw and wait
            tracker.claim_release(bid)
            waiting.tick(holder["owner"] if holder else None)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl / 4):
            tracker.claim_renew(claim_id)

    beat = threading.Thread(target=renew, name="rlbench-claim", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join(timeout=5)
        with contextlib.suppress(Exception):  # a dead claim expires by itself
            tracker.claim_release(claim_id)


@contextlib.contextmanager
def claim_run_key(
    key: str, checkpoint_root: str | Path, tracking_cfg: Any, tracker: Any
) -> Iterator[None]:
    """Claim ``key`` for this process (store claim, then the checkpoint folder's lock)."""
    kind = str(tracking_cfg.get("claim", "auto") or "auto")
    if kind not in KINDS:
        raise UserError(f"tracking.claim must be one of {', '.join(KINDS)}, got {kind!r}")
    ttl = tracking_cfg.get("claim_ttl_s", 60)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl < 4:
        raise UserError(f"tracking.claim_ttl_s must be a number of seconds >= 4, got {ttl!r}")
    if kind == "off":
        yield
        return
    uri = getattr(tracker, "uri", None) if tracking_cfg.get("enabled", True) else None
    db = sqlite_path(uri) if uri else None
    with contextlib.ExitStack() as stack:
        if uri and (kind == "lease" or (kind == "auto" and db is None)):
            stack.enter_context(lease_claim(tracker, key, float(ttl)))
        elif db is not None:
            stack.enter_context(file_claim(Path(f"{db}.claims") / f"{key}.lock", key))
        stack.enter_context(file_claim(Path(checkpoint_root) / ".claims" / f"{key}.lock", key))
        yield
