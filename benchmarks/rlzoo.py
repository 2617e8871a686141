"""rlbench against rl-zoo3 on CartPole-v1, side by side: whole commands, same steps, same tuning.

    .venv/bin/python -m benchmarks --only rlzoo          # asks for it: builds the venv once

rl-zoo3 2.9.2 lives in a virtualenv of its own (``outputs/bench/rlzoo-venv``, made on the first
run with ``pip install torch==2.13.0 rl_zoo3==2.9.2``; never by the test suite, and never part of
a default ``make bench``). For PPO (100k steps) and DQN (50k steps, rl-zoo3's budgets) and each
seed, the two commands run one after the other, alternating which goes first, each timed as a
process with one torch thread on the CPU, under one protocol:

- ours: ``rlbench-train env=gym env.id=CartPole-v1 algo=<algo> train.total_steps=<n> seed=<s>
  eval.episodes=20 tracking.enabled=false`` (rl-zoo3's values from conf/env_presets.yaml):
  5 validation episodes every ``train.eval_every`` steps (the block's: 10k for PPO, 5k for
  DQN), then 20 evaluation episodes of the scored weights (the block's ``eval.policy``: the
  last weights for PPO, the best-validated for DQN);
- rl-zoo3: ``python -m rl_zoo3.train --algo <algo> --env CartPole-v1 -n <n> --seed <s>
  --eval-freq <the same> --eval-episodes 5 --num-threads 1 --device cpu`` (its own hyperparams
  file; its EvalCallback validates as ours does and keeps ``best_model.zip``), then 20
  deterministic episodes of the same choice of weights (``CartPole-v1.zip``, or
  ``best_model.zip`` where ours scores the best), timed without the interpreter's start and
  added to its wall time.

Both sides do the same learning work (same tuned values: PPO 391 rollouts of 8 x 32 steps and
20 epochs of one 256-sample minibatch = 7,820 gradient updates; DQN one environment, 128
gradient steps every 256 steps after 1,000 = 24,960 updates), the same validation and the same
final evaluation. Targets (issue 21): return >= 475 and our wall time <= 0.5x rl-zoo3's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ONE_THREAD, Row, judged, mean, rlbench_train

VENV = Path(__file__).resolve().parent.parent / "outputs" / "bench" / "rlzoo-venv"
ZOO_VERSION = "2.9.2"
BUDGETS = {"ppo": 100_000, "dqn": 50_000}  # rl-zoo3's n_timesteps for CartPole-v1
RETURN_TARGET = 475.0
TIME_TARGET = 0.5
SEEDS = (0, 1)
EPISODES = 20  # final evaluation episodes, both sides
SCORE = re.compile(r"^score: (\S+)", re.M)
# rl-zoo3's chosen weights, 20 episodes (SB3's evaluate_policy). The schedules and spaces are
# given, not unpickled from the zip: the file is rl-zoo3's output of this run, but nothing
# pickled needs to be loaded to act.
EVALUATE = """
import sys, time
import gymnasium as gym, numpy as np, torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.evaluation import evaluate_policy
torch.set_num_threads(1)
algo, path, seed, episodes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
env = gym.make("CartPole-v1")
const = lambda _: 0.0
given = {"learning_rate": 0.0, "lr_schedule": const, "exploration_schedule": const,
         "clip_range": const, "observation_space": env.observation_space,
         "action_space": env.action_space}
model = {"dqn": DQN, "ppo": PPO}[algo].load(path, device="cpu", custom_objects=given)
env.reset(seed=seed)
start = time.perf_counter()
returns, _ = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=True,
                             return_episode_rewards=True)
print(time.perf_counter() - start, float(np.mean(returns)))
"""


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


def protocol(algo: str) -> tuple[int, int, str]:
    """Our block's validation (every n steps, episodes) and scored weights, for both sides:
    conf/env_presets.yaml's CartPole-v1 block over conf/train.yaml's defaults."""
    from omegaconf import OmegaConf

    from rlbench.config import CONF_DIR
    from rlbench.run.env_presets import find_preset

    cfg = OmegaConf.load(Path(CONF_DIR) / "train.yaml")
    cfg = OmegaConf.merge(cfg, find_preset("CartPole-v1", algo) or {})
    return int(cfg.train.eval_every), int(cfg.eval.periodic_episodes), str(cfg.eval.policy)


def run_ours(algo: str, steps: int, seed: int, tmp: Path) -> tuple[float, float]:
    """Wall seconds and score of the whole ``rlbench-train`` command (the block's protocol)."""
    wall, out = rlbench_train(
        ["env=gym", "env.id=CartPole-v1", f"algo={algo}", f"train.total_steps={steps}",
         f"seed={seed}", f"eval.episodes={EPISODES}", "tracking.enabled=false",
         "train.progress=off",
         f"hydra.run.dir={tmp / f'ours-{algo}-{seed}'}", f"train.checkpoint_dir={tmp / 'ckpt'}"],
        tmp,
    )  # fmt: skip
    return wall, float(SCORE.search(out)[1])


def run_zoo(python: Path, algo: str, steps: int, seed: int, tmp: Path) -> tuple[float, float]:
    """Wall seconds of ``python -m rl_zoo3.train`` plus its 20-episode evaluation of the same
    choice of weights as ours (timed inside its process), and that evaluation's mean return."""
    folder = tmp / f"zoo-{algo}-{seed}"
    every, episodes, scored = protocol(algo)
    command = [
        str(python), "-m", "rl_zoo3.train", "--algo", algo, "--env", "CartPole-v1",
        "-n", str(steps), "--seed", str(seed), "--eval-freq", str(every),
        "--eval-episodes", str(episodes), "--num-threads", "1", "--device", "cpu",
        "-f", str(folder),
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=tmp, env=os.environ | ONE_THREAD)
    wall = time.perf_counter() - start
    (log_dir,) = folder.glob(f"{algo}/CartPole-v1_*")
    model = log_dir / ("best_model.zip" if scored == "best" else "CartPole-v1.zip")
    evaluation = subprocess.run(
        [str(python), "-c", EVALUATE, algo, str(model), str(1_000_000 + seed), str(EPISODES)],
        check=True, capture_output=True, text=True, cwd=tmp, env=os.environ | ONE_THREAD,
    )  # fmt: skip
    seconds, mean_return = (float(x) for x in evaluation.stdout.split()[-2:])
    return wall + seconds, mean_return


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
