"""Per-environment tuned settings: the block ``<env id>.<algo option>`` of
``conf/env_presets.yaml``, applied to a run whose environment has one for its algorithm
(``env=gym env.id=CartPole-v1 algo=ppo``). One file, not a config group: a group would be a
Hydra choice of its own and list every task in ``rlbench-train --help``.

Our algorithm defaults are tuned for rlbench's own environments; on a gymnasium task a user
expects the settings known to work there, as rl-zoo3 ships them. Precedence, highest first:

1. what the user set: any ``algo.*`` / ``train.*`` / ``eval.*`` key named on the command line
   (a sweep's or a search's too), or whose value differs from the algorithm's own defaults
   file (an experiment or debug preset set it; a preset value equal to the default cannot be
   told from it: name it on the command line, or ``tuned=false``);
2. the per-environment preset;
3. the algorithm's defaults (``conf/algo/<algo>.yaml``).

Presets are keyed by the ``algo=`` option chosen (``ppo``, not ``ppo_seed``: a named variant is
a deliberate choice and is left alone). Outside a Hydra job (``train(cfg)`` from a notebook) the
option is ``algo.name``, and the preset applies only when every algo setting is that option's
default, so neither a variant nor settings changed by hand are mixed with it. ``tuned=false``
turns them off. The run records the block it applied as the tag ``rlbench.env_preset``
(``CartPole-v1/ppo``); its params show the values used.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from rlbench.config import CONF_DIR

log = logging.getLogger(__name__)
PRESETS_FILE = Path(CONF_DIR) / "env_presets.yaml"
GROUPS = ("algo", "train", "eval")  # the sections a preset may set


def find_preset(env_id: str | None, algo_option: str) -> DictConfig | None:
    """The block for ``env_id`` and ``algo_option``, or None."""
    if not env_id:
        return None
    for_env = OmegaConf.load(PRESETS_FILE).get(str(env_id))
    return None if for_env is None else for_env.get(algo_option)


def apply_env_preset(cfg: DictConfig) -> tuple[DictConfig, str | None]:
    """``cfg`` with its environment's preset applied under the user's own settings, and the
    preset's name, ``<env id>/<algo option>`` (None when none applied)."""
    if not cfg.get("tuned", True):
        return cfg, None
    option, cli = _hydra_choice_and_overrides()
    in_job = option is not None
    option = option or str(cfg.algo.get("name"))
    preset = find_preset(cfg.env.get("id"), option)
    if preset is None:
        return cfg, None
    top = OmegaConf.load(Path(CONF_DIR) / "train.yaml")
    defaults = {
        "algo": _load_or_empty(Path(CONF_DIR) / "algo" / f"{option}.yaml"),
        "train": top.get("train", {}),
        "eval": top.get("eval", {}),
    }
    if not in_job:  # train(cfg) from code: the algo= option is only known as algo.name
        changed = _differs(cfg.algo, defaults["algo"])
        if changed:
            log.info(
                "no tuned settings for %s: algo differs from conf/algo/%s.yaml in %s (another "
                "algo= option, or your own settings); run it through rlbench-train to combine "
                "them", cfg.env.get("id"), option, ", ".join(changed[:3]),
            )  # fmt: skip
            return cfg, None
    out = cfg.copy()
    applied, kept = [], []
    with open_dict(out):
        for group in GROUPS:
            for key, value in _leaves(preset.get(group) or {}):
                dotted = f"{group}.{key}"
                current = OmegaConf.select(out, dotted)
                default = OmegaConf.select(defaults[group], key)
                if dotted in cli or _plain(current) != _plain(default):
                    kept.append(dotted)
                    continue
                OmegaConf.update(out, dotted, value, merge=False)
                applied.append(f"{dotted}={_plain(value)}")
    name = f"{cfg.env.get('id')}/{option}"
    log.info(
        "tuned settings %s (conf/env_presets.yaml): %s%s", name,
        ", ".join(applied) or "none",
        f" (yours kept: {', '.join(kept)})" if kept else "",
    )  # fmt: skip
    return out, name


def _hydra_choice_and_overrides() -> tuple[str | None, set[str]]:
    """The ``algo=`` option and the keys the command line set, inside a Hydra job."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None, set()
        hc = HydraConfig.get()
        keys = {o.split("=", 1)[0].lstrip("+~") for o in hc.overrides.task}
        return hc.runtime.choices.get("algo"), keys
    except Exception:  # a config composed without the runtime section (compose API)
        return None, set()


def _differs(algo: DictConfig, defaults: DictConfig) -> list[str]:
    """Keys of the defaults file where ``algo`` has another value. From code, another ``algo=``
    option (ppo_seed is ``name: ppo`` and differs from ppo only in keys CartPole's block sets)
    cannot be told from settings changed by hand, and neither may be mixed with the preset."""
    return [
        f"algo.{key}"
        for key, value in _leaves(defaults)
        if _plain(OmegaConf.select(algo, key)) != _plain(value)
    ]


def _load_or_empty(path: Path) -> DictConfig:
    return OmegaConf.load(path) if path.is_file() else OmegaConf.create({})


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, value)`` of every leaf; lists are leaves (``net_arch: [256, 256]``)."""
    if not isinstance(node, DictConfig | dict):
        return [(prefix, node)]
    out = []
    for key, value in node.items():
        out += _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, DictConfig | ListConfig) else value
