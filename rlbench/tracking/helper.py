"""The tracking helper process: MLflow's start-up and writes off the job's critical path.

``import mlflow`` and opening a SQLite store cost ~4 s of CPU, more than a short training job.
A helper is forked, with all that imported, by this user's fork server
(:mod:`rlbench.tracking.forkserver`); where there is none it is started as
``python -m rlbench.tracking.helper`` and pays the imports on the other core while the job
imports torch. One helper serves every later job of its process, and ends a run KILLED when its
job process dies without ending it. :class:`LocalTransport` does the same work in-process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from rlbench.errors import UserError, first_line
from rlbench.tracking.forkserver import ForkedHelper, fork_helper
from rlbench.tracking.store import HTTP_ENV_DEFAULTS, end_all_open_runs, store_for

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- transports

# operations a tracker sends; the helper runs nothing else
_OPS = (
    "prepare", "start_run", "log_batch", "log_artifact", "log_text", "end_run", "find_runs",
    "delete_run", "claim_bid", "claim_holder", "claim_renew", "claim_release",
)  # fmt: skip


class LocalTransport:
    """Runs the operations in this process (``tracking.background=false``)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def call(self, op: str, **kwargs: Any) -> Any:
        return store_for(self.uri).perform(op, **kwargs)

    def cast(self, op: str, **kwargs: Any) -> None:
        try:
            self.call(op, **kwargs)
        except Exception as err:  # the job goes on; the loss is reported
            log.warning("MLflow %s failed: %s", op, first_line(err))


class _Helper:
    """The helper process (``python -m rlbench.tracking.helper``): JSON lines in, replies out."""

    def __init__(self) -> None:
        env = os.environ.copy()
        for key, value in HTTP_ENV_DEFAULTS.items():
            env.setdefault(key, value)
        root = str(Path(__file__).resolve().parents[2])  # rlbench importable as in this process
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc: subprocess.Popen[bytes] | ForkedHelper
        self.proc = fork_helper(env) or subprocess.Popen(
            [sys.executable, "-m", "rlbench.tracking.helper"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,  # no terminal signals: it lives exactly as long as its stdin
        )
        self.owner_pid = os.getpid()
        self._next_id = 0
        self._lock = threading.Lock()

    def alive(self) -> bool:
        return self.owner_pid == os.getpid() and self.proc.poll() is None

    def _send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message) + "\n").encode()
        main = threading.current_thread() is threading.main_thread()
        if main:  # a Ctrl-C must not cut a request in half
            old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise RuntimeError(self._died()) from None
        finally:
            if main:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def _died(self) -> str:
        code = self.proc.poll()
        return f"the MLflow helper process exited (code {code}); see its messages above"

    def cast(self, uri: str, op: str, **kwargs: Any) -> None:
        with self._lock:
            self._send({"op": op, "uri": uri, "args": kwargs})

    def call(self, uri: str, op: str, **kwargs: Any) -> Any:
        with self._lock:
            self._next_id += 1
            rid = self._next_id
            self._send({"id": rid, "op": op, "uri": uri, "args": kwargs})
            assert self.proc.stdout is not None
            while True:  # replies to calls a Ctrl-C abandoned are skipped
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(self._died())
                reply = json.loads(line)
                for warning in reply.get("warnings", ()):
                    log.warning("%s", warning)
                if reply["id"] == rid:
                    break
        if reply["ok"]:
            return reply["result"]
        if reply["kind"] == "user":
            raise UserError(reply["error"])
        raise RuntimeError(f"MLflow {op} failed: {reply['error']}")

    def close(self, timeout: float = 10.0) -> None:
        """End the helper after it has written everything it was sent."""
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_HELPER: _Helper | None = None
_HELPER_LOCK = threading.Lock()


def _helper() -> _Helper:
    """This process's helper, started on first use and restarted if it died."""
    global _HELPER
    with _HELPER_LOCK:
        if _HELPER is None or not _HELPER.alive():
            _HELPER = _Helper()
        return _HELPER


def stop_helper() -> None:
    """Stop this process's helper (see :func:`rlbench.tracking.shutdown`)."""
    global _HELPER
    with _HELPER_LOCK:
        if _HELPER is not None and _HELPER.owner_pid == os.getpid():
            _HELPER.close()
        _HELPER = None


_FORKED_AWAY: list[_Helper] = []  # the parent's helper, kept (unused) so its pipes stay shut


def _after_fork_in_child() -> None:
    """A forked child (multiprocessing) must not write into its parent's helper or runs."""
    global _HELPER, _HELPER_LOCK
    if _HELPER is not None:
        for stream in (_HELPER.proc.stdin, _HELPER.proc.stdout):
            with contextlib.suppress(Exception):
                os.close(stream.fileno())  # not stream.close(): that could flush a parent's write
        if isinstance(_HELPER.proc, ForkedHelper):
            _HELPER.proc.close_connection()
        _FORKED_AWAY.append(_HELPER)
    _HELPER, _HELPER_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class HelperTransport:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.helper = _helper()

    def call(self, op: str, **kwargs: Any) -> Any:
        return self.helper.call(self.uri, op, **kwargs)

    def cast(self, op: str, **kwargs: Any) -> None:
        self.helper.cast(self.uri, op, **kwargs)


def serve() -> None:
    """The helper's loop: run each request on its store; on EOF end the runs left open."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the job's to handle, not ours
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the replies
    deferred: list[str] = []
    try:
        while line := sys.stdin.buffer.readline():
            request: dict[str, Any] = {}
            try:
                request = json.loads(line)
                if request.get("op") not in _OPS:
                    raise ValueError(f"unknown operation {request.get('op')!r}")
                store = store_for(request["uri"])
                reply: dict[str, Any] = {
                    "ok": True,
                    "result": store.perform(request["op"], **request["args"]),
                }
            except Exception as err:
                user = isinstance(err, UserError)
                reply = {
                    "ok": False,
                    "kind": "user" if user else "other",
                    "error": str(err) if user else f"{type(err).__name__}: {first_line(err)}",
                }
            if request.get("id") is None:
                # a failed "prepare" fails again, with its message, in the "start_run" call
                if not reply["ok"] and request.get("op") != "prepare":
                    deferred.append(f"MLflow {request.get('op')} failed: {reply['error']}")
                continue
            reply |= {"id": request["id"], "warnings": deferred}
            deferred = []
            out.write(json.dumps(reply) + "\n")
    finally:
        end_all_open_runs("KILLED", "the job process died before ending the run")
        with contextlib.suppress(OSError):
            out.flush()
        os._exit(0)  # skip interpreter teardown (~0.5 s with MLflow loaded)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--fork-server"]:  # how rlbench.tracking.forkserver starts one
        from rlbench.tracking import forkserver

        forkserver.main(sys.argv[2], sys.argv[3], serve)
    else:
        serve()
