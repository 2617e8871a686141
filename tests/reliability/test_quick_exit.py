"""The installed commands end with ``rlbench.cli.console``'s quick exit: it must still do what
an interpreter's exit does for the user (exit code, output, atexit work, other threads)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from rlbench import cli

out = Path(sys.argv[1])

def main():
    atexit.register(lambda: out.joinpath("atexit").write_text("ran"))
    sys.stdout.write("partial line, never flushed by main")  # buffered: a pipe, not a tty
    if "thread" in sys.argv:
        def late():
            time.sleep(0.5)
            out.joinpath("thread").write_text("finished")
        threading.Thread(target=late).start()
    if "message" in sys.argv:
        sys.exit("something went wrong")
    return int(sys.argv[2])

cli.console(main)
"""


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


@pytest.mark.parametrize("code", ["0", "3"])
def test_exit_code_output_and_atexit_survive(tmp_path: Path, code: str) -> None:
    done = _run(tmp_path, code)
    assert done.returncode == int(code), done.stderr
    assert done.stdout == "partial line, never flushed by main"
    assert (tmp_path / "atexit").read_text() == "ran"


def test_a_message_exit_prints_it_and_exits_1(tmp_path: Path) -> None:
    done = _run(tmp_path, "0", "message")
    assert done.returncode == 1
    assert done.stderr.strip() == "something went wrong"
    assert (tmp_path / "atexit").read_text() == "ran"


def test_a_running_thread_is_waited_for(tmp_path: Path) -> None:
    done = _run(tmp_path, "0", "thread")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "thread").read_text() == "finished"
    assert (tmp_path / "atexit").read_text() == "ran"


def test_the_heavy_commands_are_installed_with_it() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name in ("rlbench-train", "rlbench-report", "rlbench-verify", "rlbench-forecast"):
        module, _, function = scripts[name].partition(":")
        assert function == "console", name
        source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
        assert "cli.console(main)" in source, name
