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
CONFIGS = {"rlbench-train": "train", "rlbench-report": "report", "rlbench-live": "live"}
CONF_DIRS = {"rlbench-live": "conf_live"}  # the others: conf/
COMMAND = re.compile(
    r"(?:^|[\s/])(rlbench-train|rlbench-report|rlbench-live)(?!-)((?:[^\n#\\]|\\\n)*)"
)


def commands(readme: Path) -> list[tuple[str, list[str]]]:
    """``(program, overrides)`` of every rlbench-train/-report/-live line in the README's code
    blocks."""
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
    for program, overrides in commands(study / "README.md"):
        conf = str(ROOT / CONF_DIRS.get(program, "conf"))
        # a sweep (a=x,y with -m) composes like its first job
        first = [re.sub(r"=([^,\[\]{}()'\"]+),[^\[\]{}()'\"]*$", r"=\1", o) for o in overrides]
        with initialize_config_dir(config_dir=conf, version_base="1.3"):
            cfg = compose(CONFIGS[program], first, return_hydra_config=True)
        assert cfg is not None, f"{study.name}: {program} {' '.join(overrides)}"


def _script(path: Path):
    """Import an experiments/ script as a module (they are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_studies_scripts_compute_their_figures_from_the_runs(mlflow_store, capsys, monkeypatch):
    """metrics.py and convergence.py, which the READMEs quote, on runs whose answers are known:
    per-algorithm means, a paired difference by seed, and the interactions to converge."""
    client = mlflow_store.client()
    exp = client.create_experiment("rlbench", artifact_location=str(mlflow_store.artifact_dir))
    curves = {  # validation curves (steps 1000..5000) and test scores, per algorithm and seed
        "fast": lambda seed: [10, 18, 19, 20, 20],
        "slow": lambda seed: [10, 11, 12, 16, 20],
    }
    for bench, shift in (("study", 0.0), ("ablation", 1.0)):
        for seed in range(3):
            for algo in ("random", *curves):
                run = client.create_run(exp, tags={"benchmark": bench})
                rid = run.info.run_id
                for key, value in (("algo.name", algo), ("env.name", "e"), ("seed", seed)):
                    client.log_param(rid, key, value)
                score = {"random": 10.0, "fast": 20.0 + seed, "slow": 14.0 - seed}[algo]
                client.log_metric(rid, "test/mean_return", score - shift)
                client.log_metric(rid, "test/regret", float(seed))
                if algo != "random":
                    for i, value in enumerate(curves[algo](seed)):
                        client.log_metric(rid, "val/mean_return", value, step=1000 * (i + 1))
                client.set_terminated(rid)
    uri = ["--tracking-uri", mlflow_store.uri]

    metrics = _script(EXPERIMENTS / "metrics.py")
    monkeypatch.setattr(
        "sys.argv",
        ["metrics.py", "--benchmark", "study", "--paired-with", "ablation", *uri,
         "test/mean_return", "test/regret"],
    )  # fmt: skip
    metrics.main()
    out = capsys.readouterr().out
    assert "| fast | 3 | 21.0000 [" in out and "| slow | 3 | 13.0000 [" in out
    assert out.index("| fast |") < out.index("| slow |") < out.index("| random |")  # best first
    assert "| 1.0000 [0.0000, 2.0000] |" in out  # regret: seeds 0, 1, 2
    assert "| fast | 3 | 1.0000 [1.0000, 1.0000] |" in out  # study - ablation, paired by seed

    convergence = _script(EXPERIMENTS / "recommender" / "convergence.py")
    monkeypatch.setattr(
        "sys.argv", ["convergence.py", "--benchmark", "study", "--reference", "slow", *uri]
    )
    convergence.main()
    rows = {line.split(" | ")[0].strip("| "): line for line in capsys.readouterr().out.splitlines()}
    # final level = mean of the last three points; 90% of the way from random (10) to it:
    # fast 19.67 -> 18.7, first reached at 3000; slow 16.0 -> 15.4, reached at 4000
    assert "| 19.67 [19.67, 19.67] | 3000 [3000, 3000] | 2000 [2000, 2000] |" in rows["fast"]
    assert "| 16.00 [16.00, 16.00] | 4000 [4000, 4000] | - |" in rows["slow"]  # no bar for itself
    assert "| 20.00 [20.00, 20.00] |" in rows["slow"]  # its return at the 5000 budget
