"""``make demo`` against the 30k-step demo it replaced: the same two commands, side by side.

Issue 21: ``make demo`` at converged budgets (``experiment=quick``, now 100k steps a run) must
take no more wall time than the 30k-step ``experiment=quick`` of commit :data:`REFERENCE`, on
the same machine, and its report must rank PPO first overall, as experiments/autoscaling-
benchmark's does. Both sides run from this ``.venv`` (requirements/constraints.txt is unchanged
since :data:`REFERENCE`): the reference's code from a git worktree put first on ``PYTHONPATH``.
Each side is what ``make demo`` runs, ``rlbench-train experiment=quick`` then ``rlbench-report
benchmark=quick``, in a fresh folder (its own ``outputs/``: new MLflow and Optuna stores),
each run as that commit's pyproject.toml installs the console script (its entry point), timed
from outside; the sides alternate which goes first, :data:`REPEATS` pairs, medians.
Opt-in (``--only demo``): about 12 minutes on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from benchmarks.common import ONE_THREAD, Row, judged, median

REFERENCE = "864b9ff"  # the last commit whose experiment=quick trained 30k steps a run
REPEATS = 2
ROOT = Path(__file__).resolve().parent.parent
COMMANDS = (("rlbench-train", "experiment=quick"), ("rlbench-report", "benchmark=quick"))


def _worktree(folder: Path) -> Path:
    """A checkout of :data:`REFERENCE` (detached, removed with ``folder``)."""
    tree = folder / "reference"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree), REFERENCE],
        check=True, capture_output=True,
    )  # fmt: skip
    return tree


def _script(code: Path, name: str) -> list[str]:
    """The console script ``name`` as ``code``'s pyproject.toml installs it (its entry point)."""
    scripts = tomllib.loads((code / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts[name].partition(":")
    call = f"from {module} import {function}; sys.argv[0] = {name!r}; sys.exit({function}())"
    return [sys.executable, "-c", f"import sys; {call}"]


def _demo(code: Path, folder: Path) -> tuple[float, str]:
    """Wall seconds of both commands with ``code`` first on the path, and the report's text."""
    folder.mkdir(parents=True)
    env = os.environ | ONE_THREAD | {"PYTHONPATH": str(code)}
    start = time.perf_counter()
    for name, arg in COMMANDS:
        subprocess.run([*_script(code, name), arg], check=True, capture_output=True,
                       cwd=folder, env=env)  # fmt: skip
    wall = time.perf_counter() - start
    return wall, (folder / "outputs" / "reports" / "quick" / "report.md").read_text()


def run(quick: bool = False) -> list[Row]:
    repeats = 1 if quick else REPEATS
    walls: dict[str, list[float]] = {"ours": [], "reference": []}
    with tempfile.TemporaryDirectory(prefix="rlbench-demo-") as name:
        tmp = Path(name)
        codes = {"ours": ROOT, "reference": _worktree(tmp)}
        try:
            for i in range(repeats):
                order = ("reference", "ours") if i % 2 == 0 else ("ours", "reference")
                for side in order:
                    wall, report = _demo(codes[side], tmp / f"{side}-{i}")
                    walls[side].append(wall)
                    if side == "ours":
                        first = report.split("\n\n")[1]  # the line under the title
                    print(f"  {side} {i}: {wall:.0f} s", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(codes["reference"])], capture_output=True)  # fmt: skip
    ours, ref = median(walls["ours"]), median(walls["reference"])
    ppo_first = first.startswith("**ppo** is best overall")
    return [
        Row(
            "demo",
            "make demo: experiment=quick at 100k steps a run + its report, wall",
            ours,
            "s",
            reference=f"experiment=quick at 30k steps ({REFERENCE}), same machine",
            reference_value=ref,
            ratio=ref / ours,
            target="<= the 30k demo's wall",
            status=judged(ours <= ref, quick),
            details=walls,
        ),
        Row(
            "demo",
            "make demo's report: PPO first overall (the benchmark's ranking)",
            float(ppo_first),
            "yes",
            reference=first[:160],
            target="PPO first overall",
            status=judged(ppo_first, quick),
        ),
    ]
