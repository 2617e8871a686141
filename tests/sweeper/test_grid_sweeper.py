"""The grid sweeper (``hydra/sweeper=rlbench_grid``): Hydra's grid, checked on a covering set."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from hydra_plugins.rlbench_grid_sweeper.rlbench_grid_sweeper import covering

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_covering_keeps_every_value_in_few_jobs():
    values = {"algo": ["a", "b", "c"], "load": ["x", "y"], "seed": ["0", "1", "2", "3"]}
    batch = [
        [f"{k}={v}" for k, v in zip(values, combo, strict=True)]
        for combo in itertools.product(*values.values())
    ]
    kept = covering(batch)
    assert kept[0] == batch[0] and all(job in batch for job in kept)
    assert {o for job in kept for o in job} == {o for job in batch for o in job}
    assert len(kept) <= sum(len(v) for v in values.values()) < len(batch)
    assert covering([["a=1"], ["a=1"]]) == [["a=1"]]


def test_a_grid_runs_every_combination(run_toy, tmp_path):
    run_toy("--config-name=grid", "x=0,1,2", "y=0,1", "hydra.sweep.dir=grid")
    ran = sorted(
        tuple(yaml.safe_load(p.read_text()))
        for p in (tmp_path / "grid").glob("*/.hydra/overrides.yaml")
    )
    assert ran == sorted((f"x={x}", f"y={y}") for x in range(3) for y in range(2))


def test_a_value_that_cannot_compose_stops_the_grid_before_any_job(run_toy, tmp_path):
    proc = run_toy(
        "--config-name=grid",
        "x=0,1",
        "hydra/job_logging=default,nosuch",
        "hydra.sweep.dir=grid",
        check=False,
    )
    assert proc.returncode != 0 and "nosuch" in proc.stderr
    assert not list((tmp_path / "grid").glob("*/.hydra"))


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_grid_presets_use_it(preset):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={preset}"], return_hydra_config=True)
    assert str(cfg.hydra.mode).endswith("MULTIRUN")
    assert cfg.hydra.sweeper._target_.endswith("rlbench_grid_sweeper.GridSweeper")
