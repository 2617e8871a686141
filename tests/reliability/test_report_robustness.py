"""``rlbench-report`` and ``rlbench-verify`` on stores and inputs that are odd but real.

A corrupt, truncated or foreign store is one ``error:`` line (exit 2) and is left as it was; a
read-only store still gets its report, with a warning that it was not recorded in MLflow; an
experiment of one run gets a report; runs with a seed outside 0..2**63-1 are skipped with a
warning; a report killed mid-write leaves nothing the next report does not remove, and a live
writer's folder is never taken; long phases say what they do. Bad training inputs of the same
round (net_arch, a trace that is not UTF-8, a seed above 2**63-1) are refused up front.
docs/bad-input.md, "Round 2", lists each case with its message.

Reports run in-process through the real console-script path (``rlbench.results.cli.main``);
the read-only store and the kill run the real command as a process.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from conftest import _logging_state, _restore_logging
from reliability_kit import BIN, CliResult, child_env
from test_bad_input import assert_nothing_written, assert_one_clear_line

from rlbench.tracking.schema import CURVE_METRIC, SCORE_METRIC

REPS = "bootstrap.reps=100"


# --------------------------------------------------------------------------- stores
def log_run(client, exp_id: str, *, algo: str, load: str, seed, score: float) -> str:
    """One finished training run as the report reads it (params, final and curve metrics)."""
    from mlflow.entities import Metric, Param

    run = client.create_run(exp_id, run_name=f"{algo}-{load}-s{seed}",
                            tags={"rlbench.run_key": f"{algo}-{load}-{seed}"})  # fmt: skip
    params = {"algo.name": algo, "env.name": "autoscaling", "env.load": load, "seed": seed}
    metrics = [Metric(CURVE_METRIC, score * 2, 0, 1000), Metric(SCORE_METRIC, score, 0, 2000)]
    client.log_batch(run.info.run_id, metrics=metrics,
                     params=[Param(k, str(v)) for k, v in params.items()])  # fmt: skip
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def make_store(template: Path, folder: Path, runs: list[tuple[str, str, object, float]],
               artifact_location: str | None = None) -> str:  # fmt: skip
    """A copy of the migrated template store at ``folder/mlflow.db`` holding ``runs``."""
    from mlflow.tracking import MlflowClient

    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "mlflow.db"
    shutil.copyfile(template, db)
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    location = artifact_location or (folder / "artifacts").as_uri()
    exp_id = client.create_experiment("rlbench", artifact_location=location)
    for algo, load, seed, score in runs:
        log_run(client, exp_id, algo=algo, load=load, seed=seed, score=score)
    return uri


# four seeds each: the fewest with which a permutation test can tell two algorithms apart
TWO_ALGOS = [(algo, "steady", seed, base - seed)
             for algo, base in (("ppo", -5.0), ("random", -40.0)) for seed in range(4)]  # fmt: skip


@pytest.fixture(scope="module")
def good_store(mlflow_template, tmp_path_factory) -> Path:
    """A store with two algorithms x four seeds; tests copy it before damaging it."""
    folder = tmp_path_factory.mktemp("good-store")
    make_store(mlflow_template, folder, TWO_ALGOS)
    return folder / "mlflow.db"


def report_runs(store: Path) -> list[str]:
    """Names of the runs in ``store`` (read with sqlite3: the test must not migrate it)."""
    import sqlite3

    with sqlite3.connect(f"{store.as_uri()}?mode=ro", uri=True) as con:
        return [name for (name,) in con.execute("select name from runs order by name")]


@pytest.fixture
def report(capsys, monkeypatch, tmp_path) -> Callable[..., CliResult]:
    """``report(*overrides)``: ``rlbench-report`` in this process, in ``tmp_path``."""
    from rlbench.results import cli as report_cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["rlbench-report", *args])
        code = 0
        saved = _logging_state()
        try:
            report_cli.main()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        finally:
            _restore_logging(saved)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def verify(capsys, *args: str) -> CliResult:
    from rlbench.results.verify import main

    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


# --------------------------------------------------------------------------- corrupt stores
def _not_a_database(db: Path) -> None:
    db.write_bytes(b"hello, this is not a database\n" * 100)


def _truncated(db: Path) -> None:
    db.write_bytes(db.read_bytes()[:40_000])


def _damaged_pages(db: Path) -> None:
    data = bytearray(db.read_bytes())
    data[4096:] = b"\xa5" * (len(data) - 4096)  # every page but the first overwritten
    db.write_bytes(bytes(data))


def _foreign(db: Path) -> None:
    import sqlite3

    db.unlink()
    with sqlite3.connect(db) as con:
        con.execute("create table invoices (id integer primary key, amount real)")
        con.execute("insert into invoices (amount) values (9.5)")


CORRUPT = {
    "not a database": (_not_a_database, "is not a SQLite database"),
    "truncated": (_truncated, "is truncated (40000 bytes; its header says"),
    "damaged pages": (_damaged_pages, "is damaged ("),
    "another program's SQLite database": (_foreign, "is a SQLite database but not an MLflow "
                                          "store (its tables: invoices)"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CORRUPT))
def test_a_corrupt_store_is_one_line_for_report_and_verify(case, good_store, report, capsys,
                                                           tmp_path):  # fmt: skip
    damage, message = CORRUPT[case]
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(good_store, db)
    damage(db)
    before = db.read_bytes()
    result = report(f"tracking.uri=sqlite:///{db}", REPS)
    assert_one_clear_line(result, message, 2)
    assert "restore it from a backup" in result.err or "point tracking.uri" in result.err
    assert not (tmp_path / "outputs").exists()  # no report folder, not even a temporary one
    result = verify(capsys, "--tracking-uri", f"sqlite:///{db}")
    assert_one_clear_line(result, message, 2)
    assert db.read_bytes() == before  # neither command migrated or repaired it
    assert sorted(p.name for p in db.parent.iterdir()) == ["mlflow.db"]


# --------------------------------------------------------------------------- read-only store
def _drop_file_override() -> None:
    """In the child: file permissions apply to it even when it runs as root (the bounding set
    loses CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so the exec'd program never has them)."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_read_only_store_still_gets_its_report(good_store, tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    db = folder / "mlflow.db"
    shutil.copyfile(good_store, db)
    before = report_runs(db)
    db.chmod(0o444)
    folder.chmod(0o555)
    try:
        proc = subprocess.run(
            [str(BIN / "rlbench-report"), f"tracking.uri=sqlite:///{db}", REPS],
            cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=300,
            preexec_fn=_drop_file_override,
        )  # fmt: skip
    finally:
        folder.chmod(0o755)
        db.chmod(0o644)
    assert proc.returncode == 0, proc.stderr[-2000:]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: the report is written but not recorded in MLflow: the MLflow store is "
        f"read-only (cannot write {db}) (log_to_mlflow=false skips recording)"
    ], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "error:" not in proc.stderr
    text = (tmp_path / "outputs" / "reports" / "rlbench" / "report.md").read_text()
    assert "**ppo** wins" in text and "MLflow run `" not in text
    assert report_runs(db) == before


def test_a_store_that_refuses_the_report_files_still_gets_its_report(mlflow_template, report,
                                                                    tmp_path):  # fmt: skip
    """The run opens, its artifacts cannot be written: the run ends FAILED, the report stays,
    and it does not name that run."""
    (tmp_path / "a_file").write_text("not a folder\n")
    uri = make_store(mlflow_template, tmp_path / "store", TWO_ALGOS,
                     artifact_location=(tmp_path / "a_file" / "art").as_uri())  # fmt: skip
    result = report(f"tracking.uri={uri}", REPS)
    assert result.code == 0, result.err[-2000:]
    warnings = [line for line in result.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, result.err
    assert warnings[0].startswith(
        "warning: the report is written but not recorded in MLflow: logging it to run "
    )
    assert warnings[0].endswith("(log_to_mlflow=false skips recording)")
    text = (tmp_path / "outputs" / "reports" / "rlbench" / "report.md").read_text()
    assert "MLflow run `" not in text
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("rlbench")
    reports = client.search_runs([exp.experiment_id], "tags.`rlbench.kind` = 'report'")
    assert [r.info.status for r in reports] == ["FAILED"]


# --------------------------------------------------------------------------- seeds
def test_runs_with_seeds_outside_the_range_are_skipped_with_a_warning(mlflow_template, report,
                                                                       tmp_path):  # fmt: skip
    bad = [("ppo", "steady", 2**63, -1.0), ("ppo", "steady", -1, -2.0),
           ("random", "steady", 10**30, -3.0)]  # fmt: skip
    largest = [("random", "steady", 2**63 - 1, -41.0)]  # the largest seed is a seed
    uri = make_store(mlflow_template, tmp_path / "store", TWO_ALGOS + bad + largest)
    result = report(f"tracking.uri={uri}", REPS)
    assert result.code == 0, result.err[-2000:]
    warnings = sorted(line for line in result.err.splitlines() if line.startswith("warning: "))
    assert len(warnings) == 3, result.err
    for seed in (2**63, -1, 10**30):
        assert any(f"s{seed}): its seed {seed} is not an integer in 0..2**63-1" in w
                   for w in warnings), (seed, warnings)  # fmt: skip
    out = tmp_path / "outputs" / "reports" / "rlbench"
    scores = pd.read_csv(out / "scores.csv")
    assert sorted(int(s) for s in scores["seed"]) == [0, 0, 1, 1, 2, 2, 3, 3, 2**63 - 1]
    assert "seed outside 0..2**63-1" in (out / "report.md").read_text()


# --------------------------------------------------------------------------- one run
def test_an_experiment_of_one_run_gets_a_report(mlflow_template, report, tmp_path):
    uri = make_store(mlflow_template, tmp_path / "store", [("ppo", "steady", 0, -5.0)])
    result = report(f"tracking.uri={uri}", REPS)
    assert result.code == 0, result.err[-2000:]
    assert "error" not in result.err
    text = (tmp_path / "outputs" / "reports" / "rlbench" / "report.md").read_text()
    assert "- **steady**: only **ppo** was run (IQM return -5.000 [-5.000, -5.000] (1 run))" in text
    assert "No overall ranking: it needs two algorithms, and these runs have one (ppo)." in text
    assert "it needs two algorithms on one load pattern" in text  # probability of improvement
    assert "needs at least 4 runs of an algorithm on a load pattern" in text  # outliers
    assert "fewer than 3 runs for ppo" in text  # ties need seeds
    assert "## Learning curves" in text and "## Decisions" in text


# --------------------------------------------------------------------------- output folders
@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("outputs", "holds files that are not an rlbench report (mlflow.db"),  # the store's folder
        ("mydocs", "holds files that are not an rlbench report (thesis.tex)"),
        ("afile", "is not a folder"),
        ("afile/sub", "cannot create a folder under"),
    ],
)
def test_a_report_never_replaces_a_folder_that_is_not_a_report(
    good_store, report, tmp_path, target, message
):
    """A report replaces its folder whole: a store's folder, someone's documents or a file at
    ``output_dir`` is refused (one line, exit 2) and left exactly as it was."""
    (tmp_path / "outputs").mkdir()
    store = shutil.copy(good_store, tmp_path / "outputs" / "mlflow.db")
    (tmp_path / "mydocs").mkdir()
    (tmp_path / "mydocs" / "thesis.tex").write_text("important\n")
    (tmp_path / "afile").write_text("precious\n")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    result = report(f"tracking.uri=sqlite:///{store}", f"output_dir={target}", REPS)
    assert_one_clear_line(result, message, 2)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "mydocs" / "thesis.tex").read_text() == "important\n"
    assert (tmp_path / "afile").read_text() == "precious\n"


def test_a_report_replaces_an_earlier_report_and_is_readable_by_others(
    good_store, report, tmp_path
):
    store = f"tracking.uri=sqlite:///{good_store}"
    for _ in range(2):
        result = report(store, "output_dir=out/r", "log_to_mlflow=false", REPS)
        assert result.code == 0, result.err[-2000:]
    assert (tmp_path / "out" / "r" / "report.md").is_file()
    assert (tmp_path / "out" / "r").stat().st_mode & 0o055 == 0o055  # group/others may read
    # a file the user added to the report folder, even one named like a report's: refused
    (tmp_path / "out" / "r" / "notes.md").write_text("mine\n")
    refused = report(store, "output_dir=out/r", "log_to_mlflow=false", REPS)
    assert_one_clear_line(refused, "holds files that are not an rlbench report (notes.md)", 2)
    assert (tmp_path / "out" / "r" / "notes.md").read_text() == "mine\n"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("name=..", "name='..': use letters"),
        ("min_seeds=abc", "min_seeds must be an integer, got 'abc'"),
        ("min_seeds=-1", "min_seeds must be an integer >= 1, got -1"),
        ("log_to_mlflow=maybe", "log_to_mlflow must be true or false"),
    ],
)
def test_report_settings_of_the_wrong_kind_are_one_line(good_store, report, setting, message):
    result = report(f"tracking.uri=sqlite:///{good_store}", setting, REPS)
    assert_one_clear_line(result, message, 2)


# --------------------------------------------------------------------------- leftovers
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


LIVE_WRITER = """
import fcntl, os, sys, time
path = sys.argv[1] + f"{os.getpid()}-livewrtr"
os.mkdir(path)
fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(fd, fcntl.LOCK_EX)
print(path, flush=True)
time.sleep(120)
"""


def test_leftovers_of_killed_reports_are_removed_but_not_a_live_writers(good_store, report,
                                                                        tmp_path):  # fmt: skip
    reports = tmp_path / "outputs" / "reports"
    reports.mkdir(parents=True)
    dead = _dead_pid()
    leftovers = [reports / name for name in (
        f".rlbench.tmp-{dead}-abcd1234", ".rlbench.tmp-k3j2h1g0", f".rlbench.old-{dead}",
        f".other.tmp-{dead}-zzzz9999")]  # fmt: skip
    for folder in leftovers:
        folder.mkdir()
        (folder / "report.md").write_text("half a report")
    unrelated = reports / ".other.tmp-k3j2h1g0"  # another report's, no writer named: kept
    unrelated.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", LIVE_WRITER, str(reports / ".rlbench.tmp-")],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        live = Path(writer.stdout.readline().strip())
        assert live.is_dir()
        result = report(f"tracking.uri=sqlite:///{good_store}", REPS, "log_to_mlflow=false")
        assert result.code == 0, result.err[-2000:]
        assert [p for p in leftovers if p.exists()] == []
        assert live.is_dir() and unrelated.is_dir()
    finally:
        writer.kill()
        writer.wait()
    assert (reports / "rlbench" / "report.md").is_file()
    hidden = sorted(p.name for p in reports.iterdir() if p.name.startswith("."))
    assert hidden == sorted([live.name, unrelated.name])


def test_a_report_killed_mid_write_leaves_nothing_after_the_next(good_store, report, tmp_path):
    reports = tmp_path / "outputs" / "reports"
    proc = subprocess.Popen(
        [str(BIN / "rlbench-report"), f"tracking.uri=sqlite:///{good_store}", REPS,
         "log_to_mlflow=false"],
        cwd=tmp_path, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not list(reports.glob(".rlbench.tmp-*")):
        assert proc.poll() is None, "the report ended before writing"
        assert time.monotonic() < deadline, "the report never started writing"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(reports.glob(".rlbench.tmp-*"))  # what a kill leaves
    result = report(f"tracking.uri=sqlite:///{good_store}", REPS, "log_to_mlflow=false")
    assert result.code == 0, result.err[-2000:]
    assert sorted(p.name for p in reports.iterdir()) == ["rlbench"]


# --------------------------------------------------------------------------- long phases
def test_long_phases_say_what_they_do(good_store, report, capsys, monkeypatch):
    from rlbench.results import progress

    monkeypatch.setattr(progress, "SLOW_AFTER_S", 0.0)
    result = report(f"tracking.uri=sqlite:///{good_store}", REPS, "log_to_mlflow=false")
    assert result.code == 0, result.err[-2000:]
    assert "loading the runs of experiment 'rlbench' ... (still running after 0 s)" in result.err
    assert "drawing the figures ... (still running after" in result.err
    result = verify(capsys, "--tracking-uri", f"sqlite:///{good_store}")
    assert "loading the runs of experiment 'rlbench' ... (still running after" in result.err


# --------------------------------------------------------------------------- training inputs
TRAIN_CASES = {
    "net_arch of names": (["algo=ppo", "algo.policy_kwargs.net_arch=[a,b]"],
                          "algo.policy_kwargs.net_arch must be a list of layer widths, e.g. "
                          "algo.policy_kwargs.net_arch=[64,64]"),
    "net_arch of a fraction": (["algo=dqn", "algo.policy_kwargs.net_arch=[64,1.5]"],
                               "; got [64, 1.5]"),
    "net_arch dict of names": (["algo=ppo", "~algo.policy_kwargs.net_arch",
                                "+algo.policy_kwargs.net_arch={pi:[x],vf:[64]}"],
                               "algo.policy_kwargs.net_arch.pi must be a list of layer widths"),
    "seed above 2**63-1": (["seed=9223372036854775808"],
                           "seed must be an integer from 0 to 2**63-1 (9223372036854775807), "
                           "got 9223372036854775808"),
    "trace that is not UTF-8": (["env.load=trace", "env.trace_path={tmp}/latin1.csv"],
                                "trace_path: {tmp}/latin1.csv is not UTF-8 text: row 3, byte 13 "
                                "is 0xe9"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_odd_training_inputs_are_refused_up_front(case, cli, mlflow_store, tmp_path):
    overrides, message = TRAIN_CASES[case]
    (tmp_path / "latin1.csv").write_bytes(b"requests\n10\n2\xe90\n30\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in overrides]
    result = cli(*args, *mlflow_store.overrides(), "debug=fast")
    assert_one_clear_line(result, message.replace("{tmp}", str(tmp_path)), 2)
    assert_nothing_written(mlflow_store, tmp_path)
