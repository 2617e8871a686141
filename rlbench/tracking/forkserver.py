"""A process with MLflow already imported that forks the jobs' tracking helpers.

Starting a helper costs ~4 s of CPU (``import mlflow``, SQLAlchemy's mappers for MLflow's
tables), and every ``rlbench-train`` process paid it: more than a short training job, and the
largest part of a small grid's CPU. The fork server pays it once. It imports all that, listens
on a Unix socket in a private folder (``$XDG_RUNTIME_DIR/rlbench`` or ``/tmp/rlbench-<uid>``,
mode 0700, same user only), and for each job forks a helper that takes over the job's pipes and
stderr (passed over the socket), its environment, working folder, umask and file size limit,
then runs :func:`rlbench.tracking.helper.serve` exactly as a helper the job started itself. When
the job dies its pipes close and the helper ends the job's open runs KILLED, as before.

One server per Python, rlbench source, installed packages and MLflow environment (a change to
any of them starts another). It exits after ``RLBENCH_HELPER_IDLE`` seconds without a helper
(default 600); ``RLBENCH_HELPER_IDLE=0`` turns it off. Whatever fails here, the job starts its
own helper instead: the fork server can make start-up faster, never break it.

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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

IDLE_ENV = "RLBENCH_HELPER_IDLE"
DEFAULT_IDLE_S = 600.0
START_TIMEOUT_S = 30.0
# environment the server's imports may read once: part of its identity, not passed per job
_IMPORT_ENV_PREFIXES = ("MLFLOW_", "PYTHON", "SQLALCHEMY", "TMPDIR", "TEMP", "TMP", "HOME")
_HEADER = struct.Struct("!I")


def idle_seconds() -> float:
    """``RLBENCH_HELPER_IDLE`` (seconds a server waits for work before it exits; 0 = off)."""
    raw = os.environ.get(IDLE_ENV, "").strip()
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_IDLE_S
    except ValueError:
        log.warning("%s=%r is not a number of seconds; using %g", IDLE_ENV, raw, DEFAULT_IDLE_S)
        return DEFAULT_IDLE_S


# --------------------------------------------------------------------------- the job's side


class ForkedHelper:
    """The part of :class:`subprocess.Popen` a helper needs, for a helper the server forks.

    The job does not wait for the fork: its requests queue in the pipe meanwhile, as they do
    while a helper it started itself imports MLflow. The server then says the helper's pid on
    the connection, and its exit code when it reaps it.
    """

    def __init__(self, conn: socket.socket, stdin: Any, stdout: Any) -> None:
        self.conn, self.stdin, self.stdout = conn, stdin, stdout
        self.pid: int | None = None
        self.returncode: int | None = None
        self._buffer = b""

    def _read(self, timeout: float | None) -> None:
        """Take what the server said within ``timeout`` (its pid, then the exit code)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.conn], [], [], left)[0]:
                return
            try:
                data = self.conn.recv(4096)
            except OSError:
                data = b""
            if not data:  # the server is gone: so is the helper, or it will never say
                if self.pid is None or _gone(self.pid):
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

    def poll(self) -> int | None:
        self._read(0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._read(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"helper {self.pid}", timeout or 0.0)
        return self.returncode

    def kill(self) -> None:
        if self.pid is None:
            self._read(START_TIMEOUT_S)
        if self.pid is not None and self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def close_connection(self) -> None:
        """In a forked copy of the job: let go of the connection without reading from it."""
        with contextlib.suppress(OSError):
            os.close(self.conn.fileno())


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return state in ("Z", "X")


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
    """What a server's imports depend on: the Python, rlbench's source, the installed
    packages (a pip install changes site-packages), and the environment read at import."""
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
    return digest.hexdigest()[:16]


def fork_helper(env: Mapping[str, str]) -> ForkedHelper | None:
    """A helper forked by this user's server (started if needed), or None to start one's own."""
    if idle_seconds() <= 0 or not hasattr(socket, "send_fds") or sys.platform != "linux":
        return None
    folder = _folder()
    if folder is None:
        return None
    path = folder / f"helper-{_identity(env)}.sock"
    stdin_r = stdin_w = stdout_r = stdout_w = -1
    conn: socket.socket | None = None
    try:
        conn = _connect(path, env)
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        job = {
            "env": dict(env),
            "cwd": os.getcwd(),
            "umask": _umask(),
            "fsize": resource_fsize(),
            "xfsz_ignored": signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN,
        }
        data = json.dumps(job).encode()
        socket.send_fds(conn, [_HEADER.pack(len(data)) + data], [stdin_r, stdout_w, 2])
        os.close(stdin_r)
        os.close(stdout_w)
        stdin_r = stdout_w = -1
    except (OSError, ValueError, subprocess.SubprocessError) as err:
        log.debug("no forked MLflow helper (%s); starting one", err)
        for fd in (stdin_r, stdin_w, stdout_r, stdout_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if conn is not None:
            conn.close()
        return None
    os.set_inheritable(stdin_w, False)
    os.set_inheritable(stdout_r, False)
    return ForkedHelper(conn, os.fdopen(stdin_w, "wb"), os.fdopen(stdout_r, "rb"))


def resource_fsize() -> int | None:
    """This process's file size limit (a job run under ``ulimit -f``): its helper gets it too."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _connect(path: Path, env: Mapping[str, str]) -> socket.socket:
    """Connect to the server at ``path``, starting it first if none answers."""
    for attempt in range(3):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(str(path))
            return conn
        except OSError:
            conn.close()
        if attempt < 2:
            _start_server(path, env)  # raises if it could not
    raise OSError(f"no helper server answers at {path}")


def _start_server(path: Path, env: Mapping[str, str]) -> None:
    """Start a server for ``path`` in a session of its own. The launcher returns once the
    server listens (or another does), and the server is not this process's child: killing the
    job's process group leaves it alone."""
    launcher = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlbench.tracking.helper",
            "--fork-server",
            str(path),
            str(idle_seconds()),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd="/",
        start_new_session=True,
        timeout=START_TIMEOUT_S,
    )
    if launcher.returncode != 0:
        raise OSError(launcher.stderr.decode(errors="replace").strip() or "it exited")


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
    """In the forked helper: take the job's pipes, stderr, environment, folder and limits."""
    for target, fd in zip((0, 1, 2), fds, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(job["env"])
    tempfile.tempdir = None
    os.chdir(job["cwd"])
    os.umask(int(job["umask"]))
    if job.get("xfsz_ignored"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    if job.get("fsize") is not None:
        import resource

        limit = int(job["fsize"])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


class _Server:
    def __init__(self, path: Path, idle: float, serve: Callable[[], None]) -> None:
        self.path, self.idle, self.serve_job = path, idle, serve
        self.lock = open(str(path) + ".lock", "w")  # noqa: SIM115 - held for the server's life
        fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if another serves
        staging = path.with_name(f".{os.getpid()}")
        staging.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(staging))
        self.listener.listen(128)
        os.replace(staging, path)  # clients connect from now on; accepted after the preload
        self.inode = path.stat().st_ino
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno())
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.helpers: dict[int, socket.socket] = {}  # pid -> the connection that asked for it
        self.last_busy = time.monotonic()

    def serve(self) -> None:
        try:
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
                    return
        finally:
            with contextlib.suppress(OSError):
                if self.path.stat().st_ino == self.inode:
                    self.path.unlink()  # a client that connects now starts a new server

    def _idle_for(self) -> float:
        return time.monotonic() - self.last_busy

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        try:
            uid = struct.unpack("3i", conn.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]  # fmt: skip
            if uid != os.getuid():
                raise PermissionError(f"a connection from uid {uid}")
            conn.settimeout(10.0)
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
            conn.close()
            return
        pid = os.fork()
        if pid == 0:  # the helper
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for sock in (self.listener, self.wake_r, self.wake_w, conn, *self.helpers.values()):
                    sock.close()
                self.lock.close()
                _become_the_job(job, fds)
                self.serve_job()
            finally:
                os._exit(1)
        for fd in fds:
            os.close(fd)
        self.helpers[pid] = conn
        self.last_busy = time.monotonic()
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")

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
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode()
                                 + b"\n")  # fmt: skip
                conn.close()


def main(path: str, idle: str, serve: Callable[[], None]) -> None:
    """Fork the server; return (exit 0) once it listens, or exit 1 with the reason.

    ``python -m rlbench.tracking.helper --fork-server PATH IDLE`` calls this with the helper's
    own loop as ``serve``, which each forked helper runs."""
    ready_r, ready_w = os.pipe()
    if os.fork():  # the launcher: the server becomes init's child when this exits
        os.close(ready_w)
        with os.fdopen(ready_r, "rb") as ready:
            answer = ready.read().decode(errors="replace")
        if answer != "ok":
            print(answer or "the helper server died while starting", file=sys.stderr)
            os._exit(1)
        os._exit(0)
    os.close(ready_r)
    try:
        server = _Server(Path(path), float(idle), serve)
    except BlockingIOError:  # another server holds the lock: the client connects to it
        os.write(ready_w, b"ok")
        os._exit(0)
    except Exception as err:  # e.g. a socket path longer than the system allows
        os.write(ready_w, f"cannot listen at {path}: {err}".encode())
        os._exit(1)
    # the launcher's stdout and stderr are its caller's pipes: the server lets go of them
    log_fd = os.open(f"{path}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    null_fd = os.open(os.devnull, os.O_RDWR)
    os.dup2(null_fd, 0)
    os.dup2(null_fd, 1)
    os.dup2(log_fd, 2)
    os.write(ready_w, b"ok")
    os.close(ready_w)
    try:
        _preload()
        import gc

        gc.freeze()  # the preloaded objects stay shared with every forked helper
    except Exception as err:  # a broken install: clients fall back to their own helpers
        print(f"could not preload MLflow: {err}", file=sys.stderr)
        os._exit(1)
    server.serve()
    os._exit(0)
