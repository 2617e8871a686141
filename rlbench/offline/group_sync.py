"""Group commit: a helper thread fsyncs a file, each fsync covering every batch written before it.

Why: a disk sync takes about 0.3 ms on an idle disk and 5 to 10 ms on a busy one. A writer that
waits for one batch's sync before writing the next is bound to ``batch / sync time`` records per
second (100 / 5 ms = 20,000/s), however fast it encodes. So the writer hands each batch to the
kernel at once (a killed process then loses nothing it wrote) and this thread syncs whatever was
written since its last sync: on a slow disk one fsync covers several batches, as a database's
group commit does. ``max_lag`` bounds what a machine crash can lose: the writer waits while that
many records are written but not yet synced.
"""

from __future__ import annotations

import os
import threading


class GroupSync:
    """Counts records handed to the kernel (``written``) and records made durable (``synced``).

    The writer writes each batch through :meth:`write`; a failed fsync is raised by the
    writer's next call and every call after it (the file's durability is unknown from then on).
    With ``fsync=False`` a written record counts as synced and no thread is started.
    """

    def __init__(self, max_lag: int, fsync: bool = True) -> None:
        self.max_lag = max_lag
        self.fsync = fsync
        self.written = 0
        self.synced = 0
        self._fd: int | None = None
        self._error: OSError | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def write(self, fd: int, data: bytes, n: int) -> None:
        """Write ``data`` (``n`` records) to ``fd`` once at most ``max_lag - n`` records are
        unsynced, so the unsynced records never exceed ``max_lag`` (a batch larger than that
        waits for everything before it). The fd changes only after :meth:`wait_all`, so one
        fsync never has to cover two files."""
        if not self.fsync:
            write_all(fd, data)
            self.written += n
            self.synced = self.written
            return
        with self._cond:
            while self.written - self.synced > max(self.max_lag - n, 0) and self._error is None:
                self._cond.wait()
            self._raise()
        write_all(fd, data)  # unlocked: the fsync thread may read the counts meanwhile
        with self._cond:
            self._fd = fd
            self.written += n
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="rlbench-log-fsync", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def wait_all(self) -> None:
        """Return once every record written so far is synced (or raise the fsync's error)."""
        with self._cond:
            while self.synced < self.written and self._error is None:
                self._cond.wait()
            self._raise()

    def close(self) -> None:
        """Stop the thread once it has synced what was written (errors are left to the caller's
        :meth:`wait_all`)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while self.synced == self.written and not self._stopping:
                    self._cond.wait()
                if self.synced == self.written:  # stopping, nothing left
                    return
                fd, target = self._fd, self.written
            try:
                os.fsync(fd)  # releases the GIL: the writer encodes the next batches meanwhile
            except OSError as exc:
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                return
            with self._cond:
                self.synced = target
                self._cond.notify_all()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a write may be partial)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
