"""The configuration every command composes: where it lives, what an environment group means,
which values cannot work, and how a value is written back as an override.

Read by ``run`` (training jobs), ``results`` (composing a trial's config again) and the sweeper;
imports only :mod:`rlbench.errors` and omegaconf.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rlbench.errors import UserError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
"""``conf/``: ``train.yaml`` (rlbench-train), ``report.yaml`` (rlbench-report) and their groups."""
PROGRESS_MODES = ("auto", "bar", "log", "off")  # train.progress


def env_spec(env_cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """The gymnasium id and constructor arguments of the ``env`` config group."""
    kwargs = OmegaConf.to_container(env_cfg, resolve=True)
    assert isinstance(kwargs, dict)
    env_id = kwargs.pop("id", None)
    kwargs.pop("name", None)
    if not env_id:
        raise UserError("env.id is missing: pick an environment with env=<name>")
    return str(env_id), kwargs


def check_config(cfg: DictConfig) -> None:
    """Reject budgets and settings that cannot work, before anything is built or logged."""
    for group in ("env", "algo", "train", "eval", "tracking"):
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            raise UserError(
                f"{group} must be a group of settings ({group}=<option> or {group}.<key>=...), "
                f"got {node!r}"
            )
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or cfg.seed < 0:
        raise UserError(f"seed must be an integer >= 0, got {cfg.seed!r}")
    if not isinstance(cfg.get("resume"), bool):
        raise UserError(f"resume must be true or false, got {cfg.get('resume')!r}")
    positive = {
        "train.total_steps": cfg.train.total_steps,
        "train.num_envs": cfg.train.num_envs,
        "eval.episodes": cfg.eval.episodes,
        "eval.periodic_episodes": cfg.eval.periodic_episodes,
        "train.threads": cfg.train.threads,
    }
    for key, value in positive.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{key} must be a positive integer, got {value!r}")
    for key in ("train.eval_every", "train.checkpoint_every"):
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or value < 0:
            raise UserError(f"{key} must be an integer >= 0 (0 turns it off), got {value!r}")
    progress = OmegaConf.select(cfg, "train.progress", default="auto")
    if progress not in PROGRESS_MODES and not isinstance(progress, bool):
        raise UserError(
            f"train.progress must be one of {', '.join(PROGRESS_MODES)} (or true/false), "
            f"got {progress!r}"
        )
    for key, value in _flat_numbers(cfg.algo, "algo"):
        if math.isnan(value) or math.isinf(value):
            raise UserError(f"{key} must be a finite number, got {value}")


def _flat_numbers(node: Any, prefix: str) -> list[tuple[str, float]]:
    container = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    found: list[tuple[str, float]] = []
    if isinstance(container, dict):
        for k, v in container.items():
            found += _flat_numbers(v, f"{prefix}.{k}")
    elif isinstance(container, float):
        found.append((prefix, container))
    return found


def override_value(value: Any) -> str:
    """Override text that Hydra parses back to exactly ``value`` (strings are quoted)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    # Hydra unescapes backslashes only before a quote or at the end of a quoted string
    text = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, str(value))
    return "'" + text.replace("'", "\\'") + "'"
