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
import time
from pathlib import Path
from typing import Any

from rlbench.errors import UserError, first_line
from rlbench.tracking.forkserver import ANSWER_TIMEOUT_S, ForkedHelper, fork_helper
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
        self.env = env
        self.proc: subprocess.Popen[bytes] | ForkedHelper = fork_helper(env) or self._start()
        # what a forked helper was sent before it said it exists: sent again to our own helper
        # should its server die before forking it
        self._unconfirmed: list[bytes] | None = [] if isinstance(self.proc, ForkedHelper) else None
        self.owner_pid = os.getpid()
        self._next_id = 0
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "rlbench.tracking.helper"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.env,
            start_new_session=True,  # no terminal signals: it lives exactly as long as its stdin
        )

    def _confirmed(self) -> bool:
        """The helper exists (one we started, or a forked one that said its pid)."""
        if self._unconfirmed is not None and self.proc.confirmed:  # type: ignore[union-attr]
            self._unconfirmed = None
        return self._unconfirmed is None

    def _replace(self) -> bool:
        """A forked helper that never came (its server died first) did nothing: start our own
        and send it everything again. False if the helper had come (a real death)."""
        if self._confirmed():
            return False
        assert isinstance(self.proc, ForkedHelper) and self._unconfirmed is not None
        pending, self._unconfirmed = self._unconfirmed, None
        log.debug("the forked MLflow helper never started; starting one and resending")
        self.proc.close()
        self.proc = self._start()
        for data in pending:
            self._write(data)
        return True

    def alive(self) -> bool:
        if self.owner_pid != os.getpid():
            return False
        with self._lock:
            return self.proc.poll() is None or self._replace()

    def _write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def _send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message) + "\n").encode()
        main = threading.current_thread() is threading.main_thread()
        if main:  # a Ctrl-C must not cut a request in half
            old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            if not self._confirmed():
                assert self._unconfirmed is not None
                self._unconfirmed.append(data)
            try:
                self._write(data)
            except (BrokenPipeError, ValueError):
                if not self._replace():
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
            while True:  # replies to calls a Ctrl-C abandoned are skipped
                assert self.proc.stdout is not None
                line = self.proc.stdout.readline()
                if not line:
                    if self._replace():  # the replacement answers this call too
                        continue
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
        self._await_fork()
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)

    def _await_fork(self) -> None:
        """At the end, a forked helper the server has not made yet (it is still importing):
        wait for it, or, if the server died first, send everything to our own. Returns at once
        for a helper that exists."""
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while not self._confirmed():
            if self.proc.poll() is not None:  # the server is gone and no helper came
                self._replace()
                return
            if time.monotonic() > deadline:
                log.warning(
                    "the MLflow helper server forked no helper in %.0f s: what this process "
                    "had to record may be lost (RLBENCH_HELPER_IDLE=0 turns the server off)",
                    ANSWER_TIMEOUT_S,
                )
                return
            time.sleep(0.02)


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
