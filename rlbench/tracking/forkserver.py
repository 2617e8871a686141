"""A process with MLflow already imported that forks the jobs' tracking helpers.

Starting a helper costs ~4 s of CPU (``import mlflow``, SQLAlchemy's mappers for MLflow's
tables), and every ``rlbench-train`` process paid it: more than a short training job, and the
largest part of a small grid's CPU. The fork server pays it once. It imports all that, then
listens on a Unix socket in a private folder (``$XDG_RUNTIME_DIR/rlbench`` or
``/tmp/rlbench-<uid>``, mode 0700, same user only), and for each job forks a helper that takes
over the job's pipes and stderr (passed over the socket), its environment, working folder and
umask, then runs :func:`rlbench.tracking.helper.serve` exactly as a helper the job started
itself. When the job dies its pipes close and the helper ends the job's open runs KILLED.

The first tracked command starts the server and goes on while it imports (its requests wait
in the pipe, as they would for its own helper); later commands get a helper in milliseconds.
Should the server die before forking a job's helper, the job starts its own and sends it what
it had sent (nothing was done yet: a helper reads nothing before it says its pid).

One server per Python, rlbench source, installed packages, MLflow environment, file size limit
and cgroup (a change to any of them starts another: a helper runs under its server's limits and
cgroup, so those must be the job's). It exits after ``RLBENCH_HELPER_IDLE`` seconds
without a helper (default 600); ``RLBENCH_HELPER_IDLE=0`` turns it off. Whatever fails here,
the job starts its own helper: the fork server can make start-up faster, never break it.

Stdlib only at import: the job imports this module before it imports anything heavy.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

IDLE_ENV = "RLBENCH_HELPER_IDLE"
DEFAULT_IDLE_S = 600.0
# how long a job waits for a server to start listening, or at its end for a helper the server
# has not forked yet (it first imports MLflow: seconds, more on a loaded machine)
ANSWER_TIMEOUT_S = 60.0
# environment the server's imports may read once: part of its identity, not passed per job
_IMPORT_ENV_PREFIXES = ("MLFLOW_", "PYTHON", "SQLALCHEMY", "TMPDIR", "TEMP", "TMP", "HOME", "TZ")
_HEADER = struct.Struct("!I")


def idle_seconds() -> float:
    """``RLBENCH_HELPER_IDLE`` (seconds a server waits for work before it exits; 0 = off)."""
    raw = os.environ.get(IDLE_ENV, "").strip()
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_IDLE_S
    except ValueError:
        log.warning("%s=%r is not a number of seconds; using %g", IDLE_ENV, raw, DEFAULT_IDLE_S)
        return DEFAULT_IDLE_S


def _readable(fd: int, timeout: float | None) -> bool:
    """``fd`` has data (or EOF) within ``timeout`` seconds (poll: any fd number)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else int(timeout * 1000)))


# --------------------------------------------------------------------------- the job's side


class ForkedHelper:
    """The part of :class:`subprocess.Popen` a helper needs, for a helper the server forks.

    The job does not wait for the fork: its requests queue in the pipe meanwhile, as they do
    while a helper it started itself imports MLflow. The helper says its pid on the connection
    once it has taken the job's pipes and before it reads a request, so a helper that never
    says it did nothing (:attr:`confirmed`); the server says its exit code when it reaps it.
    """

    def __init__(self, conn: socket.socket, stdin: Any, stdout: Any) -> None:
        self.conn, self.stdin, self.stdout = conn, stdin, stdout
        self.pid: int | None = None
        self.returncode: int | None = None
        self._buffer = b""

    @property
    def confirmed(self) -> bool:
        """The helper exists and may have acted on what it was sent."""
        self._read(0.0)
        return self.pid is not None

    def _read(self, timeout: float | None) -> None:
        """Take what the server and the helper said within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not _readable(self.conn.fileno(), left):
                return
            try:
                data = self.conn.recv(4096)
            except OSError:
                data = b""
            if not data:  # the server is gone: a helper is alive while it reads its stdin
                if self.pid is None or not self._reading():
                    self.returncode = -1
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    return
                time.sleep(0.05)
                continue
            self._buffer += data
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                message = json.loads(line)
                if "pid" in message:
                    self.pid = int(message["pid"])
                else:
                    self.returncode = int(message["exit"])

    def _reading(self) -> bool:
        """The helper still holds its end of our pipe (POLLERR: nobody reads it any more)."""
        poller = select.poll()
        poller.register(self.stdin.fileno(), select.POLLOUT)
        return not any(events & select.POLLERR for _, events in poller.poll(0))

    def poll(self) -> int | None:
        self._read(0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._read(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"helper {self.pid}", timeout or 0.0)
        return self.returncode

    def kill(self) -> None:
        if self.pid is not None and self.poll() is None and self._reading():  # not a reused pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """Let go of the pipes and the connection (a helper that will never start)."""
        for stream in (self.stdin, self.stdout):
            with contextlib.suppress(OSError, ValueError):
                stream.close()
        self.conn.close()

    def close_connection(self) -> None:
        """In a forked copy of the job: let go of the connection without reading from it."""
        with contextlib.suppress(OSError):
            os.close(self.conn.fileno())


def _folder() -> Path | None:
    """The private folder of this user's servers, or None if none can be made safe."""
    candidates = [Path(tempfile.gettempdir()) / f"rlbench-{os.getuid()}"]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        candidates.insert(0, Path(runtime) / "rlbench")
    for folder in candidates:
        if len(str(folder)) > 60:  # a socket path has at most 107 bytes; ours add ~30
            continue
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            info = folder.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077:
            return folder
        return None  # someone else's, or open to others: never talk through it
    return None


def _identity(env: Mapping[str, str]) -> str:
    """What a server and its helpers depend on: the Python, rlbench's source, the installed
    packages (a pip install changes site-packages), the environment read at import, and the
    file size limit, cgroup and pid namespace a helper inherits from its server."""
    import resource

    digest = hashlib.sha256()
    digest.update(f"{sys.executable}\0{sys.version}\0".encode())
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*.py")):
        info = path.stat()
        digest.update(f"{path}\0{info.st_mtime_ns}\0{info.st_size}\0".encode())
    spec = importlib.util.find_spec("mlflow")
    if spec is not None and spec.origin:
        site = Path(spec.origin).parents[1]
        digest.update(f"{site}\0{site.stat().st_mtime_ns}\0".encode())
    for key in sorted(env):
        if key.startswith(_IMPORT_ENV_PREFIXES):
            digest.update(f"{key}={env[key]}\0".encode())
    digest.update(repr(resource.getrlimit(resource.RLIMIT_FSIZE)).encode())
    digest.update(Path("/proc/self/cgroup").read_bytes())
    digest.update(str(os.stat("/proc/self/ns/pid").st_ino).encode())
    return digest.hexdigest()[:16]


def fork_helper(env: Mapping[str, str]) -> ForkedHelper | None:
    """A helper forked by this user's server (started first if none listens), or None: then
    the job starts its own. Returns without waiting for the fork (see :class:`ForkedHelper`)."""
    if idle_seconds() <= 0 or not hasattr(socket, "send_fds") or sys.platform != "linux":
        return None
    fds: list[int] = []
    conn: socket.socket | None = None
    try:
        folder = _folder()
        if folder is None:
            return None
        path = folder / f"helper-{_identity(env)}.sock"
        conn = _connect(path, env)
        stdin_r, stdin_w = os.pipe()
        fds += [stdin_r, stdin_w]
        stdout_r, stdout_w = os.pipe()
        fds += [stdout_r, stdout_w]
        job = {"env": dict(env), "cwd": os.getcwd(), "umask": _umask()}
        data = json.dumps(job).encode()
        message = _HEADER.pack(len(data)) + data
        sent = socket.send_fds(conn, [message], [stdin_r, stdout_w, 2])
        if sent < len(message):
            conn.sendall(message[sent:])
        os.close(stdin_r)
        os.close(stdout_w)
        fds = [stdin_w, stdout_r]
    except Exception as err:
        log.debug("no forked MLflow helper (%s); starting one", err)
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if conn is not None:
            conn.close()
        return None
    conn.settimeout(None)
    return ForkedHelper(conn, os.fdopen(stdin_w, "wb"), os.fdopen(stdout_r, "rb"))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _connect(path: Path, env: Mapping[str, str]) -> socket.socket:
    """A connection to the server at ``path``, started first if none listens there."""
    for attempt in range(2):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(ANSWER_TIMEOUT_S)
        try:
            conn.connect(str(path))
            return conn
        except OSError:
            conn.close()
            if attempt:
                raise
        _start_server(path, env)
    raise AssertionError("unreachable")


def _start_server(path: Path, env: Mapping[str, str]) -> None:
    """Start a server for ``path``; return once it listens (or another one does). It detaches
    into a session of its own: killing the job's process group leaves it be."""
    launcher = subprocess.run(
        [sys.executable, "-m", "rlbench.tracking.helper", "--fork-server", str(path),
         str(idle_seconds())],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=dict(env), cwd="/", start_new_session=True, timeout=ANSWER_TIMEOUT_S,
    )  # fmt: skip
    if launcher.returncode != 0:
        raise OSError(launcher.stderr.decode(errors="replace").strip() or "it could not start")


# --------------------------------------------------------------------------- the server


def _preload() -> None:
    """Everything a helper would import before its first write."""
    import mlflow
    import mlflow.store.model_registry.sqlalchemy_store
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    from mlflow.tracking import MlflowClient  # noqa: F401
    from sqlalchemy.orm import configure_mappers

    configure_mappers()


def _become_the_job(job: dict[str, Any], fds: list[int]) -> None:
    """In the forked helper: take the job's pipes, stderr, environment, folder and umask."""
    for target, fd in zip((0, 1, 2), fds, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(job["env"])
    time.tzset()
    tempfile.tempdir = None
    os.chdir(job["cwd"])
    os.umask(int(job["umask"]))


class _Server:
    """Accept jobs on ``path``; fork a helper for each; say its pid, later its exit code."""

    def __init__(self, path: Path, idle: float, serve: Callable[[], None], lock: Any) -> None:
        self.path, self.idle, self.serve_job, self.lock = path, idle, serve, lock
        staging = path.with_name(f".{os.getpid()}")
        staging.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(staging))
        self.listener.listen(128)
        os.replace(staging, path)  # clients connect from now on (accepted after the imports)
        self.inode = path.stat().st_ino
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno())
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.helpers: dict[int, socket.socket] = {}  # pid -> the connection that asked for it
        self.last_busy = time.monotonic()

    def serve(self) -> None:
        while True:
            timeout = None if self.helpers else max(0.0, self.idle - self._idle_for())
            ready = select.select([self.listener, self.wake_r], [], [], timeout)[0]
            if self.wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    while self.wake_r.recv(4096):
                        pass
                self._reap()
            if self.listener in ready:
                self._accept()
            if not self.helpers and self._idle_for() >= self.idle:
                break
        # idle: no new client finds the socket; those already queued are still served
        self.close()
        self.listener.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                self._accept()

    def close(self) -> None:
        """Remove the socket (if it is still ours), its lock file and an empty log."""
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self.inode:
                self.path.unlink()
                Path(f"{self.path}.lock").unlink()
                log_file = Path(f"{self.path}.log")
                if log_file.stat().st_size == 0:
                    log_file.unlink()

    def _idle_for(self) -> float:
        return time.monotonic() - self.last_busy

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        fds: list[int] = []
        try:
            uid = struct.unpack("3i", conn.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]  # fmt: skip
            if uid != os.getuid():
                raise PermissionError(f"a connection from uid {uid}")
            conn.settimeout(2.0)  # our clients send at once; nobody holds the others up
            data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
            if len(fds) != 3 or len(data) < _HEADER.size:
                raise ValueError("an incomplete request")
            (size,) = _HEADER.unpack_from(data)
            while len(data) < _HEADER.size + size:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    raise ValueError("an incomplete request")
                data += chunk
            job = json.loads(data[_HEADER.size : _HEADER.size + size])
        except (OSError, ValueError) as err:
            print(f"refused a request: {err}", file=sys.stderr)
            for fd in fds:  # or the job's pipe would stay open here, and it would wait on it
                os.close(fd)
            conn.close()
            return
        pid = os.fork()
        if pid == 0:  # the helper
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for sock in (self.listener, self.wake_r, self.wake_w, *self.helpers.values()):
                    sock.close()
                self.lock.close()  # a helper outliving its server must not keep others out
                _become_the_job(job, fds)
                # now the job may count on it (had that failed, the job sees the exit instead)
                conn.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
                conn.close()
                self.serve_job()
            except BaseException:
                traceback.print_exc()  # on the job's stderr once it is taken over
            finally:
                os._exit(1)
        for fd in fds:
            os.close(fd)
        self.helpers[pid] = conn
        self.last_busy = time.monotonic()

    def _reap(self) -> None:
        while self.helpers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.helpers.pop(pid, None)
            self.last_busy = time.monotonic()
            if conn is not None:
                code = os.waitstatus_to_exitcode(status)
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
                conn.close()


def main(path: str, idle: str, serve: Callable[[], None]) -> None:
    """Detach, take the lock of ``path``, listen, then import MLflow and serve until idle.

    ``python -m rlbench.tracking.helper --fork-server PATH IDLE`` calls this with the helper's
    own loop as ``serve``, which each forked helper runs. The launcher exits 0 once the server
    listens (clients queue while it imports MLflow) or another one holds the lock, else 1 with
    the reason on stderr."""
    ready_r, ready_w = os.pipe()
    if os.fork():  # the launcher; the server becomes init's child when it exits
        os.close(ready_w)
        with os.fdopen(ready_r, "rb") as ready:
            answer = ready.read().decode(errors="replace")
        if answer != "ok":
            print(answer or "the helper server died while starting", file=sys.stderr)
        os._exit(0 if answer == "ok" else 1)
    os.close(ready_r)
    try:  # let go of the launcher's stdio (its caller waits for the end of its stderr)
        null_fd = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(null_fd, target)
        os.close(null_fd)
        lock = open(f"{path}.lock", "w")  # noqa: SIM115 - held for the server's life
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.write(ready_w, b"ok")  # another server has it: the client connects to that one
            os._exit(0)
        log_fd = os.open(f"{path}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(log_fd, 2)  # the server's own errors; a forked helper writes to its job's
        os.close(log_fd)
        server = _Server(Path(path), float(idle), serve, lock)
    except Exception as err:  # e.g. a folder that cannot hold the socket
        os.write(ready_w, f"cannot serve at {path}: {err}".encode())
        os._exit(1)
    os.write(ready_w, b"ok")
    os.close(ready_w)
    try:
        _preload()
        import gc

        gc.freeze()  # the preloaded objects stay shared with every forked helper
    except Exception:  # a broken install: the queued clients start their own helpers
        traceback.print_exc()
        server.close()
        os._exit(1)
    server.serve()
    os._exit(0)
