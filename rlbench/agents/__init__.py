"""Agents behind one protocol (:class:`Agent`), built from the ``algo`` config group.

``build_agent(cfg.algo, env, seed)`` makes a fresh agent; ``load_agent(path, env)`` reads the
algorithm from a saved model file and rebuilds it. Classes are imported on first use, so the
baselines never pay for importing torch (nor does DQN on a small MLP: ``Agent.variant`` picks
the numpy DQN or SB3's for a config).

May import :mod:`rlbench.errors`, :mod:`rlbench.config` and ``envs`` only: agents know nothing of
tracking or runs (their training statistics are plain names; the run namespaces them).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlbench.agents.base import Agent
from rlbench.agents.checkpoint_io import peek_algo
from rlbench.agents.device import resolve_device
from rlbench.errors import UserError

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv

# algo.name -> "module:Class"
AGENTS: dict[str, str] = {
    "random": "rlbench.agents.baselines:RandomAgent",
    "static": "rlbench.agents.baselines:StaticAgent",
    "threshold": "rlbench.agents.baselines:ThresholdAgent",
    "qlearning": "rlbench.agents.qlearning:QLearningAgent",
    "ppo": "rlbench.agents.sb3_agents:PPOAgent",
    "dqn": "rlbench.agents.numpy_dqn:NumpyDQNAgent",  # SB3's DQNAgent where numpy cannot
    "hybrid": "rlbench.agents.hybrid:HybridAgent",
    "ucb": "rlbench.agents.ucb:UCBAgent",
    "user_feedback": "rlbench.agents.rules:UserFeedbackAgent",
    "recommender_rule": "rlbench.agents.rules:RecommenderRuleAgent",
    "runbook": "rlbench.agents.rules:RunbookAgent",
}
# Agents that learn from an interaction log. They live in rlbench.offline (above this layer:
# they read logs); naming them here by string, imported only when built, is how
# rlbench-train and load_agent reach them without agents importing offline.
OFFLINE_AGENTS: dict[str, str] = {
    "qlearning_replay": "rlbench.offline.agents:ReplayQLearningAgent",
    "offline_dqn": "rlbench.offline.agents:OfflineDQNAgent",
    "cql": "rlbench.offline.agents:CQLAgent",
    "bc": "rlbench.offline.agents:BCAgent",
}

__all__ = [
    "AGENTS",
    "OFFLINE_AGENTS",
    "Agent",
    "agent_class",
    "build_agent",
    "load_agent",
    "resolve_device",
]


def agent_class(name: str) -> type[Agent]:
    """The :class:`Agent` subclass for ``algo.name``; ``UserError`` listing the known names."""
    where = AGENTS.get(name) or OFFLINE_AGENTS.get(name)
    if where is None:
        known, offline = ", ".join(sorted(AGENTS)), ", ".join(sorted(OFFLINE_AGENTS))
        raise UserError(f"unknown algorithm {name!r}; known: {known}; from a log: {offline}")
    module, cls = where.split(":")
    return getattr(importlib.import_module(module), cls)


def build_agent(algo_cfg: Mapping[str, Any], env: VecEnv, seed: int, device: str = "auto") -> Agent:
    """A fresh agent for the ``algo`` config group (``name`` plus the algorithm's settings).

    ``device`` (``auto``/``cpu``/``cuda``/``mps``) matters only to the neural agents, which resolve
    it with :func:`resolve_device`; the others ignore it (and so never import torch).
    """
    name = algo_cfg.get("name") if algo_cfg is not None else None
    if not name:
        raise UserError(f"the algo config has no name; known: {', '.join(sorted(AGENTS))}")
    cls = agent_class(str(name)).variant(algo_cfg, env, device)
    return cls(env, algo_cfg, seed, device)


def load_agent(path: str | Path, env: VecEnv, device: str = "cpu") -> Agent:
    """The agent saved at ``path`` (any algorithm, read from the file), rebuilt on ``env``."""
    return agent_class(peek_algo(path)).load(path, env, device)
