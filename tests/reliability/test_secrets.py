"""Secrets in every URL form never land on disk or on the terminal, and still work.

Real processes (``rlbench-train``, ``rlbench-report``, ``rlbench-verify``) against real stores: a
real ``mlflow server`` behind a small proxy that demands HTTP basic auth (MLflow's own
``basic-auth`` app needs Flask-WTF, which the pinned environment does not have), the embedded
SQLite store and a SQLite Optuna storage. After each command everything it wrote is scanned for
the secret in every spelling (raw, %-encoded, a distinctive fragment): the working directory
(``outputs/`` with Hydra's ``.hydra`` files, ``multirun/``, the MLflow SQLite store and its
artifacts, ``optuna.db``), the server's database and artifact folder, stdout and stderr.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from reliability_kit import child_env

from rlbench.tracking.redaction import mask_passwords, split_credentials, url_secrets

pytestmark = pytest.mark.slow

# raw "/", "@" and ":" in the password: what a URL parser most easily gets wrong
PASSWORD = "Kx7mQ/p@Zr9vL:w8TqY"
USER = "alice"
TRAIN = "from rlbench.run.main import main; main()"
REPORT = "from rlbench.results.cli import main; main()"
VERIFY = "import sys; from rlbench.results.verify import main; sys.exit(main())"


def spellings(secret: str) -> list[str]:
    """Every form in which ``secret`` could be written down."""
    core = [secret, quote(secret, safe=""), quote(secret)]
    fragments = secret.replace("@", "/").replace(":", "/").split("/")
    return sorted({*core, *(f for f in fragments if len(f) >= 5)})


def scan(roots: list[Path], texts: dict[str, str], secrets: list[str]) -> list[str]:
    """``where: needle`` for each secret spelling found in a file under ``roots`` or a text."""
    needles = sorted({s for secret in secrets for s in spellings(secret)})
    hits = []
    for root in roots:
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if not path.is_file():
                continue
            data = path.read_bytes()
            hits += [f"{path}: {n}" for n in needles if n.encode() in data]
    for name, text in texts.items():
        hits += [f"{name}: {n}" for n in needles if n in text]
    return hits


def run(
    code: str, *args: str, cwd: Path, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=child_env() | env,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- the server


class AuthProxy(http.server.ThreadingHTTPServer):
    """Forwards requests carrying ``Authorization: Basic alice:PASSWORD`` to the MLflow
    server; answers anything else 401, and counts the refusals."""

    def __init__(self, backend: int) -> None:
        self.backend = backend
        self.expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.refused = 0
        self.served = 0
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: AuthProxy

    def log_message(self, *args) -> None:  # quiet
        pass

    def _forward(self) -> None:
        if self.headers.get("Authorization") != self.server.expected:
            self.server.refused += 1
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn = http.client.HTTPConnection("127.0.0.1", self.server.backend, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        self.server.served += 1
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict]:
    """A real ``mlflow server`` (SQLite backend, proxied artifacts) behind :class:`AuthProxy`."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root}/server.db",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        # no job runner: 8 processes for GenAI jobs, polling at ~1 core while the tests run
        env=child_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError((root / "server.log").read_text()[-3000:])
        time.sleep(0.3)
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=f"http://127.0.0.1:{port}").search_experiments()  # warm it up
    proxy = AuthProxy(port)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"root": root, "backend": f"http://127.0.0.1:{port}", "proxy": proxy,
               "host": f"127.0.0.1:{proxy.server_address[1]}"}  # fmt: skip
    finally:
        proxy.shutdown()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def backend_runs(server: dict, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=server["backend"])
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def server_files(server: dict) -> list[Path]:
    return [server["root"] / "server.db", server["root"] / "artifacts"]


# --------------------------------------------------------------------------- the tests


def test_a_password_in_a_server_url_works_and_is_never_written(server, tmp_path):
    """``http://user:pa/ss@word@host``: the job trains against the server (not "unreachable"),
    the report and verify read it, the environment form works too, and the password is nowhere:
    not in Hydra's ``.hydra`` files, MLflow's params, tags, config.yaml, stdout or stderr."""
    raw = f"http://{USER}:{PASSWORD}@{server['host']}"
    encoded = f"http://{USER}:{quote(PASSWORD, safe='')}@{server['host']}"
    texts = {}
    train = ["debug=fast", "tracking.experiment=secrets"]
    for algo, uri in (("threshold", raw), ("static", encoded)):
        proc = run(TRAIN, *train, f"algo={algo}", f"tracking.uri={uri}", cwd=tmp_path)
        texts[f"{algo} stdout"], texts[f"{algo} stderr"] = proc.stdout, proc.stderr
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "score:" in proc.stdout and "unreachable" not in proc.stderr
    # the same server named by MLFLOW_TRACKING_URI
    proc = run(TRAIN, *train, "algo=threshold", "seed=1", cwd=tmp_path, MLFLOW_TRACKING_URI=raw)
    texts["env stdout"], texts["env stderr"] = proc.stdout, proc.stderr
    assert proc.returncode == 0, proc.stderr[-3000:]

    runs = backend_runs(server, "secrets")
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    sources = sorted(r.data.tags["rlbench.tracking_uri_source"] for r in runs)
    assert sources == ["cli", "cli", "env"]
    assert all(r.data.params["tracking.uri"] == f"http://{USER}:***@{server['host']}" for r in runs)

    proc = run(REPORT, f"tracking.uri={raw}", "tracking.experiment=secrets", "min_seeds=1",
               "log_to_mlflow=true", cwd=tmp_path)  # fmt: skip
    texts["report stdout"], texts["report stderr"] = proc.stdout, proc.stderr
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run(VERIFY, "--experiment", "secrets", "--tracking-uri", encoded, cwd=tmp_path)
    texts["verify stdout"], texts["verify stderr"] = proc.stdout, proc.stderr
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # a wrong password: one line, the store named with its password masked, exit 2
    wrong = f"http://{USER}:Wr0ng/p4ss@{server['host']}"
    proc = run(TRAIN, *train, "algo=static", f"tracking.uri={wrong}", cwd=tmp_path)
    texts["wrong stdout"], texts["wrong stderr"] = proc.stdout, proc.stderr
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    assert "refused the credentials" in line and "Traceback" not in proc.stderr

    hits = scan([tmp_path, *server_files(server)], texts, [PASSWORD, "Wr0ng/p4ss"])
    assert hits == []
    assert (tmp_path / "outputs" / "runs").is_dir()  # Hydra's files were there to scan


def test_an_unreachable_server_with_a_password_is_one_masked_line(tmp_path):
    uri = f"http://{USER}:{PASSWORD}@127.0.0.1:{free_port()}"
    proc = run(TRAIN, "debug=fast", "algo=threshold", f"tracking.uri={uri}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    assert "unreachable" in line and "127.0.0.1" in line
    assert scan([tmp_path], {"stdout": proc.stdout, "stderr": proc.stderr}, [PASSWORD]) == []


QUERY_SECRETS = {
    "password": "Qpw-secret-51",
    "token": "Qtok-secret-52",
    "X-Amz-Signature": "Qsig-secret-53",
    "api_key": "Qkey-secret-54",
}


def test_query_string_and_userinfo_secrets_in_a_sweep_and_a_parallel_grid(tmp_path):
    """Secrets in every URL form on the command line of an Optuna sweep and of a grid run by
    joblib worker processes: the jobs resolve them (the config names environment variables the
    workers inherit) and nothing written or printed holds one."""
    query = "&".join(f"{k}={v}" for k, v in QUERY_SECRETS.items())
    userinfo = "Db/pa@ss:wd%2Fx"  # raw / @ : and an encoded /
    urls = [
        f"+tracking.tags.db=postgresql://bob:{userinfo}@db.example.org:5432/x",
        f"+tracking.tags.object='https://bucket.example.org/k?a=1&{query}'",
    ]
    secrets = [*QUERY_SECRETS.values(), userinfo, "Db/pa@ss:wd/x"]
    common = ["debug=fast", "++eval.trajectory_plot=false", "train.checkpoint_every=0", *urls]
    sweep = run(
        TRAIN, "-m", "search=threshold", "hydra.sweeper.n_trials=2", *common,
        f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db", cwd=tmp_path,
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    grid = run(
        TRAIN, "-m", "algo=threshold,static", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        *common, "hydra.sweep.dir=multirun/grid", cwd=tmp_path,
    )  # fmt: skip
    assert grid.returncode == 0, grid.stderr[-3000:]
    assert grid.stdout.count("score:") == 2

    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/outputs/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("rlbench").experiment_id])
    trained = [r for r in runs if "db" in r.data.tags]
    assert len(trained) == 4  # two trials and two grid jobs: the tags are there, masked
    for r in trained:
        assert r.data.tags["db"] == "postgresql://bob:***@db.example.org:5432/x"
        assert r.data.tags["object"].startswith("https://bucket.example.org/k?a=1&password=***&")
    texts = {
        "sweep stdout": sweep.stdout, "sweep stderr": sweep.stderr,
        "grid stdout": grid.stdout, "grid stderr": grid.stderr,
    }  # fmt: skip
    assert scan([tmp_path], texts, secrets) == []
    assert list(tmp_path.glob("multirun/grid/*/.hydra/overrides.yaml"))


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://u:p/ss@h/db", "p/ss"),
        ("postgresql://u:p@ss:w@h:5432/db", "p@ss:w"),
        ("mysql+pymysql://u:p%2Fss@h/db", "p%2Fss"),
        ("http://u:pw-1@h:5000", "pw-1"),
        ("https://h/x?sig=abc123&b=1", "abc123"),
        ("https://h/x?X-Amz-Signature=deadbeef#frag", "deadbeef"),
        ("postgresql://h/db?user=u&password=hunter22", "hunter22"),
        ("redis://:onlypass@h:6379/0", "onlypass"),
    ],
)
def test_every_url_form_is_parsed(url, secret):
    assert url_secrets(f"see {url} there") == [secret]
    assert secret not in mask_passwords(f"x={url}, y")
    if url.startswith("http://"):
        assert split_credentials(url) == ("http://h:5000", "u", secret)


def test_printing_the_resolved_config_masks_the_stores_passwords(cli, monkeypatch):
    """``--cfg ... --resolve`` shows what a cluster= preset read from the environment, not the
    passwords in it (a terminal is screenshotted, a CI log kept)."""
    monkeypatch.setenv("RLBENCH_OPTUNA_STORAGE", "postgresql://u:s3cretpw@db:5432/optuna")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://w:pw2secret@mlflow.internal:5000")
    for args in (("--cfg", "job", "--resolve"), ("search=threshold", "--cfg", "all", "--resolve")):
        done = cli("cluster=team", *args)
        assert done.code == 0, done.err
        assert "postgresql://u:***@db:5432/optuna" in done.out
        assert "http://w:***@mlflow.internal:5000" in done.out
        assert "s3cretpw" not in done.out + done.err and "pw2secret" not in done.out + done.err
