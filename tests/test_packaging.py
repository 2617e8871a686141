"""A non-editable install works: the wheel carries every file the commands read at run time, and
the code finds its configs both in a checkout and in site-packages.

``make setup`` installs rlbench editable, which reads the top-level ``conf/`` and ``conf_live/``;
``pip install .`` used to build a wheel without them, so every command failed with Hydra's
"Primary config directory not found".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from rlbench import config

ROOT = Path(__file__).resolve().parents[1]
#: what a build reads: copied to a temporary folder, so that no build/ or egg-info lands in the
#: checkout and no stale build/lib of an earlier build slips into the wheel
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "rlbench", "hydra_plugins", "conf",
                "conf_live")  # fmt: skip
#: data read at run time (checkout path -> path in the wheel): the Hydra configs and the traces
RUNTIME_DATA = {"conf": "rlbench/conf", "conf_live": "rlbench/conf_live",
                "rlbench/envs/data": "rlbench/envs/data"}  # fmt: skip
BUILD_SECONDS = 15


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``pip install .`` would install, built offline from a copy of the sources."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*cmd, "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.perf_counter() - start < BUILD_SECONDS
    (built,) = (tmp / "dist").glob("rlbench-*.whl")
    return built


@pytest.mark.slow
def test_wheel_holds_every_runtime_file_where_the_lookup_expects_it(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for source, target in RUNTIME_DATA.items():
            files = files_under(ROOT / source)
            assert files, source
            for file in files:
                name = f"{target}/{file.relative_to(ROOT / source).as_posix()}"
                assert name in names, f"{name} is missing from {wheel.name}"
                assert zf.read(name) == file.read_bytes(), name
        for plugin in files_under(ROOT / "hydra_plugins"):
            assert plugin.relative_to(ROOT).as_posix() in names


@pytest.mark.slow
def test_installed_wheel_composes_its_configs_outside_the_checkout(
    wheel: Path, tmp_path: Path
) -> None:
    """The wheel unpacked as pip lays it out in site-packages: rlbench-train and rlbench-live
    compose their configs from a folder that is not the checkout."""
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = (
        "import rlbench.config as c; print(c.__file__); print(c.CONF_DIR); print(c.CONF_LIVE_DIR)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=work, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        str(site / "rlbench" / "config.py"),
        str(site / "rlbench" / "conf"),
        str(site / "rlbench" / "conf_live"),
    ]
    for module, group in (
        ("rlbench.run.main:console", "algo:"),
        ("rlbench.live.cli:main", "source:"),
    ):
        name, _, function = module.partition(":")
        script = f"import sys; from {name} import {function}; sys.exit({function}())"
        done = subprocess.run(
            [sys.executable, "-c", script, "--help"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert group in done.stdout, done.stdout

    # the code's name outside git covers rlbench's files only: another distribution's Hydra
    # plugin or top-level conf/ beside it in site-packages does not change it
    digest = "from rlbench.tracking.provenance import source_digest; print(source_digest())"

    def code_digest() -> str:
        done = subprocess.run(
            [sys.executable, "-c", digest], cwd=work, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    before = code_digest()
    (site / "hydra_plugins" / "other_plugin").mkdir()
    (site / "hydra_plugins" / "other_plugin" / "plugin.py").write_text("X = 1\n")
    (site / "conf").mkdir()
    (site / "conf" / "other.yaml").write_text("x: 1\n")
    assert code_digest() == before
    with (site / "rlbench" / "conf" / "algo" / "ppo.yaml").open("a") as f:
        f.write("# edited\n")
    assert code_digest() != before


def test_config_dir_prefers_the_copy_a_wheel_ships_in_the_package(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    (site / "rlbench" / "conf").mkdir(parents=True)
    (site / "conf").mkdir()  # another distribution's top-level conf/ must not be read
    assert config.config_dir("conf", site / "rlbench") == str(site / "rlbench" / "conf")


def test_config_dir_in_a_checkout_is_the_top_level_folder(tmp_path: Path) -> None:
    (tmp_path / "rlbench").mkdir()
    (tmp_path / "conf_live").mkdir()
    assert config.config_dir("conf_live", tmp_path / "rlbench") == str(tmp_path / "conf_live")
    # the checkout (and make setup's editable install) keeps reading the folders users edit
    assert (ROOT / "rlbench" / "config.py").resolve() == Path(config.__file__).resolve()
    assert str(ROOT / "conf") == config.CONF_DIR
    assert str(ROOT / "conf_live") == config.CONF_LIVE_DIR
