"""The whole ``rlbench-train`` command against the whole plain-SB3 script the seed project ran.

Issue 21's comparison: ``rlbench-train env=autoscaling algo=ppo|dqn train.total_steps=100000
tracking.enabled=false`` (our defaults, 8 batched copies) as a fresh process, against a fresh
``python -m benchmarks.seed_script ppo|dqn <seed> <steps>`` process: stable-baselines3 used
directly with the seed's settings (``conf/algo/<algo>_seed.yaml``, SB3's defaults) on a
``DummyVecEnv`` of one ``gymnasium.make`` environment, then the same held-out evaluation. Both
are timed from outside, imports and all, with one torch/BLAS thread; they alternate which
goes first per seed. Both end with 10 deterministic held-out episodes on the same seeds; ours
also validates 5 episodes every 10k steps (work the script does not do). The script reads its
settings through Hydra's compose as benchmarks/training.py does (~0.3 s it would not need).
Targets: PPO >= 8x, DQN >= 4x, each at no worse mean held-out return over >= 3 seeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ONE_THREAD, Row, judged, mean, rlbench_train
from rlbench.tracking import schema

TARGETS = {"ppo": 8.0, "dqn": 4.0}
ROOT = Path(__file__).resolve().parent.parent


def _script(algo: str, seed: int, steps: int) -> tuple[float, float]:
    """Wall seconds and held-out return of the plain-SB3 script as a process of its own."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.seed_script", algo, str(seed), str(steps)],
        check=True, capture_output=True, text=True, cwd=ROOT, env=os.environ | ONE_THREAD,
    )  # fmt: skip
    wall = time.perf_counter() - start
    return wall, float(json.loads(done.stdout.strip().splitlines()[-1])["return"])


def _ours(algo: str, seed: int, steps: int, tmp: Path) -> tuple[float, float]:
    """Wall seconds and held-out return of one whole ``rlbench-train`` command."""
    run_dir = tmp / f"{algo}-{seed}"
    wall, _ = rlbench_train(
        ["env=autoscaling", f"algo={algo}", f"seed={seed}", f"train.total_steps={steps}",
         "tracking.enabled=false", "train.progress=off", f"hydra.run.dir={run_dir}",
         f"train.checkpoint_dir={tmp / 'checkpoints'}"],
        tmp,
    )  # fmt: skip
    metrics = json.loads((run_dir / schema.EVAL_METRICS_FILE).read_text())
    return wall, float(metrics[schema.SCORE_METRIC])


def run(quick: bool = False, seeds: int = 3) -> list[Row]:
    steps = 20_000 if quick else 100_000
    seed_list = list(range(1 if quick else max(seeds, 3)))
    rows = []
    with tempfile.TemporaryDirectory(prefix="rlbench-seed-script-") as name:
        for algo in ("ppo", "dqn"):
            found: dict[str, dict[str, list[float]]] = {
                side: {"seconds": [], "return": []} for side in ("ours", "script")
            }
            for seed in seed_list:
                sides = [("ours", _ours), ("script", None)]
                for side, _ in sides if seed % 2 == 0 else sides[::-1]:
                    if side == "ours":
                        wall, ret = _ours(algo, seed, steps, Path(name))
                    else:
                        wall, ret = _script(algo, seed, steps)
                    found[side]["seconds"].append(wall)
                    found[side]["return"].append(ret)
                    print(f"  {algo} {side:6s} seed {seed}: {wall:6.1f} s, return {ret:.1f}",
                          flush=True)  # fmt: skip
            rows += _rows(algo, steps, seed_list, found, quick)
    return rows


def _rows(
    algo: str, steps: int, seeds: list[int], found: dict[str, dict[str, list[float]]], quick: bool
) -> list[Row]:
    ours, script = found["ours"], found["script"]
    ratio = mean(script["seconds"]) / mean(ours["seconds"])
    label = f"{algo.upper()} {steps // 1000}k, whole command vs whole script"
    details = {"seeds": seeds, "steps": steps, **{
        f"{side}_{key}": found[side][key] for side in found for key in ("seconds", "return")
    }}  # fmt: skip
    return [
        Row(
            "seed-script",
            f"{label}: rlbench-train wall (mean of {len(seeds)} seeds)",
            mean(ours["seconds"]),
            "s",
            reference=f"plain SB3 script, {algo}_seed, DummyVecEnv of 1",
            reference_value=mean(script["seconds"]),
            ratio=ratio,
            target=f">= {TARGETS[algo]:.0f}x",
            status=judged(ratio >= TARGETS[algo], quick),
            details=details,
        ),
        Row(
            "seed-script",
            f"{label}: held-out return (mean of {len(seeds)} seeds)",
            mean(ours["return"]),
            "return",
            reference=f"plain SB3 script, {algo}_seed",
            reference_value=mean(script["return"]),
            target="no worse than the script (>= 3 seeds)",
            status=judged(mean(ours["return"]) >= mean(script["return"]), quick),
        ),
    ]


def main(algo: str, seed: int, steps: int) -> None:
    """The seed project's way: SB3 with its default settings, one env, then the evaluation."""
    import torch

    from benchmarks.training import held_out_return, train_plain_sb3

    torch.set_num_threads(1)
    _, _, policy, cfg = train_plain_sb3(algo, seed, steps)
    print(json.dumps({"return": held_out_return(policy, cfg)}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
