"""The configuration every command composes: where it lives, what an environment group means,
which values cannot work, and how a value is written back as an override.

Read by ``run`` (training jobs), ``results`` (composing a trial's config again) and the sweeper;
imports only :mod:`rlbench.errors` and omegaconf.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rlbench.errors import UserError

PACKAGE_DIR = Path(__file__).resolve().parent  # rlbench/, in a checkout or in site-packages


def config_dir(name: str, package: Path = PACKAGE_DIR) -> str:
    """Where the Hydra config folder ``name`` (``conf`` or ``conf_live``) is.

    A wheel (``pip install .``) ships it inside the package, ``rlbench/<name>/`` (setup.py puts
    it there); a checkout and ``make setup``'s editable install have only the top-level
    ``<name>/`` beside ``rlbench/``, which users and the docs edit. The package's copy wins, so
    that an installed rlbench never reads a ``conf/`` another distribution left in site-packages.
    """
    shipped = package / name
    return str(shipped if shipped.is_dir() else package.parent / name)


CONF_DIR = config_dir("conf")
"""``conf/``: ``train.yaml`` (rlbench-train), ``report.yaml`` (rlbench-report) and their groups."""
CONF_LIVE_DIR = config_dir("conf_live")
"""``conf_live/``: ``live.yaml`` (rlbench-live) and its groups, apart so that they never show in
``rlbench-train --help``."""
PROGRESS_MODES = ("auto", "bar", "log", "off")  # train.progress
EVAL_POLICIES = ("final", "best")  # eval.policy: the weights the final evaluation scores
#: tag names a run's own record uses (provenance, bookkeeping): tracking.tags may not set them
RESERVED_TAG_PREFIXES = ("git.", "version.", "rlbench.", "mlflow.", "hydra.")
#: seeds ``seed_offset + TRAINING_SEED_SPAN * seed + i`` evaluate a run trained with ``seed``
#: (rlbench.run.evaluate.evaluation_seeds); the overlap check reads the same layout
TRAINING_SEED_SPAN = 1000
SEED_MAX = 2**63 - 1  # seeds are 0..2**63-1: numpy's int64, in which reports hold them
NET_ARCH_FORM = (
    "a list of layer widths, e.g. algo.policy_kwargs.net_arch=[64,64], or SB3's dict form "
    "(~algo.policy_kwargs.net_arch '+algo.policy_kwargs.net_arch={pi:[64,64],vf:[64,64]}')"
)


#: the rule each environment's seed system used: rlbench-live's first champion and kill-switch
#: fallback by default (``${rule_for:${env}}``); any other env falls back to random
RULES = {
    "autoscaling": "threshold",
    "gym_scaling": "threshold",
    "scheduler": "user_feedback",
    "recommender": "recommender_rule",
    "selfhealing": "runbook",
}
OmegaConf.register_new_resolver("rule_for", lambda env: RULES.get(str(env), "random"), replace=True)
# ${pid:}: the process id, so that two commands started in the same second never share a
# Hydra output folder (they wrote each other's evaluation files into it)
OmegaConf.register_new_resolver("pid", os.getpid, replace=True)


def env_spec(env_cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """The gymnasium id and constructor arguments of the ``env`` config group."""
    kwargs = OmegaConf.to_container(env_cfg, resolve=True)
    assert isinstance(kwargs, dict)
    env_id = kwargs.pop("id", None)
    kwargs.pop("name", None)
    if not env_id:
        raise UserError("env.id is missing: pick an environment with env=<name>")
    return str(env_id), kwargs


def is_train_config(cfg: DictConfig) -> bool:
    """Whether ``cfg`` is rlbench-train's (a sweeper also serves other Hydra apps)."""
    return all(isinstance(cfg.get(g), DictConfig) for g in ("env", "algo", "train", "tracking"))


def check_seed_overlap(cfg: DictConfig) -> None:
    """``UserError`` when the test seeds would be training seeds: the README promises a score
    on held-out seeds (``eval.seed_offset=0`` evaluated seed 0's run on seeds 0, 1, ...). Run
    after the memory check, which says more about an absurd ``train.num_envs``."""
    offset = OmegaConf.select(cfg, "eval.seed_offset", default=0)
    first_eval = offset + TRAINING_SEED_SPAN * cfg.seed  # evaluate.evaluation_seeds' start
    if first_eval < cfg.seed + cfg.train.num_envs:
        raise UserError(
            f"eval.seed_offset={offset} makes the evaluation seeds (from {first_eval}) overlap "
            f"the training copies' seeds ({cfg.seed}..{cfg.seed + cfg.train.num_envs - 1}): "
            "the score would not be on held-out seeds; leave it at its default (1000000)"
        )


#: a value that is only a required environment variable (``${oc.env:NAME}``, no default)
_REQUIRED_ENV = re.compile(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)\}")
#: the variables the cluster= presets read the team's stores from
CLUSTER_ENV = ("RLBENCH_OPTUNA_STORAGE", "MLFLOW_TRACKING_URI")


def env_hint(name: str) -> str:
    """What a variable the cluster= presets read is for (empty for other variables)."""
    if name not in CLUSTER_ENV:
        return ""
    return (
        ": a cluster= preset reads the team's stores from RLBENCH_OPTUNA_STORAGE and "
        "MLFLOW_TRACKING_URI (docs/scale-out.md)"
    )


def check_env_values(cfg: DictConfig) -> None:
    """A :class:`UserError` for a config value that is only ``${oc.env:NAME}`` (the variable is
    required) while ``NAME`` is set but empty. OmegaConf reads it as ``''``: a cluster= preset's
    storage would be "not a database URL: ''", and its ``tracking.uri`` silently the local
    default store instead of the team's (which is what the preset exists to share)."""

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")
        elif isinstance(node, str) and (found := _REQUIRED_ENV.fullmatch(node.strip())):
            name = found.group(1)
            if os.environ.get(name) == "":
                what = "the team's store URL" if name in CLUSTER_ENV else "a value"
                raise UserError(
                    f"{path} reads the environment variable {name}, which is set but empty: "
                    f"give it {what} (export {name}=...){env_hint(name)}"
                )

    walk(OmegaConf.to_container(cfg, resolve=False), "")


def check_config(cfg: DictConfig) -> None:
    """Reject budgets and settings that cannot work, before anything is built or logged."""
    check_env_values(cfg)
    for group in ("env", "algo", "train", "eval", "tracking"):
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            raise UserError(
                f"{group} must be a group of settings ({group}=<option> or {group}.<key>=...), "
                f"got {node!r}"
            )
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or cfg.seed < 0:
        raise UserError(f"seed must be an integer >= 0, got {cfg.seed!r}")
    if cfg.seed > SEED_MAX:
        raise UserError(f"seed must be an integer from 0 to 2**63-1 ({SEED_MAX}), got {cfg.seed}")
    for key, default in (("resume", None), ("tuned", True)):
        if not isinstance(cfg.get(key, default), bool):
            raise UserError(f"{key} must be true or false, got {cfg.get(key)!r}")
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
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise UserError(f"{key} must be an integer >= 0 (0 turns it off), got {value!r}")
    offset = OmegaConf.select(cfg, "eval.seed_offset", default=0)
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= SEED_MAX // 2:
        raise UserError(
            f"eval.seed_offset must be an integer from 0 to 2**62-1 (evaluation seeds are "
            f"seed_offset + 1000 * seed + episode), got {offset!r}"
        )
    _check_kinds(cfg)
    progress = OmegaConf.select(cfg, "train.progress", default="auto")
    if progress not in PROGRESS_MODES and not isinstance(progress, bool):
        raise UserError(
            f"train.progress must be one of {', '.join(PROGRESS_MODES)} (or true/false), "
            f"got {progress!r}"
        )
    policy = OmegaConf.select(cfg, "eval.policy", default="final")
    if policy not in EVAL_POLICIES:
        raise UserError(
            f"eval.policy must be one of {', '.join(EVAL_POLICIES)}, got {policy!r}: final scores "
            "the last weights, best the ones that scored best in periodic validation"
        )
    plot = OmegaConf.select(cfg, "eval.trajectory_plot", default="auto")
    if plot != "auto" and not isinstance(plot, bool):
        raise UserError(f"eval.trajectory_plot must be auto, true or false, got {plot!r}")
    for key, value in _flat_numbers(cfg.algo, "algo"):
        if math.isnan(value) or math.isinf(value):
            raise UserError(f"{key} must be a finite number, got {value}")
    _check_net_arch(OmegaConf.select(cfg, "algo.policy_kwargs.net_arch", default=None))


#: settings with one kind of value, checked by kind (the ones above have their own checks)
SWITCHES = ("eval.deterministic", "tracking.enabled", "tracking.background")
NAMES = ("train.checkpoint_dir", "device")
#: null: the default (experiment rlbench, MLflow's own artifact location, a generated name)
OPTIONAL_NAMES = (
    "tracking.experiment",
    "tracking.artifact_location",
    "tracking.run_name",
    "tracking.ui_url",
    "tracking.parent_run_id",
)


def _check_kinds(cfg: DictConfig) -> None:
    """On/off switches are true or false, names are one word or number (not a list), tags a
    mapping: ``tracking.enabled=maybe`` must not quietly mean true."""
    for key in SWITCHES:
        value = OmegaConf.select(cfg, key, default=True)
        if not isinstance(value, bool):
            raise UserError(f"{key} must be true or false, got {_override_text(value)}")
    for key in NAMES + OPTIONAL_NAMES:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None and key in OPTIONAL_NAMES:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float) or value == "":
            raise UserError(
                f"{key} must be a name{' (or null)' if key in OPTIONAL_NAMES else ''}, got "
                f"{_override_text(_plain(value)) or repr(value)}"
            )
    tags = OmegaConf.select(cfg, "tracking.tags", default=None)
    if tags is None:
        return
    plain = _plain(tags)
    bad = not isinstance(plain, dict) or any(isinstance(v, dict | list) for v in plain.values())
    if bad:
        raise UserError(
            "tracking.tags must map tag names to values (+tracking.tags.benchmark=quick), got "
            f"{_override_text(plain)}"
        )
    reserved = sorted(k for k in plain if str(k).startswith(RESERVED_TAG_PREFIXES))
    if reserved:  # they would overwrite the run's provenance (git.commit, rlbench.code, ...)
        raise UserError(
            f"tracking.tags.{reserved[0]}: tags starting with "
            f"{', '.join(RESERVED_TAG_PREFIXES)} are rlbench's and MLflow's own record of the "
            "run; choose another name"
        )


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _check_net_arch(value: Any) -> None:
    """``algo.policy_kwargs.net_arch``: a list of integer widths >= 1, or a dict of such lists
    (a width of -3 reached torch as "negative dimension" at the first trial of a sweep)."""
    key = "algo.policy_kwargs.net_arch"
    if value is None:
        return
    arch = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    if isinstance(arch, dict):
        lists = {f"{key}.{name}": widths for name, widths in arch.items()}
    else:
        lists = {key: arch}
    for where, widths in lists.items():
        bad = not isinstance(widths, list)
        bad = bad or any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in widths)
        if bad:
            raise UserError(f"{where} must be {NET_ARCH_FORM}; got {_override_text(widths)}")


def _override_text(value: Any) -> str:
    """A list or dict as the user typed it (``[a, b]``), scalars as their repr."""
    if isinstance(value, list):
        return "[" + ", ".join(_override_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_override_text(v)}" for k, v in value.items()) + "}"
    return str(value) if isinstance(value, str) else repr(value)


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
