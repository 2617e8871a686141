"""One retraining: the recent log split into training and held-out episodes, a challenger
trained by ``rlbench-train`` (in this process, as a child run of the session) and registered.

The challenger learns offline from the training episodes (``algo=offline_dqn|cql|bc|
qlearning_replay`` with ``data=<the split>``), or in simulation (any online ``algo=`` trains in
the environment the session's adapter speaks, warm-started from the champion's saved model when
the champion is that algorithm (``init_from=``); ``retrain.overrides`` can point it at a load
closer to what the log shows). Either way it is an ordinary rlbench run: resolved config, seed,
commit, versions, curve and score, nested under the session's run and registered as a new
version of the session's model (alias ``challenger``). Held-out episodes never reach training:
the gate evaluates both policies on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlbench.config import override_value
from rlbench.errors import UserError
from rlbench.offline.log import InteractionLog, write_log

OFFLINE_ALGOS = ("offline_dqn", "cql", "bc", "qlearning_replay")


@dataclass
class Split:
    """The window of recent decisions, by whole episodes."""

    train: InteractionLog
    holdout: InteractionLog


def split_window(log: InteractionLog, window: int, holdout: float, seed: int) -> Split:
    """The episodes with a decision among the latest ``window`` (by time), whole, shuffled by
    ``seed`` into training and held-out parts (``holdout``: the held-out share of episodes)."""
    if not 0.0 < holdout < 1.0:
        raise UserError(f"retrain.holdout must be in (0, 1), got {holdout}")
    newest = np.argsort(log.ts, kind="stable")[-int(window) :]  # part files are not in time order
    recent = np.unique(log.episode[newest])
    inside = np.isin(log.episode, recent)  # every episode with a decision in the window, whole
    data = log.subset(inside)
    n = data.n_episodes
    if n < 2 and len(log) < int(window):  # the session is young: more decisions will come
        raise UserError(
            f"the log holds {len(log)} decisions in {n} episode(s), fewer than retrain.window="
            f"{window}: a retraining needs at least 2 episodes (one to train on, one to hold "
            "out); wait for more decisions"
        )
    if n < 2:
        raise UserError(
            f"the last {window} decisions hold {n} episode(s): a retraining needs at least 2 "
            "(one to train on, one to hold out); raise retrain.window"
        )
    order = np.random.default_rng(seed).permutation(n)
    n_hold = min(n - 1, max(1, round(holdout * n)))
    held = np.zeros(n, dtype=bool)
    held[order[:n_hold]] = True
    return Split(train=data.subset(~held[data.episode]), holdout=data.subset(held[data.episode]))


def train_overrides(
    *,
    env: str,
    env_args: dict[str, Any],
    algo: str,
    steps: int,
    seed: int,
    data: Path | None,
    tracking: dict[str, Any],
    register: str,
    run_name: str,
    parent_run_id: str | None,
    extra: Sequence[str],
    init_from: Path | None = None,
) -> list[str]:
    """The ``rlbench-train`` overrides of one retraining (or of the session's first champion)."""
    out = [f"env={env}", f"algo={algo}", f"seed={seed}", f"train.total_steps={int(steps)}"]
    out += [f"env.{k}={override_value(v)}" for k, v in env_args.items()]
    if data is not None:
        out.append(f"data={override_value(str(data))}")
    if init_from is not None:
        out.append(f"init_from={override_value(str(init_from))}")
    out += [
        "train.progress=off",
        f"tracking.enabled={str(bool(tracking.get('enabled', True))).lower()}",
        f"tracking.register={register}",
        f"tracking.run_name={run_name}",
    ]
    for key in ("uri", "experiment", "artifact_location"):
        if tracking.get(key):
            out.append(f"tracking.{key}={override_value(str(tracking[key]))}")
    if parent_run_id:
        out.append(f"tracking.parent_run_id={parent_run_id}")
    return out + list(extra)


def run_training(overrides: Sequence[str]) -> tuple[str, float]:
    """Train with ``rlbench-train``'s job in this process; ``(run id, score)``."""
    from rlbench.offline.collect import compose
    from rlbench.run.train import train

    outcome = train(compose(overrides))
    if not outcome.run_id:
        raise UserError("the retraining ran with tracking off: a challenger must be registered")
    return outcome.run_id, float(outcome.score)


def write_training_split(split: Split, folder: Path) -> Path:
    """The training episodes as a log the offline algorithms read (``data=<folder>``)."""
    return write_log(split.train, folder)
