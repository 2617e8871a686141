"""Where a run keeps its checkpoints, so that ``resume=true`` finds them again.

A run's checkpoint folder is named by a hash of its resolved configuration (without the keys
that do not change what is learned: ``resume``, ``tracking``, ``train.progress``, the sweep's
``trial`` bookkeeping). Rerunning the same command with ``resume=true`` therefore finds the
interrupted run's last checkpoint and its MLflow run, wherever Hydra put the new output folder.
Files are written to a temporary name and renamed, so a kill never leaves half a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rlbench.tracking import schema

# not what is learned (tuned: the settings a preset applied are in the config itself)
VOLATILE_KEYS = ("resume", "tracking", "train.progress", "trial", "cluster", "tuned")


def run_key(flat_config: Mapping[str, str]) -> str:
    """A short stable hash of the parts of a flattened config that decide what is learned.

    An input file or folder with a content digest (``inputs.<key>``, :mod:`rlbench.run.inputs`)
    is keyed by that digest alone, not by its path: ``logs/a``, ``logs/a/`` and its absolute
    path were three jobs over one log."""
    prefix = schema.INPUTS_PARAM_PREFIX
    by_content = [
        k[len(prefix) :] for k, v in flat_config.items() if k.startswith(prefix) and v != "missing"
    ]
    kept = without_keys(flat_config, (*VOLATILE_KEYS, *by_content))
    return hashlib.sha1(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def without_keys(flat_config: Mapping[str, str], prefixes: Iterable[str]) -> dict[str, str]:
    """``flat_config`` minus each key in ``prefixes`` and everything under it, key order
    sorted."""
    dotted = tuple(prefixes)
    return {
        k: v
        for k, v in sorted(flat_config.items())
        if not any(k == p or k.startswith(p + ".") for p in dotted)
    }


class CheckpointDir:
    """``<root>/<run key>/``: ``last<suffix>``, ``best<suffix>`` and ``state.json``."""

    def __init__(self, root: str | Path, key: str, suffix: str) -> None:
        self.path = Path(root) / key
        self.suffix = suffix
        self.stamp: dict[str, Any] = {}  # written into every state (e.g. the code that trained)

    @property
    def last(self) -> Path:
        return self.path / f"last{self.suffix}"

    @property
    def best(self) -> Path:
        return self.path / f"best{self.suffix}"

    def read_state(self) -> dict[str, Any] | None:
        """The saved state, or None when there is no complete checkpoint."""
        state_file = self.path / "state.json"
        if not state_file.is_file() or not self.last.is_file():
            return None
        try:
            return json.loads(state_file.read_text())
        except json.JSONDecodeError:
            return None

    def save(self, agent: Any, state: Mapping[str, Any], *, best: bool = False) -> None:
        """Save ``agent`` as the last (or best) checkpoint, then the state that points at it."""
        self._save_model(agent, self.best if best else self.last)
        self.write_state(state)

    def _save_model(self, agent: Any, target: Path) -> None:
        """``agent`` at ``target``, whole or not at all (written aside, then renamed)."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".tmp-{target.name}")
        agent.save(tmp)
        os.replace(tmp, target)

    @property
    def pending_best(self) -> Path:
        """A forked validation's best model, until the parent makes it :attr:`best` (with the
        state that describes it): a kill in between leaves the old best and its state."""
        return self.path / f".pending-best{self.suffix}"

    def save_pending_best(self, agent: Any) -> None:
        self._save_model(agent, self.pending_best)

    def promote_pending_best(self, state: Mapping[str, Any]) -> None:
        os.replace(self.pending_best, self.best)
        self.write_state(state)

    def write_state(self, state: Mapping[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / ".state.json.tmp"
        tmp.write_text(json.dumps(dict(state) | self.stamp, indent=2))
        os.replace(tmp, self.path / "state.json")

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
