"""Environment steps per second: our numpy-batched Autoscaling-v0 vs gymnasium's SyncVectorEnv.

Both sides step ``rlbench/Autoscaling-v0`` (default config: sine_curve load, 288-step episodes
with auto-reset) the same number of times with the same pre-drawn random actions, so the
figures differ only by how the copies are stepped: one numpy call for all copies
(``rlbench.envs.make_vec``) or a Python loop over ``gymnasium.make`` copies (what a user gets
from ``gymnasium.vector.SyncVectorEnv``). Construction and ``reset`` are not timed.
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.common import Row, judged, median, time_call

ENV_ID = "rlbench/Autoscaling-v0"
COPIES = (1, 64, 1024, 16384)
TARGET_COPIES, TARGET_RATIO = 1024, 100.0


def _actions(steps: int, copies: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 3, size=(steps, copies), dtype=np.int64)


def batched_rate(copies: int, steps: int, repeats: int = 3) -> float:
    """Env-steps/s of ``make_vec`` over ``copies`` copies (median of ``repeats`` timings)."""
    from rlbench.envs import make_vec

    actions = _actions(steps, copies)
    venv = make_vec(ENV_ID, copies, seed=0)
    times = []
    for _ in range(repeats):
        venv.reset()

        def run(venv=venv) -> None:
            for a in actions:
                venv.step(a)

        times.append(time_call(run)[0])
    return steps * copies / median(times)


def sync_rate(copies: int, steps: int) -> float:
    """Env-steps/s of ``SyncVectorEnv`` over ``copies`` ``gymnasium.make`` copies."""
    import gymnasium as gym

    import rlbench  # noqa: F401 - registers the environments

    actions = _actions(steps, copies)
    venv = gym.vector.SyncVectorEnv([lambda: gym.make(ENV_ID) for _ in range(copies)])
    venv.reset(seed=0)

    def run() -> None:
        for a in actions:
            venv.step(a)

    seconds = time_call(run)[0]
    venv.close()
    return steps * copies / seconds


def run(quick: bool = False) -> list[Row]:
    """One row per number of copies: batched rate, SyncVectorEnv rate, their ratio."""
    env_steps = 20_000 if quick else 100_000  # per side and size (SyncVectorEnv: ~14k/s here)
    rows = []
    for copies in COPIES:
        steps = max(math.ceil(env_steps / copies), 5)
        ours, theirs = batched_rate(copies, steps), sync_rate(copies, steps)
        ratio = ours / theirs
        at_target = copies == TARGET_COPIES
        rows.append(
            Row(
                group="env",
                case=f"batched make_vec, {copies} copies",
                value=ours,
                unit="steps/s",
                reference=f"SyncVectorEnv, {copies} copies",
                reference_value=theirs,
                ratio=ratio,
                target=f">= {TARGET_RATIO:.0f}x SyncVectorEnv" if at_target else "",
                status=judged(ratio >= TARGET_RATIO) if at_target else "-",
                details={"vector_steps": steps, "env_steps": steps * copies},
            )
        )
    return rows
