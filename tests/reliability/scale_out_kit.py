"""Real servers for the scale-out tests and benchmark: PostgreSQL and an ``mlflow server``.

PostgreSQL is Debian's package (``postgresql``, binaries under ``/usr/lib/postgresql/<v>/bin``),
started from a fresh ``initdb`` in a temporary folder on a free loopback port. The server refuses
to run as root, so as root it runs as the ``postgres`` user the package created. The MLflow server
is ``mlflow server --app-name basic-auth`` with that PostgreSQL as its backend store and a local
folder as the artifact destination it proxies. Both bind 127.0.0.1 only.

:func:`unavailable` says why a server cannot start here (the reason a test skips with).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

# passwords with the characters a URL parser most easily gets wrong (raw "/", "@", ":")
SUPERUSER_PASSWORD = "pg-Super/9:x"
TEAM_USER, TEAM_PASSWORD = "rlbench", "Tq8/zR@p:v2W"
READER_USER, READER_PASSWORD = "reader", "Rd5/only@mK"
ADMIN_USER, ADMIN_PASSWORD = "admin", "Adm1n-Str0ng/Pw@x"
WORKER_USER, WORKER_PASSWORD = "worker", "Wk7/team@Pw:q"
PSYCOPG = "postgresql+psycopg"  # SQLAlchemy's plain postgresql:// means psycopg2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` (the newest Debian PostgreSQL), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    return Path(which).parent if which else None


def _version_key(path: str) -> tuple[int, ...]:
    part = Path(path).parts[-3]
    return tuple(int(p) for p in part.split(".") if p.isdigit())


def unavailable() -> str | None:
    """Why PostgreSQL cannot be started here (None: it can)."""
    if pg_bin() is None:
        return "PostgreSQL is not installed (apt-get install postgresql; .ci/run does it)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL refuses to run as root"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[dev]')"
    return None


def start_or_skip() -> Postgres:
    """A started server, or the calling test (or fixture) skipped saying why there is none."""
    import pytest

    reason = unavailable()
    if reason:
        pytest.skip(reason)
    try:
        return Postgres.start()
    except (OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"PostgreSQL could not start: {err}")


def url(user: str, password: str, port: int, db: str, driver: str = "postgresql") -> str:
    return f"{driver}://{user}:{quote(password, safe='')}@127.0.0.1:{port}/{db}"


@dataclass
class Postgres:
    """A PostgreSQL server of its own: ``start()``, ``sql()``, ``stop()``."""

    root: Path
    port: int = field(default_factory=free_port)
    settings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, durable: bool = False, **settings: str) -> Postgres:
        """A fresh cluster (``durable=False``: fsync off, as for tests) with the team's
        databases ``optuna`` and ``mlflow`` owned by ``rlbench``, and a ``reader`` role that
        may connect but not create tables."""
        root = Path(tempfile.mkdtemp(prefix="rlbench-pg-"))  # in /tmp: the postgres user reaches it
        pg = cls(root, settings=settings)
        pg._initdb(durable)
        pg._pg_ctl("start", "-w", "-t", "60", "-l", str(root / "server.log"), "-o", pg._options())
        pg.sql(
            f"CREATE ROLE {TEAM_USER} LOGIN PASSWORD '{TEAM_PASSWORD}'",
            f"CREATE ROLE {READER_USER} LOGIN PASSWORD '{READER_PASSWORD}'",
            f"CREATE DATABASE optuna OWNER {TEAM_USER}",
            f"CREATE DATABASE mlflow OWNER {TEAM_USER}",
            f"CREATE DATABASE mlflow_auth OWNER {TEAM_USER}",
            "CREATE DATABASE locked OWNER postgres",  # reader may connect, not create tables
        )
        return pg

    def _as_postgres(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _initdb(self, durable: bool) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(SUPERUSER_PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        pwfile.chmod(0o600)
        args = ["-D", str(self.root / "data"), "-U", "postgres", "-E", "UTF8"]
        args += ["--auth=scram-sha-256", f"--pwfile={pwfile}", "--locale=C"]
        if not durable:
            args.append("--no-sync")
        subprocess.run(
            [*self._as_postgres(), str(pg_bin() / "initdb"), *args],
            cwd=self.root, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        pwfile.unlink()
        if not durable:
            self.settings = {"fsync": "off", "synchronous_commit": "off", **self.settings}

    def _options(self) -> str:
        opts = {"port": str(self.port), "listen_addresses": "127.0.0.1"}
        opts["unix_socket_directories"] = str(self.root)
        opts |= self.settings
        return " ".join(f"-c {k}={v}" for k, v in opts.items())

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self._as_postgres(), str(pg_bin() / "pg_ctl"), "-D", str(self.root / "data"), *args],
            cwd=self.root, check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def url(
        self, db: str, user: str = TEAM_USER, password: str = TEAM_PASSWORD,
        driver: str = "postgresql",
    ) -> str:  # fmt: skip
        return url(user, password, self.port, db, driver)

    def sql(self, *statements: str, db: str = "postgres") -> list[tuple]:
        """Run statements as the superuser; the last one's rows."""
        import psycopg

        rows: list[tuple] = []
        dsn = f"host=127.0.0.1 port={self.port} dbname={db} user=postgres"
        with psycopg.connect(dsn, password=SUPERUSER_PASSWORD, autocommit=True) as con:
            for statement in statements:
                cur = con.execute(statement)
                rows = cur.fetchall() if cur.description else []
        return rows

    def connections(self) -> int:
        """Client connections open now (the pool sizes' sum, as the server sees it)."""
        return int(self.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                            "'client backend'")[0][0]) - 1  # fmt: skip

    def stop(self) -> None:
        """Stop at once (no shutdown checkpoint: the folder is removed next)."""
        with contextlib.suppress(Exception):
            self._pg_ctl("stop", "-m", "immediate", "-w", "-t", "30")
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class MlflowServer:
    """``mlflow server --app-name basic-auth`` on PostgreSQL, proxying a local artifact folder.

    The admin's credentials come from the environment (``MLFLOW_AUTH_ADMIN_USERNAME``/
    ``PASSWORD``); the team's user ``worker`` is created through the auth API, and
    ``default_permission = EDIT`` lets every user write every experiment.
    """

    root: Path
    port: int
    proc: subprocess.Popen
    log_path: Path

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def uri_with(self, user: str = WORKER_USER, password: str = WORKER_PASSWORD) -> str:
        return f"http://{user}:{quote(password, safe='')}@127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls, pg: Postgres, root: Path, workers: int = 2, timeout: float = 180.0, **env: str
    ) -> MlflowServer:
        root.mkdir(parents=True, exist_ok=True)
        ini = root / "auth.ini"
        ini.write_text(
            "[mlflow]\n"
            "default_permission = EDIT\n"
            # configparser reads "%" as interpolation: the %-encoded password doubles it
            f"database_uri = {pg.url('mlflow_auth', driver=PSYCOPG).replace('%', '%%')}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "auth_cache_ttl_seconds = 60\n"
        )
        port = free_port()
        log_path = root / "server.log"
        server_env = os.environ | {
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN_USER,
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "rlbench-tests-only",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            # connection pool per server worker process (see docs/scale-out.md)
            "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "4",
            "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "4",
            "OMP_NUM_THREADS": "1",
            **env,
        }
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            server_env.pop(key, None)
        log = open(log_path, "w")  # noqa: SIM115 - the server writes it until stop()
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
             "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", pg.url("mlflow", driver=PSYCOPG),
             "--artifacts-destination", str(root / "artifacts"),
             "--workers", str(workers)],
            cwd=root, env=server_env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        server = cls(root, port, proc, log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(server.uri + "/health", timeout=2).close()
                server._create_worker()
                return server
            time.sleep(0.5)
        server.stop()
        raise RuntimeError(f"mlflow server did not answer in {timeout:.0f} s")

    def _create_worker(self) -> None:
        import base64
        import json

        body = json.dumps({"username": WORKER_USER, "password": WORKER_PASSWORD}).encode()
        pair = base64.b64encode(f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode()).decode()
        request = urllib.request.Request(
            self.uri + "/api/2.0/mlflow/users/create", data=body, method="POST",
            headers={"Authorization": f"Basic {pair}", "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            urllib.request.urlopen(request, timeout=30).close()
        except urllib.error.HTTPError as err:
            if err.code != 400:  # 400: the user exists already
                raise

    def cpu_seconds(self) -> float:
        """CPU time of the server's process tree so far (gunicorn/uvicorn workers included)."""
        import psutil

        total = 0.0
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.proc.pid)
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
        return total

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
