"""Policies leave the lab: the registry (register, promote, rollback), the pyfunc model, and the
decision server driven over HTTP on a loopback port, as a user would."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from rlbench.errors import UserError

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serve")]
NAME = "autoscaler"
OBS_DIM = 7


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: bytes, timeout: float = 10.0) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read().decode()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A store with two finished PPO runs (seeds 0 and 1), registered as versions 1 and 2."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root}/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    procs = []  # both trainings at once (one torch thread each): half the fixture's wall time
    for seed, extra in ((0, [f"tracking.register={NAME}"]), (1, [])):  # the first at training
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "rlbench.run.main", "algo=ppo", "debug=fast",
             f"seed={seed}", "train.progress=off", f"tracking.artifact_location={root}/art",
             *extra],
            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))  # fmt: skip
    runs, printed = [], []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        runs.append(out.split("mlflow run: ")[1].split()[0])
        printed.append(out + err)
    from rlbench.tracking import registry

    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    (first,) = registry.versions(NAME, uri)
    second = registry.register(runs[1], NAME, reason="new seed", tracking_uri=uri)
    after = {k: os.environ.get(k) for k in before}
    return {
        "uri": uri,
        "root": root,
        "env": env,
        "runs": runs,
        "versions": [first, second],
        "environment": (before, after),
        "printed": printed,
    }


def test_registering_at_training_prints_no_mlflow_example_check(store):
    """MLflow logs "Validating input example against model signature" at INFO for every
    model with an input example: nothing a user acts on, on every registration."""
    registered_at_training = store["printed"][0]  # stdout and stderr
    assert "registered as" in registered_at_training  # (the run did register)
    assert "Validating input example" not in registered_at_training


def test_registering_leaves_the_process_environment_as_it_was(store):
    """MLflow's set_tracking_uri writes MLFLOW_TRACKING_URI into os.environ: every later
    command of the process, and its children, would use that store."""
    before, after = store["environment"]
    assert after == before


def test_tracking_register_needs_tracking(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "rlbench.run.main", "debug=fast", f"tracking.register={NAME}",
         "tracking.enabled=false"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: tracking.register needs tracking.enabled=true: the registry is MLflow's"
    )


def test_register_gives_champion_then_challenger_and_records_who_when_why(store):
    first, second = store["versions"]
    assert (first.version, first.aliases, first.run_id) == ("1", ["champion"], store["runs"][0])
    assert first.tags["rlbench.registry.registered_why"] == "tracking.register"
    assert (second.version, second.aliases) == ("2", ["challenger"])
    assert second.tags["rlbench.registry.registered_why"] == "new seed"
    assert second.tags["rlbench.registry.registered_by"]
    assert second.tags["rlbench.registry.registered_at"].startswith("20")
    from rlbench.tracking import registry

    again = registry.register(store["runs"][1], NAME, reason="twice", tracking_uri=store["uri"])
    assert again.version == "2"  # no duplicate version of the same run


def test_the_model_is_code_and_safe_files_never_a_pickle_and_predicts(store):
    import mlflow

    from rlbench.tracking.client import using_store

    with using_store(store["uri"]):
        folder = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}/1"))
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    files = [p.name for p in folder.rglob("*") if p.is_file()]
    assert "policy_model.py" in files and "model.zip" in files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))]
    requirements = (folder / "requirements.txt").read_text()
    assert "stable-baselines3==" in requirements and "torch==" in requirements
    assert tuple(model.metadata.signature.inputs.inputs[0].shape) == (-1, OBS_DIM)
    obs = np.random.default_rng(0).random((4, OBS_DIM)).astype(np.float32)
    agent = model.unwrap_python_model().agent
    np.testing.assert_array_equal(model.predict(obs), agent.predict(obs))
    frame = model.predict(obs, params={"probabilities": True})
    assert list(frame.columns) == ["action", "probability", "p_0", "p_1", "p_2"]
    np.testing.assert_allclose(frame[["p_0", "p_1", "p_2"]].sum(axis=1), 1.0, rtol=1e-6)


def test_registry_cli_lists_promotes_and_rolls_back(store, console):
    """``rlbench-registry`` as its console script runs it (in this process: each command as a
    process of its own cost 5 s of imports)."""
    from rlbench.serve import registry_cli
    from rlbench.tracking.redaction import display_uri

    def cli(*args: str) -> subprocess.CompletedProcess:
        return console(registry_cli.main, "--tracking-uri", store["uri"], *args)

    listed = cli("list", NAME)
    assert listed.returncode == 0, listed.stderr
    assert "version 2  challenger" in listed.stdout and "version 1  champion" in listed.stdout
    missing = cli("promote", "nosuchmodel")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"error: no registered model 'nosuchmodel' in {display_uri(store['uri'])} "
        f"(registered: {NAME})"
    ]
    no_history = cli("rollback", NAME)
    assert no_history.returncode == 2 and "nothing to roll back to" in no_history.stderr
    from rlbench.tracking import registry

    promoted = registry.promote(NAME, reason="better on spike", tracking_uri=store["uri"])
    assert (promoted.version, promoted.aliases) == ("2", ["champion"])
    assert promoted.tags["rlbench.registry.replaced_version"] == "1"
    assert promoted.tags["rlbench.registry.promoted_why"] == "better on spike"
    back = cli("rollback", NAME, "--reason", "worse in production")
    assert back.returncode == 0, back.stderr
    assert registry.resolve_alias(f"models:/{NAME}@champion", store["uri"]) == "1"
    rolled = registry.versions(NAME, store["uri"])[0]  # newest first: version 2
    assert rolled.tags["rlbench.registry.rolled_back_why"] == "worse in production"


def stored_model_folder(uri: str, version: str) -> Path:
    """Where the store keeps version ``version``'s files (its logged model's artifacts)."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    source = client.get_model_version(NAME, version).source  # models:/m-<id>
    stored = client.get_logged_model(source.removeprefix("models:/")).artifact_location
    return Path(urlparse(stored).path)


def test_no_alias_move_names_a_version_that_does_not_load(store, console):
    """rollback moved the champion to a version with a damaged model file (exit 0) while servers
    refused it and kept serving the old one; now every move loads its target first, with one
    line naming the stored file (not a deleted temporary path) and a damaged MLmodel file
    called damaged (not "not an rlbench policy")."""
    from rlbench.live.champion import Registry
    from rlbench.serve import registry_cli
    from rlbench.tracking import registry

    uri = store["uri"]
    if registry.resolve_alias(f"models:/{NAME}@champion", uri) != "1":
        registry.promote(NAME, "1", reason="test start", tracking_uri=uri)
    registry.promote(NAME, "2", reason="rollback test", tracking_uri=uri)  # replaces 1
    folder = stored_model_folder(uri, "1")
    model, mlmodel = folder / "artifacts" / "model.zip", folder / "MLmodel"
    saved = {path: path.read_bytes() for path in (model, mlmodel)}
    try:
        model.write_bytes(saved[model][:1000])  # a truncated upload
        back = console(registry_cli.main, "--tracking-uri", uri, "rollback", NAME)
        assert back.returncode == 2
        assert back.stderr.strip().splitlines() == [
            f"error: cannot load {NAME} version 1: its artifact artifacts/model.zip is not a "
            "valid rlbench model: not a readable zip archive (File is not a zip file) "
            "(the champion stays version 2)"
        ]
        with pytest.raises(UserError, match="the champion stays version 2"):
            Registry(uri).rollback(NAME, "live reward fell")  # the live loop's rollback
        with pytest.raises(UserError, match="the champion stays version 2"):
            registry.promote(NAME, "1", reason="by number", tracking_uri=uri)
        model.write_bytes(saved[model])
        mlmodel.write_bytes(saved[mlmodel][: len(saved[mlmodel]) // 2])
        back = console(registry_cli.main, "--tracking-uri", uri, "rollback", NAME)
        assert back.returncode == 2
        assert "its MLmodel file is unreadable or damaged" in back.stderr
        assert "not an rlbench policy" not in back.stderr
        assert registry.resolve_alias(f"models:/{NAME}@champion", uri) == "2"
    finally:
        for path, data in saved.items():
            path.write_bytes(data)
    assert registry.rollback(NAME, "undamaged", uri).version == "1"


@pytest.fixture
def served(store):
    """A real ``rlbench-serve`` process on a free loopback port, following the champion."""
    started = []

    def start(*extra: str) -> str:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "rlbench.serve.cli", f"models:/{NAME}@champion",
             "--tracking-uri", store["uri"], "--port", str(port),
             # no load shedding unless a test asks: a loaded CI machine lags by itself
             "--shed-after-ms", "0", *extra],
            env=store["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                get(url + "/healthz")
                return url
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.2)
        raise AssertionError("the server did not answer within 60 s")

    start.procs = started
    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)


def test_a_body_announced_too_large_is_refused_at_once(served):
    """A client announcing 400 MB and sending a little gets its 413 at once: nothing waits for
    (or stores) the rest; the server still decides after."""
    url = served("--poll-interval", "0")
    port = urlparse(url).port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(
            b"POST /decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 400000000\r\n\r\n{"observations": ['
        )
        started = time.monotonic()
        answer = raw.recv(65536).decode()
        waited = time.monotonic() - started
        head, _, body = answer.partition("\r\n\r\n")
        length = int(head.lower().split("content-length:")[1].split("\r\n")[0])
        while len(body.encode()) < length:  # the body may come in a packet of its own
            body += raw.recv(65536).decode()
        answer = f"{head}\r\n\r\n{body}"
    assert answer.startswith("HTTP/1.1 413"), answer
    assert '"error":"request body of 400000000 bytes; at most' in answer
    assert waited < 2.0
    code, _ = post(url + "/decide", json.dumps({"observation": [0.1] * 7}).encode())
    assert code == 200


def test_sigterm_stops_gracefully_and_ctrl_c_says_interrupted(store, served):
    """uvicorn.run swallowed Ctrl-C (exit 0, no word) and re-raised SIGTERM (exit 143)."""
    import signal

    served("--poll-interval", "0")
    served("--poll-interval", "0")
    term, interrupt = served.procs
    term.send_signal(signal.SIGTERM)
    interrupt.send_signal(signal.SIGINT)
    assert term.wait(timeout=30) == 0
    assert interrupt.wait(timeout=30) == 130
    assert interrupt.stdout.read().strip().splitlines()[-1] == "interrupted"


def test_decisions_equal_the_policys_own_predict(store, served):
    import mlflow

    from rlbench.tracking.client import using_store

    url = served("--poll-interval", "0")
    champion = json.loads(get(url + "/healthz"))["policy"]["version"]
    with using_store(store["uri"]):
        model = mlflow.pyfunc.load_model(f"models:/{NAME}/{champion}")
    agent = model.unwrap_python_model().agent
    obs = np.random.default_rng(3).random((16, OBS_DIM)).astype(np.float32)
    status, body = post(url + "/decide", json.dumps({"observations": obs.tolist()}).encode())
    assert status == 200, body
    assert body["actions"] == agent.predict(obs).tolist()
    assert body["policy"] == {"name": NAME, "version": champion}
    pi = agent.action_probabilities(obs, deterministic=True)
    assert body["probabilities"] == pi[np.arange(16), body["actions"]].tolist()
    assert body["dequeued_at"] >= body["enqueued_at"] and body["delay_ms"] >= 0
    status, one = post(url + "/decide", json.dumps({"observation": obs[0].tolist()}).encode())
    assert status == 200 and one["actions"] == body["actions"][:1]


BAD_REQUESTS = [
    (b"{bad json", 400, "malformed JSON"),
    (b'{"obs": [1]}', 400, 'expected {"observations"'),
    (b'{"observation": [1, 2]}', 400, "this policy needs (N, 7)"),
    (b'{"observations": [["a", "b", "c", "d", "e", "f", "g"]]}', 400, "arrays of numbers"),
    (b'{"observation": [NaN, 0, 0, 0, 0, 0, 0]}', 400, "finite numbers"),
    (b'{"observation": [0, 0, 0, 0, 0, 0, 0], "deterministic": "yes"}', 400, "true or false"),
    (json.dumps({"observations": [[0.0] * 7] * 9}).encode(), 413, "at most 8"),
    (b'{"observation": ["0.5", "0", "0", "0", "0", "0", "0"]}', 400, "arrays of numbers"),
    (b'{"observation": [true, false, true, false, true, false, true]}', 400, "arrays of numbers"),
    (b'{"observation": ' + b"[" * 2500 + b"]" * 2500 + b"}", 400, "malformed JSON"),  # deep
    (json.dumps({"observations": [[0.5] * 7] * 10_000}).encode(), 413, "request body of"),
    (b'{"observation": [5, -3, 100, 1e6, -1e6, 2, 9]}', 400, "index 0: 5 is outside the obs"),
    (b'{"observation": [3e38, 0, 0, 0, 0, 0, 0]}', 400, "space [0, 1] by more than 0.1"),
    (b'{"observation": [0, 0, 0, 0, 0, 0, 0], "observations": []}', 400, "not both"),
    (
        b'{"observation": [0, 0, 0, 0, 0, 0, 0], "determinstic": false}',
        400,
        "unknown key 'determinstic' (did you mean 'deterministic'?)",
    ),
]


def test_bad_requests_get_one_line_and_the_server_lives_on(served):
    """One server takes every bad request in turn and still decides after each."""
    url = served("--poll-interval", "0", "--max-rows", "8")
    for body, status, message in BAD_REQUESTS:
        code, answer = post(url + "/decide", body)
        assert code == status and message in answer["error"], (body, code, answer)
        assert "\n" not in answer["error"]
        code, _ = post(url + "/decide", json.dumps({"observation": [0.1] * 7}).encode())
        assert code == 200, body


def test_a_flood_is_answered_every_request_a_decision_or_a_503(served):
    """The seed's resilience test: far more requests at once than the queue holds."""
    import aiohttp

    url = served(
        "--poll-interval", "0", "--capacity", "5", "--max-batch", "64", "--shed-after-ms", "25"
    )  # fmt: skip

    async def flood(n: int) -> list[int]:
        body = json.dumps({"observation": [0.2] * 7})
        async with aiohttp.ClientSession() as session:

            async def one() -> int:
                async with session.post(url + "/decide", data=body) as answer:
                    await answer.read()
                    return answer.status

            return await asyncio.gather(*(one() for _ in range(n)))

    codes = asyncio.run(flood(400))
    assert set(codes) <= {200, 503} and codes.count(200) >= 5
    metrics = get(url + "/metrics")

    def counter(name: str) -> int:
        (line,) = [x for x in metrics.splitlines() if x.startswith(name + " ")]
        return int(line.split()[1])

    # a 503 is a request pushed out of the full queue, or one shed while the server was late
    assert counter("rlbench_serve_dropped_total") + counter("rlbench_serve_shed_total") == (
        codes.count(503)
    )
    assert json.loads(get(url + "/healthz"))["status"] == "ok"


def test_a_promoted_version_is_swapped_in_under_load_without_a_failed_request(store, served):
    from rlbench.tracking import registry

    uri = store["uri"]
    if registry.resolve_alias(f"models:/{NAME}@champion", uri) != "1":
        registry.promote(NAME, "1", reason="test start", tracking_uri=uri)
    url = served("--poll-interval", "0.3")
    seen: list[tuple[int, str]] = []
    by_client: list[list[str]] = [[], [], []]  # each client's answers in the order it got them
    stop = threading.Event()

    def client(mine: list[str]) -> None:
        body = json.dumps({"observation": [0.3] * 7}).encode()
        while not stop.is_set():
            code, answer = post(url + "/decide", body)
            version = answer.get("policy", {}).get("version", "")
            seen.append((code, version))
            mine.append(version)

    workers = [threading.Thread(target=client, args=(mine,)) for mine in by_client]
    for w in workers:
        w.start()
    time.sleep(1.0)
    registry.promote(NAME, "2", reason="swap test", tracking_uri=uri)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(v == "2" for _, v in seen[-5:]):
        time.sleep(0.2)
    time.sleep(0.5)
    stop.set()
    for w in workers:
        w.join(timeout=20)
    assert seen and all(code == 200 for code, _ in seen)
    versions = [v for _, v in seen]
    assert versions[0] == "1" and versions[-1] == "2"
    # once swapped, it stays swapped: per client, whose requests follow each other (the shared
    # list interleaves threads, and a client thread starved under load appended its last v1
    # answer after others' v2 ones)
    for mine in by_client:
        after = mine[mine.index("2") :] if "2" in mine else []
        assert "1" not in after, mine


def test_a_version_that_fails_to_load_is_refused_and_the_old_one_serves_on(store, served):
    import mlflow

    from rlbench.tracking import registry
    from rlbench.tracking.client import using_store

    uri = store["uri"]
    if registry.resolve_alias(f"models:/{NAME}@champion", uri) != "1":
        registry.promote(NAME, "1", reason="test start", tracking_uri=uri)
    client = mlflow.MlflowClient(uri)
    # a fresh version of its own (register() would return run 1's existing version)
    logged = registry.log_policy(store["runs"][1], uri)
    with using_store(uri):  # MLflow resolves the version's source through the fluent store
        broken = client.create_model_version(NAME, logged, run_id=store["runs"][1])
    source = client.get_model_version(NAME, broken.version).source  # models:/m-<id>
    stored = client.get_logged_model(source.removeprefix("models:/")).artifact_location
    policy_file = Path(urlparse(stored).path) / "artifacts" / "model.zip"
    assert policy_file.is_file()
    policy_file.write_bytes(b"not a zip")  # the store's own copy: a damaged upload
    with pytest.raises(UserError, match="is not a valid rlbench model"):  # promote loads it
        registry.promote(NAME, broken.version, reason="bad build", tracking_uri=uri)
    url = served("--poll-interval", "0.3")
    # damaged after its promotion (or moved by another MLflow client): the server refuses it
    client.set_registered_model_alias(NAME, "champion", broken.version)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "refused_versions_total 1" not in get(url + "/metrics"):
        time.sleep(0.3)
    assert "rlbench_serve_refused_versions_total 1" in get(url + "/metrics")
    code, answer = post(url + "/decide", json.dumps({"observation": [0.3] * 7}).encode())
    assert code == 200 and answer["policy"]["version"] == "1"
    registry.promote(NAME, "1", reason="undo", tracking_uri=uri)


def test_a_model_that_would_unpickle_is_never_loaded_nor_promoted(store, tmp_path):
    """A pyfunc version logged by other means (a cloudpickled PythonModel) is refused by the
    server, by collection and by promotion, and its pickle is never run."""
    import subprocess

    marker = tmp_path / "PWNED"
    script = f"""
import builtins, mlflow
from mlflow.pyfunc import PythonModel
mlflow.set_tracking_uri({store["uri"]!r})
class Evil(PythonModel):
    def predict(self, context, x, params=None):
        return x
    def __reduce__(self):
        return (builtins.exec, ("open({str(marker)!r}, 'a').write('ran')",))
with mlflow.start_run():
    info = mlflow.pyfunc.log_model(name="policy", python_model=Evil())
print(mlflow.register_model(info.model_uri, {NAME!r}).version)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=store["env"], cwd=tmp_path, check=True)  # fmt: skip
    version = done.stdout.strip().splitlines()[-1]
    marker.unlink(missing_ok=True)  # MLflow's log_model may load what it logged
    from rlbench.offline.collect import policy_from_spec
    from rlbench.serve.server import load_policy
    from rlbench.tracking import registry

    with pytest.raises(UserError, match="is not an rlbench policy"):
        load_policy(f"models:/{NAME}/{version}", store["uri"])
    with pytest.raises(UserError, match="is not an rlbench policy"):
        registry.promote(NAME, version, reason="test", tracking_uri=store["uri"])
    with pytest.raises(UserError, match="is not an rlbench policy"):
        policy_from_spec(f"models:/{NAME}/{version}", "autoscaling", None, 0, store["uri"], [])
    assert not marker.exists()


def test_registration_leaves_the_run_as_it_was(store):
    import mlflow

    from rlbench.tracking import registry

    client = mlflow.MlflowClient(store["uri"])
    before = client.get_run(store["runs"][0]).info
    registry.register(store["runs"][0], "another-name", tracking_uri=store["uri"])
    after = client.get_run(store["runs"][0]).info
    assert (after.status, after.end_time) == (before.status, before.end_time)
    with pytest.raises(UserError, match="without '/' or ':'"):
        registry.register(store["runs"][0], "a/b", tracking_uri=store["uri"])


def test_serve_cli_refuses_an_unknown_model_or_alias_in_one_line(store, capsys):
    """``rlbench-serve`` is ``sys.exit(main())``: its exit code is what ``main`` returns (run
    in this process: three interpreter starts cost more than the rest of the test)."""
    from rlbench.serve.cli import main

    for uri, message in [
        ("models:/nosuch@champion", "no registered model 'nosuch'"),
        (f"models:/{NAME}@nosuchalias", f"{NAME} has no alias 'nosuchalias'"),
        ("runs:/abc/model", "is not a registered model"),
    ]:
        capsys.readouterr()
        assert main([uri, "--tracking-uri", store["uri"], "--port", str(free_port())]) == 2, uri
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and message in lines[0], err


def test_mlflow_models_serve_answers_for_a_registered_policy(store):
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(mlflow_bin), "models", "serve", "-m", f"models:/{NAME}/1", "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port)],
        # MLflow starts `uvicorn` by name: the environment's bin folder must be on PATH
        env={**store["env"], "PATH": f"{mlflow_bin.parent}{os.pathsep}{os.environ['PATH']}"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/invocations"
        body = json.dumps({"inputs": [[0.3] * 7, [0.9] * 7]}).encode()
        deadline = time.monotonic() + 120
        while True:
            try:
                code, answer = post(url, body)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.5)
        assert code == 200, answer
        assert len(answer["predictions"]) == 2
        assert set(answer["predictions"]) <= {0, 1, 2}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_report_names_the_registered_versions_of_its_runs(store, tmp_path):
    from rlbench.results.analysis import load_runs, score_table
    from rlbench.results.document import Document
    from rlbench.results.report import (
        ReportData,
        ReportSettings,
        _registered,
        _registered_section,
    )

    runs = load_runs(tracking_uri=store["uri"])
    data = ReportData(runs=runs, scores=score_table(runs), excluded={})
    data.registered = _registered(data.scores, store["uri"])
    assert {(v.version, v.run_id) for v in data.registered} >= {
        ("1", store["runs"][0]),
        ("2", store["runs"][1]),
    }
    doc = Document()
    _registered_section(doc, data, ReportSettings(tracking_uri=store["uri"]))
    text = doc.markdown()
    assert "## Registered policies" in text
    run = store["runs"][0]
    assert f"`models:/{NAME}/1`" in text
    assert f"[`{run}`](" in text and f"/runs/{run}" in text  # the run id opens its MLflow page


def test_no_alias_names_a_version_for_another_env(store, tmp_path):
    """A gym_scaling policy registered under an autoscaling model became its champion (exit 0)
    and servers refused it, or, with equal shapes, answered the model's clients from another
    env's policy. Every alias move now compares the env the version acts in with the
    champion's."""
    from rlbench.tracking import registry

    done = subprocess.run(
        [sys.executable, "-m", "rlbench.run.main", "env=gym_scaling", "algo=threshold",
         "debug=fast", "train.progress=off", f"tracking.artifact_location={store['root']}/art"],
        cwd=tmp_path, env=store["env"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    run_id = done.stdout.split("mlflow run: ")[1].split()[0]
    if registry.resolve_alias(f"models:/{NAME}@champion", store["uri"]) != "1":
        registry.promote(NAME, "1", reason="a champion that loads", tracking_uri=store["uri"])
    champion = registry.resolve_alias(f"models:/{NAME}@champion", store["uri"])
    with pytest.raises(UserError, match=r"acts in GymScalingCompat\w* \(observations \[5\], "
                                        r"actions \d+\), but the champion, version \d+, in "
                                        r"Autoscaling\w* \(observations \[7\]"):  # fmt: skip
        registry.register(run_id, NAME, reason="wrong env", tracking_uri=store["uri"])
    assert registry.resolve_alias(f"models:/{NAME}@champion", store["uri"]) == champion


def test_registering_a_damaged_run_names_the_runs_artifact(store, tmp_path):
    """The message named the temporary download, deleted by the time a user read it."""
    import mlflow

    from rlbench.tracking import registry, schema

    client = mlflow.MlflowClient(store["uri"])
    source = store["runs"][1]
    config = client.download_artifacts(source, schema.CONFIG_ARTIFACT, str(tmp_path))
    experiment = client.get_run(source).info.experiment_id
    run = client.create_run(experiment, run_name="damaged")
    (tmp_path / schema.MODEL_DIR).mkdir()
    damaged = tmp_path / schema.MODEL_DIR / f"{schema.MODEL_STEM}.zip"
    damaged.write_bytes(b"not a zip")
    client.log_artifact(run.info.run_id, str(damaged), schema.MODEL_DIR)
    client.log_artifact(run.info.run_id, config)
    client.set_terminated(run.info.run_id)
    with pytest.raises(UserError) as err:
        registry.log_policy(run.info.run_id, store["uri"])
    where = f"run {run.info.run_id}'s artifact {schema.MODEL_DIR}/{schema.MODEL_STEM}.zip"
    assert where in str(err.value) and "rlbench-register-" not in str(err.value)


def test_collect_from_a_run_of_another_env_names_the_run_not_a_temporary_file(store, tmp_path):
    """rlbench-collect --policy runs:/<id> in an env the run did not train in: the message named
    /tmp/rlbench-collect-<x>/model.zip, gone when the user read it."""
    from rlbench.offline.cli import collect_command

    run_id = store["runs"][1]
    args = ["--policy", f"runs:/{run_id}", "--episodes", "1", "--out", str(tmp_path / "log"),
            "--tracking-uri", store["uri"], "--env", "recommender"]  # fmt: skip
    with pytest.raises(UserError) as err:
        collect_command(args)
    said = str(err.value)
    assert f"run {run_id}'s model" in said and "rlbench-collect-" not in said, said
