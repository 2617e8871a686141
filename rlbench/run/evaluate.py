"""The one evaluation protocol every agent goes through.

``episodes`` copies of the environment, each reset with its own evaluation seed (disjoint from
the training seeds), run side by side in one batched environment until each has finished its
first episode (the environment's fixed horizon, or termination). Actions are deterministic by
default. Per-episode returns and the environment's ``info`` aggregates come back together, and
the first episode's step-by-step trajectory is kept for the decisions plot;
:meth:`EvalResult.write_artifacts` writes what a run keeps of it (CSV tables and the picture).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rlbench.config import TRAINING_SEED_SPAN
from rlbench.envs import ENVIRONMENTS, core_of, env_class, make_vec
from rlbench.tracking import schema


class Policy(Protocol):
    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray: ...


def evaluation_seeds(
    seed: int, episodes: int, offset: int, *, validation: bool = False
) -> list[int]:
    """Seeds for the final evaluation (or, with ``validation``, the periodic one) of a run.

    Training copies use ``seed .. seed + num_envs - 1``; evaluation seeds start at ``offset``
    (1,000,000 by default), so the two never meet. Periodic (validation) evaluation uses the
    upper half of the run's block, so choosing the best checkpoint on it does not leak into the
    final score.
    """
    if episodes > TRAINING_SEED_SPAN // 2:
        raise ValueError(f"eval.episodes must be <= {TRAINING_SEED_SPAN // 2}, got {episodes}")
    start = offset + TRAINING_SEED_SPAN * seed + (TRAINING_SEED_SPAN // 2 if validation else 0)
    return list(range(start, start + episodes))


@dataclass
class EvalResult:
    """Returns and ``info`` aggregates of one evaluation, one entry per episode."""

    seeds: list[int]
    returns: np.ndarray
    lengths: np.ndarray
    per_episode: dict[str, np.ndarray] = field(default_factory=dict)
    trajectory: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std_return(self) -> float:
        return float(np.std(self.returns))

    def metrics(self, prefix: str = schema.TEST_PREFIX) -> dict[str, float]:
        """Scalar summary as ``<prefix>*`` metrics: mean/std return, mean length, and the mean of
        every aggregate. ``test/`` for the final evaluation (the score), ``val/`` for a periodic
        one (the learning curve), so the two never share a key."""
        summary = {
            schema.RETURN: self.mean_return,
            schema.STD_RETURN: self.std_return,
            schema.MEAN_LENGTH: float(np.mean(self.lengths)),
        }
        summary |= {k: float(np.mean(v)) for k, v in self.per_episode.items()}
        return {prefix + k: v for k, v in summary.items()}

    def episodes_table(self) -> dict[str, list[Any]]:
        """Columns for the per-episode CSV artifact."""
        table: dict[str, list[Any]] = {
            "episode": list(range(len(self.seeds))),
            "seed": list(self.seeds),
            "return": self.returns.tolist(),
            "length": self.lengths.tolist(),
        }
        table.update({k: v.tolist() for k, v in self.per_episode.items()})
        return table

    def write_artifacts(
        self, out_dir: Path, env_id: str, title: str, *, plot: bool = True
    ) -> list[Path]:
        """Write the per-episode returns, the first episode's trajectory (CSV and, with ``plot``,
        a picture) and the metrics into ``out_dir``; the files a run logs under ``eval/``.

        The picture costs more than a threshold trial's training: sweeps may turn it off.
        """
        episodes = out_dir / schema.EPISODES_FILE
        _write_csv(episodes, self.episodes_table())
        if not self.trajectory.get("step", []).size:
            return [episodes]
        trajectory = out_dir / schema.TRAJECTORY_FILE
        _write_csv(trajectory, {k: v.tolist() for k, v in self.trajectory.items()})
        (out_dir / schema.EVAL_METRICS_FILE).write_text(json.dumps(self.metrics(), indent=2))
        if not plot:
            return [episodes, trajectory]
        from rlbench.envs.render import save_episode_figure

        keys = env_class(env_id).core_cls.render_keys if env_id in ENVIRONMENTS else ()
        keys = (*(k for k in keys if k in self.trajectory), "action")
        picture = out_dir / schema.TRAJECTORY_PLOT_FILE
        save_episode_figure(self.trajectory, keys, picture, title=title)
        return [episodes, trajectory, picture]


def _write_csv(path: Path, columns: Mapping[str, Sequence[Any]]) -> None:
    """Columns of Python numbers as CSV, as pandas' ``to_csv(index=False)`` writes them (floats
    in their shortest round-trip form; a NaN as ``nan``, which ``read_csv`` reads back as NaN),
    without importing pandas and pyarrow: about a second of CPU in every job."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(zip(*columns.values(), strict=True))


def evaluate(
    policy: Policy,
    env_id: str,
    env_kwargs: Mapping[str, Any],
    seeds: Sequence[int],
    *,
    deterministic: bool = True,
    max_steps: int = 100_000,
    record_trajectory: bool = True,
) -> EvalResult:
    """Run one episode per seed with ``policy`` and summarise it.

    Seeds must be consecutive (copy ``i`` of the batch is seeded ``seeds[0] + i``).
    ``max_steps`` guards against an environment without a horizon. ``record_trajectory``
    keeps the first episode step by step (the artifacts' trajectory); periodic validation
    skips it (a fifth of its time).
    """
    seeds = list(seeds)
    n = len(seeds)
    if n < 1:
        raise ValueError("evaluation needs at least one episode")
    if seeds != list(range(seeds[0], seeds[0] + n)):
        raise ValueError("evaluation seeds must be consecutive")
    venv = make_vec(env_id, n, seed=seeds[0], **dict(env_kwargs))
    try:  # closed even when the policy raises (a diverged network, Ctrl-C)
        core = core_of(venv)
        how = dict(core.info_aggregates) if core is not None else {}
        obs = venv.reset()
        alive = np.ones(n, dtype=bool)
        returns = np.zeros(n)
        lengths = np.zeros(n, dtype=np.int64)
        sums = {k: np.zeros(n) for k in how}
        trajectory: dict[str, list[float]] = {"step": [], "action": [], "reward": []}
        shape = tuple(venv.action_space.shape or ())  # () discrete; (k,) a continuous action
        for _ in range(max_steps):
            actions = np.asarray(policy.predict(obs, deterministic=deterministic))
            actions = actions.reshape((n, *shape))
            obs, rewards, dones, _ = venv.step(actions)
            info = getattr(venv, "last_info", {})
            returns += np.where(alive, rewards, 0.0)
            lengths += alive
            for key in how:
                sums[key] += np.where(alive, info[key], 0.0)
            if alive[0] and record_trajectory:
                trajectory["step"].append(int(lengths[0]))
                if shape:  # continuous: its first component (a torque, a force) is "action"
                    first = np.ravel(actions[0])
                    trajectory["action"].append(float(first[0]))
                    for i, value in enumerate(first[1:], start=1):
                        trajectory.setdefault(f"action_{i}", []).append(float(value))
                else:
                    trajectory["action"].append(int(actions[0]))
                trajectory["reward"].append(float(rewards[0]))
                for key, values in info.items():
                    trajectory.setdefault(key, []).append(float(values[0]))
            alive &= ~dones
            if not alive.any():
                break
        else:
            raise RuntimeError(f"evaluation did not finish within max_steps={max_steps}")
    finally:
        venv.close()
    per_episode = {
        k: (sums[k] / np.maximum(lengths, 1) if mode == "mean" else sums[k])
        for k, mode in how.items()
    }
    return EvalResult(
        seeds=seeds,
        returns=returns,
        lengths=lengths,
        per_episode=per_episode,
        trajectory={k: np.asarray(v) for k, v in trajectory.items()},
    )
