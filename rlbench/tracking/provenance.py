"""Where a result came from: git commit and dirty flag, package versions, host, Hydra overrides.

:func:`provenance_tags` records them as MLflow tags on every run of every command (the tracker
adds them when it starts a run), so that a number in a report can be traced back to the code,
the libraries and the command that produced it; :func:`run_tags` adds a training run's seed,
device and Hydra overrides. Nothing here imports
the packages it reports on (versions come from installed metadata): a few milliseconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from rlbench.tracking import schema

# distribution name -> tag suffix; the libraries whose versions change results
PACKAGES: dict[str, str] = {
    "rlbench": "rlbench",
    "torch": "torch",
    "stable-baselines3": "sb3",
    "gymnasium": "gymnasium",
    "mlflow": "mlflow",
    "optuna": "optuna",
    "numpy": "numpy",
    "scipy": "scipy",
    "pandas": "pandas",
    "hydra-core": "hydra",
    "omegaconf": "omegaconf",
}
#: where rlbench's code lives: the package, its own Hydra plugins (site-packages'
#: ``hydra_plugins/`` holds other distributions' too) and its configs (inside the package when
#: installed from a wheel, beside it in a checkout)
SOURCE_ROOT = Path(__file__).resolve().parents[2]
SOURCE_PARTS = (
    "rlbench",
    "hydra_plugins/rlbench_grid_sweeper",
    "hydra_plugins/rlbench_optuna_sweeper",
    *(() if (SOURCE_ROOT / "rlbench" / "conf").is_dir() else ("conf", "conf_live")),
)
SOURCE_SUFFIXES = (".py", ".yaml", ".csv", ".json")  # code, configs and bundled data (traces)


def _git(repo: Path, *args: str) -> str | None:
    """Output of one git command in ``repo``, or None when git or the repository is missing."""
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(repo: str | Path | None = None) -> tuple[str, str]:
    """``(commit, dirty)`` of the git checkout holding ``repo``.

    ``repo`` defaults to the checkout that holds the rlbench sources (the code that ran; read
    once per process). Never the working directory: an installed rlbench run from a user's own
    repository used to be recorded as that repository's commit. ``commit`` is ``"unknown"``
    outside a repository or before the first commit; ``dirty`` is ``"true"`` when tracked files
    differ from that commit (untracked files, e.g. ``outputs/``, do not count), ``"false"`` when
    clean, ``"unknown"`` without git.
    """
    if repo is None:
        return _own_git_state()
    return _git_state(Path(repo))


@cache
def _own_git_state() -> tuple[str, str]:
    here = Path(__file__).resolve().parent
    top = _git(here, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != SOURCE_ROOT:  # rlbench is not this checkout's own
        return "unknown", "unknown"
    return _git_state(here)


def _git_state(repo: Path) -> tuple[str, str]:
    commit = _git(repo, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if not commit:
        return "unknown", "unknown"
    changes = _git(repo, "status", "--porcelain", "--untracked-files=no")
    if changes is None:
        return commit, "unknown"
    return commit, "true" if changes else "false"


def code_version(commit: str | None = None, dirty: str | None = None) -> str | None:
    """One string for the code that makes a run, or None when it cannot be named.

    The commit of a clean checkout; ``rlbench==<version>`` for an installed package outside git;
    None for a checkout with uncommitted changes (two runs of it may have run different code).
    ``resume=true`` reuses a finished run only when its code has the same name as ours.
    """
    if commit is None or dirty is None:
        commit, dirty = git_state()
    if commit == "unknown":
        try:
            version = metadata.version("rlbench")
        except metadata.PackageNotFoundError:
            version = "unknown"
        return f"rlbench=={version}+{source_digest()[:12]}"
    return commit if dirty == "false" else None


@cache
def source_digest() -> str:
    """SHA-256 over rlbench's own files (:data:`SOURCE_PARTS`): names the code outside git,
    where an edited copy keeps the installed version number (a few milliseconds)."""
    files = [
        path
        for part in SOURCE_PARTS
        for path in sorted((SOURCE_ROOT / part).rglob("*"))
        if path.suffix in SOURCE_SUFFIXES and path.is_file()
    ]
    return files_sha256(files, SOURCE_ROOT)


def files_sha256(files: Iterable[Path], root: Path | None = None) -> str:
    """SHA-256 over ``files`` in the order given: each file's name relative to ``root`` (none
    without a root) and its bytes, each followed by a NUL. The code's digest and the digests
    of a run's input files (:mod:`rlbench.run.inputs`) are both this."""
    digest = hashlib.sha256()
    for file in files:
        if root is not None:
            digest.update(str(file.relative_to(root)).encode() + b"\0")
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


@cache
def package_versions() -> dict[str, str]:
    """Installed versions of Python and the result-relevant libraries (``"missing"`` if absent)."""
    versions = {"python": platform.python_version()}
    for dist, name in PACKAGES.items():
        try:
            versions[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def version_tags() -> dict[str, str]:
    """``version.<library>`` tags: what ``resume=true`` compares before reusing a run."""
    return {schema.VERSION_TAG_PREFIX + name: v for name, v in package_versions().items()}


def git_tags(commit: str | None = None, dirty: str | None = None) -> dict[str, str]:
    """``git.commit`` and ``git.dirty`` of the code that ran (see :func:`git_state`)."""
    if commit is None or dirty is None:
        commit, dirty = git_state()
    return {schema.GIT_COMMIT_TAG: commit, schema.GIT_DIRTY_TAG: dirty}


def hostname() -> str:
    """This machine's name, as the runs table shows where a run was made."""
    return socket.gethostname()


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), or None if there is no such process.

    A pid alone is reused by later processes; the pair (pid, start time) is not.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:  # no /proc (macOS): existence only
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""
    return stat.rpartition(")")[2].split()[19]  # field 22, counted after the command name


def process_tag(pid: int | None = None) -> str:
    """``"<pid>:<start time>"`` of this (or ``pid``'s) process: who owns a run or a claim."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_start_time(pid) or ''}"


def process_alive(tag: str) -> bool:
    """Whether the process a :func:`process_tag` (or a bare pid) names is still running here."""
    pid_text, _, started = str(tag).partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return True  # not ours to judge
    now = _start_time(pid)
    return now is not None and (not started or not now or now == started)


def _hydra_tags() -> dict[str, str]:
    """Overrides, chosen options and output dir of the current Hydra job, if there is one."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:
        return {}
    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    fields: dict[str, Callable[[], str]] = {
        schema.HYDRA_OVERRIDES_TAG: lambda: " ".join(hc.overrides.task),
        schema.HYDRA_CHOICES_TAG: lambda: " ".join(
            f"{group}={option}"
            for group, option in hc.runtime.choices.items()
            if option is not None and not group.startswith("hydra")
        ),
        schema.HYDRA_OUTPUT_DIR_TAG: lambda: str(hc.runtime.output_dir),
        # the algo option the user chose (ppo_seed is algo.name ppo with other settings):
        # reports compare presets, not only algorithm classes
        schema.ALGO_PRESET_TAG: lambda: str(hc.runtime.choices["algo"]),
    }
    if hc.mode == RunMode.MULTIRUN:
        fields[schema.HYDRA_JOB_NUM_TAG] = lambda: str(hc.job.num)
    tags = {}
    for key, read in fields.items():
        with contextlib.suppress(Exception):  # unset outside @hydra.main (compose API)
            tags[key] = read()
    return tags


def provenance_tags() -> dict[str, str]:
    """What every MLflow run of every command records about the code that made it: git commit
    and dirty flag, the code's name (:func:`code_version`), library versions, host, user and
    command (MLflow's own keys, so its UI shows them)."""
    import getpass

    commit, dirty = git_state()
    tags = git_tags(commit, dirty) | {schema.HOST_TAG: hostname()}
    code = code_version(commit, dirty)
    if code is not None:
        tags[schema.CODE_TAG] = code
    tags |= version_tags()
    source = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    tags[schema.SOURCE_NAME_TAG] = source
    tags[schema.SOURCE_TYPE_TAG] = "LOCAL"
    if commit != "unknown":
        tags[schema.SOURCE_COMMIT_TAG] = commit
    with contextlib.suppress(Exception):
        tags[schema.USER_TAG] = getpass.getuser()
    return tags


def run_tags(cfg: Any, device: str) -> dict[str, str]:
    """A training run's tags: :func:`provenance_tags`, seed, device, Hydra overrides."""
    tags = provenance_tags() | {schema.DEVICE_TAG: str(device)}
    seed = cfg.get("seed")
    if seed is not None:
        tags[schema.SEED_TAG] = str(seed)
    return tags | _hydra_tags()
