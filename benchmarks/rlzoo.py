"""rlbench against rl-zoo3 on CartPole-v1, side by side: whole commands, same steps, same tuning.

    .venv/bin/python -m benchmarks --only rlzoo          # asks for it: builds the venv once

rl-zoo3 2.9.2 lives in a virtualenv of its own (``outputs/bench/rlzoo-venv``, made on the first
run with ``pip install torch==2.13.0 rl_zoo3==2.9.2``; never by the test suite, and never part of
a default ``make bench``). For PPO (100k steps) and DQN (50k steps, rl-zoo3's budgets) and each
seed, the two commands run one after the other, alternating which goes first, each timed as a
process with one torch thread on the CPU:

- ours: ``rlbench-train env=gym env.id=CartPole-v1 algo=<algo> train.total_steps=<n> seed=<s>
  eval.episodes=20 tracking.enabled=false`` (rl-zoo3's values from conf/env_presets.yaml);
- rl-zoo3: ``python -m rl_zoo3.train --algo <algo> --env CartPole-v1 -n <n> --seed <s>
  --eval-freq <n> --eval-episodes 20 --num-threads 1 --device cpu`` (its own hyperparams file).

Both sides do the same learning work (same tuned values: PPO 391 rollouts of 8 x 32 steps and
20 epochs of one 256-sample minibatch = 7,820 gradient updates; DQN one environment, 128
gradient steps every 256 steps after 1,000 = 24,960 updates) and end with 20 deterministic
evaluation episodes; ours also validates 5 episodes every 10k steps (its learning curve),
rl-zoo3 evaluates only at the end here. Targets (issue 21): return >= 475 and our wall time
<= 0.5x rl-zoo3's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ONE_THREAD, Row, judged, mean, rlbench_train

VENV = Path(__file__).resolve().parent.parent / "outputs" / "bench" / "rlzoo-venv"
ZOO_VERSION = "2.9.2"
BUDGETS = {"ppo": 100_000, "dqn": 50_000}  # rl-zoo3's n_timesteps for CartPole-v1
RETURN_TARGET = 475.0
TIME_TARGET = 0.5
SEEDS = (0, 1)
SCORE = re.compile(r"^score: (\S+)", re.M)


def ensure_venv(venv: Path = VENV) -> Path:
    """The rl-zoo3 virtualenv's python, made on first use (torch from the local CPU wheel)."""
    python = venv / "bin" / "python"
    check = f"import rl_zoo3, sys; sys.exit(rl_zoo3.__version__ != {ZOO_VERSION!r})"
    probe = [str(python), "-c", check]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"  making {venv} (rl_zoo3=={ZOO_VERSION}, torch 2.13.0): a few minutes", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "torch==2.13.0", f"rl_zoo3=={ZOO_VERSION}"],
        check=True,
    )
    return python


def run_ours(algo: str, steps: int, seed: int, tmp: Path) -> tuple[float, float]:
    """Wall seconds and score of the whole ``rlbench-train`` command."""
    wall, out = rlbench_train(
        ["env=gym", "env.id=CartPole-v1", f"algo={algo}", f"train.total_steps={steps}",
         f"seed={seed}", "eval.episodes=20", "tracking.enabled=false", "train.progress=off",
         f"hydra.run.dir={tmp / f'ours-{algo}-{seed}'}", f"train.checkpoint_dir={tmp / 'ckpt'}"],
        tmp,
    )  # fmt: skip
    return wall, float(SCORE.search(out)[1])


def run_zoo(python: Path, algo: str, steps: int, seed: int, tmp: Path) -> tuple[float, float]:
    """Wall seconds of ``python -m rl_zoo3.train`` and the mean of its final 20-episode
    evaluation (``evaluations.npz``, read without pickle)."""
    folder = tmp / f"zoo-{algo}-{seed}"
    command = [
        str(python), "-m", "rl_zoo3.train", "--algo", algo, "--env", "CartPole-v1",
        "-n", str(steps), "--seed", str(seed), "--eval-freq", str(steps),
        "--eval-episodes", "20", "--num-threads", "1", "--device", "cpu", "-f", str(folder),
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=tmp, env=os.environ | ONE_THREAD)
    wall = time.perf_counter() - start
    (npz,) = folder.glob(f"{algo}/CartPole-v1_*/evaluations.npz")
    with np.load(npz, allow_pickle=False) as data:
        return wall, float(np.mean(data["results"][-1]))


def run(quick: bool = False) -> list[Row]:
    python = ensure_venv()
    rows = []
    seeds = SEEDS[:1] if quick else SEEDS
    with tempfile.TemporaryDirectory(prefix="rlbench-rlzoo-") as name:
        tmp = Path(name)
        for algo, steps in BUDGETS.items():
            ours, zoo = [], []
            for k, seed in enumerate(seeds):
                sides = [("ours", ours), ("zoo", zoo)]
                for side, found in sides if k % 2 == 0 else sides[::-1]:
                    if side == "ours":
                        found.append(run_ours(algo, steps, seed, tmp))
                    else:
                        found.append(run_zoo(python, algo, steps, seed, tmp))
                    print(f"  {algo} {side} seed {seed}: {found[-1][0]:.1f} s, "
                          f"return {found[-1][1]:.1f}", flush=True)  # fmt: skip
            ratio = mean(o[0] for o in ours) / mean(z[0] for z in zoo)
            worst = min(o[1] for o in ours)
            label = f"{algo.upper()} CartPole-v1 {steps // 1000}k, {len(seeds)} seeds"
            rows.append(
                Row(
                    group="rl-zoo3",
                    case=f"{label}: rlbench-train wall / rl-zoo3's",
                    value=ratio,
                    unit="x",
                    reference=f"ours {mean(o[0] for o in ours):.1f} s, rl-zoo3 "
                    f"{mean(z[0] for z in zoo):.1f} s (whole commands)",
                    target=f"<= {TIME_TARGET}x",
                    status=judged(ratio <= TIME_TARGET, quick),
                    details={"ours": ours, "zoo": zoo},
                )
            )
            rows.append(
                Row(
                    group="rl-zoo3",
                    case=f"{label}: our lowest return (20 episodes)",
                    value=worst,
                    unit="return",
                    reference="rl-zoo3: "
                    + ", ".join(f"{z[1]:.0f}" for z in zoo)
                    + "; ours: "
                    + ", ".join(f"{o[1]:.0f}" for o in ours),
                    target=f">= {RETURN_TARGET:.0f}",
                    status=judged(worst >= RETURN_TARGET, quick),
                )
            )
    return rows


if __name__ == "__main__":
    from benchmarks.common import table

    print(table(run(quick="--quick" in sys.argv)))
