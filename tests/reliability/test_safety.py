"""Safety: our artifacts hold no pickled code, models are loaded only from places the user
names, and the servers we document listen on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import ast
import io
import pickletools
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*ROOT.glob("rlbench/**/*.py"), *ROOT.glob("hydra_plugins/**/*.py")])

# what torch.save writes for a state dict of tensors and plain containers
TORCH_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    *(("torch", f"{kind}Storage") for kind in ("Float", "Double", "Long", "Int", "Byte", "Bool")),
}
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "shelve", "marshal"}


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return f"{dotted(node.func)}()"
    return "?"


def calls(path: Path):
    """``(function called, its keyword arguments as source, innermost enclosing function)``."""
    tree = ast.parse(path.read_text())
    found: dict[int, tuple[str, dict[str, str], str]] = {}
    for outer in ast.walk(tree):  # breadth first: an inner function overwrites its outer one
        if not isinstance(outer, ast.FunctionDef | ast.AsyncFunctionDef | ast.Module):
            continue
        name = getattr(outer, "name", "<module>")
        for node in ast.walk(outer):
            if isinstance(node, ast.Call):
                kwargs = {k.arg: ast.unparse(k.value) for k in node.keywords if k.arg}
                found[id(node)] = (dotted(node.func), kwargs, name)
    return list(found.values())


def test_our_code_never_pickles():
    problems = []
    for path in SOURCES:
        where = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in PICKLE_MODULES for n in names):
                    problems.append(f"{where}: imports {names}")
        for func, kwargs, _ in calls(path):
            last = func.rsplit(".", 1)[-1]
            if func.endswith("torch.load") and kwargs.get("weights_only") != "True":
                problems.append(f"{where}: {func} without weights_only=True")
            if (
                func in ("np.load", "numpy.load", "np.save", "numpy.save")
                and kwargs.get("allow_pickle") != "False"
            ):
                problems.append(f"{where}: {func} without allow_pickle=False")
            if last in ("to_pickle", "read_pickle", "dump", "dumps") and "json" not in func:
                problems.append(f"{where}: {func}")
            if func.endswith("model.save") or func.endswith("model.load"):  # SB3's cloudpickle
                problems.append(f"{where}: {func}")
    assert problems == []


def pickle_globals(data: bytes) -> set[tuple[str, str]]:
    """Every class or function a pickle would import when loaded."""
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            module, _, name = arg.partition(" ")
            found.add((module, name))
        elif op.name == "STACK_GLOBAL":
            found.add((strings[-2], strings[-1]))
        elif isinstance(arg, str):
            strings.append(arg)
    return found


def pickles_in(name: str, data: bytes) -> list[tuple[str, bytes]]:
    """``(where, pickle bytes)`` of every pickle in a file, looking inside zip archives."""
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return [p for m in zf.namelist() for p in pickles_in(f"{name}!{m}", zf.read(m))]
    is_pickle = data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    return [(name, data)] if is_pickle else []


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "qlearning"])
def test_logged_artifacts_and_checkpoints_hold_no_code(algo, cli, mlflow_store, tmp_path):
    done = cli(*mlflow_store.overrides(), f"algo={algo}", "debug=fast", "train.eval_every=512")
    assert done.code == 0, done.err[-2000:]
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix not in (".db", ".lock")]
    models = [p for p in files if p.name.startswith(("model.", "best_model."))]
    assert len(models) >= 2  # the run's folder and its MLflow artifacts
    unexpected = {}
    for path in files:
        for where, data in pickles_in(str(path.relative_to(tmp_path)), path.read_bytes()):
            extra = pickle_globals(data) - TORCH_GLOBALS
            if extra or not where.endswith("data.pkl"):  # only torch's tensor archives
                unexpected[where] = sorted(extra)
    assert unexpected == {}


def test_models_are_loaded_only_from_places_the_user_names():
    """Every place outside the agents package that reads a model file, and why it may.

    train.py resumes from the run's own checkpoint folder, only with ``resume=true``, and with
    ``eval.policy=best`` scores the best checkpoint the job itself wrote there;
    verify.py checks the models of the MLflow runs the user selects (experiment, filter).
    A new place must be added here on purpose.
    """
    readers = ("load_agent", "read_checkpoint", "peek_algo", "torch.load", "agent_class().load")
    found = set()
    for path in SOURCES:
        if "agents" in path.relative_to(ROOT).parts:
            continue
        for func, _, outer in calls(path):
            if func.endswith(readers):
                found.add((str(path.relative_to(ROOT)), outer, func))
    assert found == {
        ("rlbench/run/train.py", "_resume_agent", "agent_class().load"),
        # eval.policy=best: the best checkpoint this same job just wrote, to score it
        ("rlbench/run/train.py", "_load_checkpoint", "agent_class().load"),
        # init_from=PATH: the model file the user (or rlbench-live, the champion's) names
        ("rlbench/run/train.py", "_warm_start", "load_agent"),
        ("rlbench/run/train.py", "_warm_start", "peek_algo"),  # which algorithm the file holds
        # rlbench-live: the champion's own model (from its registered run), read for its algo
        ("rlbench/live/loop.py", "_warm_start_file", "peek_algo"),
        ("rlbench/results/verify.py", "verify_model", "load_agent"),
        # the registry checks that a run's own model loads before it logs it
        ("rlbench/tracking/registry.py", "log_policy", "load_agent"),
        # MLflow loads a registered policy from its own model folder (mlflow.pyfunc users)
        ("rlbench/tracking/policy_model.py", "load_context", "load_agent"),
        # serve, collect, live and promote: a registered version's policy artifact, read by
        # rlbench's loader once the version is checked to be rlbench's form (nothing it stores
        # is unpickled or executed)
        ("rlbench/tracking/registry.py", "load_version_env", "load_agent"),
        # rlbench-collect / rlbench-ope: the model file (--policy PATH) or the run's model
        # (--policy runs:/<id>) the user names as the behaviour or target policy
        ("rlbench/offline/collect.py", "load_policy", "load_agent"),
        ("rlbench/offline/collect.py", "_from_run", "load_agent"),
    }


def test_the_only_network_server_is_rlbench_serve_and_it_binds_localhost_by_default():
    servers = re.compile(
        r"\.bind\(|\.listen\(|serve_forever|make_server|HTTPServer|uvicorn\.(run|Config)\b|"
        r"gunicorn|run_server|subprocess\.\w+\(\[[^\]]*(\"server\"|\"ui\")"
    )
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in SOURCES
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if servers.search(line)
    ]
    # rlbench-serve: a port check (bind, then close) and uvicorn itself; the tracking fork
    # server listens on a Unix socket only (no network), in a folder only its user can open
    assert [h.rpartition(":")[0] for h in hits] == (
        ["rlbench/serve/cli.py"] * 2 + ["rlbench/tracking/forkserver.py"] * 2
    ), hits
    forkserver = (ROOT / "rlbench/tracking/forkserver.py").read_text()
    assert forkserver.count("socket.socket(") == forkserver.count("socket.socket(socket.AF_UNIX")
    assert "st_mode & 0o077" in forkserver and "SO_PEERCRED" in forkserver
    from rlbench.serve.cli import _parser

    args = _parser().parse_args(["models:/x@champion"])
    assert args.host == "127.0.0.1"
    # the processes we leave running: the MLflow helper, spoken to through pipes, and the fork
    # server that forks helpers with MLflow imported (its launcher returns once it listens);
    # and the scripts a user's schedule lists (rlbench-live's scheduler), run as argument lists
    # with a timeout, never through a shell
    popens = sorted((p.name, f) for p in SOURCES for f, _, _ in calls(p) if "Popen" in f)
    assert popens == [("helper.py", "subprocess.Popen"), ("scheduler.py", "subprocess.Popen")]
    scheduler = (ROOT / "rlbench/live/scheduler.py").read_text()
    assert "shell=True" not in scheduler and "os.system" not in scheduler
    launches = [(o, f) for f, _, o in calls(ROOT / "rlbench/tracking/forkserver.py")]
    assert ("_start_server", "subprocess.run") in launches


@pytest.mark.slow
def test_the_servers_we_document_listen_on_localhost_by_default():
    import click
    from mlflow.cli import cli as mlflow_cli

    ctx = click.Context(mlflow_cli)
    for name in ("ui", "server"):
        command = mlflow_cli.get_command(ctx, name)
        (host,) = [p for p in command.params if p.name == "host"]
        assert host.default == "127.0.0.1", (name, host.default)
    dashboard = Path(sys.executable).parent / "optuna-dashboard"
    shown = subprocess.run([dashboard, "--help"], capture_output=True, text=True, timeout=60)
    assert "hostname (default: 127.0.0.1)" in " ".join(shown.stdout.split())


def test_the_scan_sees_a_pickled_object():
    """The check above can fail: a torch blob holding a Python object names its class."""
    from fractions import Fraction

    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2), "ratio": Fraction(1, 3)}, buf)
    (found,) = pickles_in("blob.pt", buf.getvalue())
    assert found[0].endswith("data.pkl")
    assert pickle_globals(found[1]) - TORCH_GLOBALS == {("fractions", "Fraction")}


def test_no_registered_model_is_loaded_through_mlflow_pyfunc():
    """mlflow.pyfunc.load_model unpickles a cloudpickled model or runs a stored code file:
    rlbench reads a version's policy artifact itself (registry.load_version)."""
    hits = [
        (str(path.relative_to(ROOT)), outer)
        for path in SOURCES
        for func, _, outer in calls(path)
        if func.endswith(("pyfunc.load_model", "unwrap_python_model"))
    ]
    imported = [
        str(path.relative_to(ROOT))
        for path in SOURCES
        if re.search(r"from mlflow\.pyfunc import [^\n]*\bload_model\b", path.read_text())
    ]
    assert hits == [] and imported == []
