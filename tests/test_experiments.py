"""The written studies under experiments/: each has a README, the index names each, and every
rlbench command a README gives composes (what ``--cfg job`` checks), so a reader can rerun it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
STUDIES = sorted(p for p in EXPERIMENTS.iterdir() if p.is_dir())
CONFIGS = {"rlbench-train": "train", "rlbench-report": "report"}
COMMAND = re.compile(r"(?:^|[\s/])(rlbench-train|rlbench-report)((?:[^\n#\\]|\\\n)*)")


def commands(readme: Path) -> list[tuple[str, list[str]]]:
    """``(program, overrides)`` of every rlbench-train/-report line in the README's code blocks."""
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme.read_text(), flags=re.S)
    found = []
    for block in blocks:
        for program, rest in COMMAND.findall(block):
            words = shlex.split(rest.replace("\\\n", " "))
            found.append((program, [w for w in words if "=" in w and not w.startswith("-")]))
    return found


def test_every_study_has_a_readme_and_the_index_names_it():
    index = (EXPERIMENTS / "README.md").read_text()
    assert STUDIES
    for study in STUDIES:
        readme = study / "README.md"
        assert readme.is_file(), f"{study.name} has no README.md"
        assert readme.read_text().startswith("# "), f"{readme} has no title"
        assert f"]({study.name}/" in index, f"experiments/README.md does not link {study.name}"


@pytest.mark.parametrize("study", STUDIES, ids=lambda p: p.name)
def test_every_command_in_a_readme_composes(study):
    conf = str(ROOT / "conf")
    for program, overrides in commands(study / "README.md"):
        # a sweep (a=x,y with -m) composes like its first job
        first = [re.sub(r"=([^,\[\]{}()'\"]+),[^\[\]{}()'\"]*$", r"=\1", o) for o in overrides]
        with initialize_config_dir(config_dir=conf, version_base="1.3"):
            cfg = compose(CONFIGS[program], first, return_hydra_config=True)
        assert cfg is not None, f"{study.name}: {program} {' '.join(overrides)}"
