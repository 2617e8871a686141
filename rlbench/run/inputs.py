"""The content of the files a run reads besides its config: what "the same job" must also share.

A config names some inputs by path or alias: the interaction log of an offline algorithm
(``algo.data``), a warm start (``init_from``), a request trace (``env.trace_path``) and a trained
forecaster (``env.forecast_model``, e.g. ``models:/load-forecaster@latest``). The same config over
a grown log or a newly registered forecaster is another job: ``resume=true`` reused the old run
and ``+reproduce`` called a rerun on other data a reproduction. Their digests go into the run
key in place of the paths (checkpoints and finished runs are matched by content: ``logs/a``
and its absolute path are one job) and onto the run as the tag ``rlbench.inputs``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: config keys naming a file or folder the run reads
PATH_KEYS = ("algo.data", "init_from", "env.trace_path")
FORECAST_KEY = "env.forecast_model"


def input_digests(cfg: DictConfig) -> dict[str, str]:
    """``{config key: "sha256:<hex>"}`` of every input the config names (``"missing"`` for a
    path that does not exist: the job itself then says what is wrong)."""
    found = {}
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if value:
            found[key] = path_digest(Path(str(value)).expanduser())
    model = OmegaConf.select(cfg, FORECAST_KEY, default=None)
    if model and str(OmegaConf.select(cfg, "env.forecast", default="none")).lower() == "lstm":
        store = OmegaConf.select(cfg, "tracking.uri", default=None)
        found[FORECAST_KEY] = _forecaster_digest(str(model), store)
    return found


def path_digest(path: Path) -> str:
    """SHA-256 over a file's bytes, or a folder's files (relative names and bytes, sorted)."""
    from rlbench.tracking.provenance import files_sha256

    if path.is_file():
        return f"sha256:{files_sha256([path])}"
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return f"sha256:{files_sha256(files, path)}"
    return "missing"


def _forecaster_digest(model: str, store: str | None) -> str:
    """The digest of the forecaster folder ``model`` resolves to in the run's store (an alias:
    its version now)."""
    from rlbench.envs.forecasters import resolve_model

    try:
        return path_digest(resolve_model(model, store))
    except Exception:  # an unreachable registry or a bad alias: building the env says so
        return "missing"


def as_tag(digests: dict[str, str]) -> str:
    """The ``rlbench.inputs`` tag's value: the digests as compact JSON."""
    return json.dumps(digests, sort_keys=True, separators=(",", ":"))


def read_tag(value: Any) -> dict[str, str]:
    """The digests of a run's ``rlbench.inputs`` tag ({} for runs logged before it existed)."""
    try:
        found = json.loads(value) if value else {}
    except (TypeError, ValueError):
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}
