"""SB3's logger as rlbench's loops write it and ``SB3Agent.training_stats`` reads it.

SB3 records an update's statistics as ``train/<name>`` in ``model.logger``; our loops record
the same names there, so a run's metrics do not depend on ``algo.loop``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SB3_TRAIN_GROUP = "train"  # SB3's group for training statistics; the run namespaces them itself


def record_training(logger: Any, stats: Mapping[str, float], n_updates: int) -> None:
    """Record one update's statistics under SB3's names, and the update counter."""
    for name, value in stats.items():
        logger.record(f"{SB3_TRAIN_GROUP}/{name}", value)
    logger.record(f"{SB3_TRAIN_GROUP}/n_updates", n_updates, exclude="tensorboard")
