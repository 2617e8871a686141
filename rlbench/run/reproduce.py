"""``rlbench-train +reproduce=<run id>``: rerun a logged run from its logged config, compare.

A run's ``config.yaml`` artifact is its fully resolved configuration, and its
``eval/eval_episodes.csv`` artifact holds the return of every final evaluation episode. The
rerun trains that configuration again (same seed, same budget, same device if available), with
tracking off so the record is not duplicated and in a checkpoint folder of its own so a run in
progress is never disturbed, then compares the returns episode by episode, bit for bit.

    rlbench-train +reproduce=9743cab8edc847a183c0ae3bcfd3b72a
    rlbench-train +reproduce=9743cab8... tracking.uri=http://127.0.0.1:5000

Only ``tracking.*`` (where to read the run), ``device`` and ``hydra.*`` may be given beside it;
anything else would change what is rerun. Exit code 0 when every return matched, 1 when not.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from rlbench.errors import UserError, first_line
from rlbench.tracking.schema import (
    CODE_TAG,
    CONFIG_ARTIFACT,
    EPISODES_ARTIFACT,
    GIT_COMMIT_TAG,
    INPUTS_TAG,
    PRUNED_TAG,
    RESUMED_FROM_STEP_TAG,
    RESUMED_TAG,
    SWEEP_PARENT_ROLE,
    SWEEP_ROLE_TAG,
)

# keys of a logged config that describe the bookkeeping of the original job, not what it learned
DROPPED_KEYS = ("trial", "reproduce")
ALLOWED_OVERRIDES = ("tracking.", "device", "hydra.", "reproduce")


@dataclass
class Reproduction:
    """The logged and the rerun evaluation of one run."""

    run_id: str
    seeds: list[int]
    logged: np.ndarray
    rerun: np.ndarray
    code_note: str = ""  # how the logged run's code differs from this checkout's, if it does

    @property
    def matched(self) -> bool:
        """Every episode's return is the same float64, bit for bit."""
        return self.logged.shape == self.rerun.shape and bool(
            np.array_equal(self.logged.view(np.uint64), self.rerun.view(np.uint64))
        )

    @property
    def score(self) -> float:
        return float(np.mean(self.rerun))

    def summary(self) -> str:
        """One line: the verdict, and the first episode that differs."""
        n = len(self.logged)
        if self.matched:
            return (
                f"reproduced run {self.run_id}: all {n} evaluation returns identical "
                f"(mean {self.score:.6g})"
            )
        if self.logged.shape != self.rerun.shape:
            detail = f"{len(self.rerun)} episodes rerun, {n} logged"
        else:
            i = int(np.flatnonzero(self.logged.view(np.uint64) != self.rerun.view(np.uint64))[0])
            detail = (
                f"episode {i} (seed {self.seeds[i]}) returned {float(self.rerun[i])!r}, "
                f"logged {float(self.logged[i])!r}"
            )
        return (
            f"run {self.run_id} did NOT reproduce: {detail}; mean {self.score:.6g}, logged "
            f"{float(np.mean(self.logged)):.6g}{self.code_note}"
        )


def reproduce(cfg: DictConfig) -> Reproduction:
    """Rerun the run ``cfg.reproduce`` names (read from ``cfg.tracking``) and compare."""
    from rlbench.run.train import train

    run_id = str(cfg.reproduce).strip()
    _refuse_other_overrides()
    logged_cfg, seeds, returns, tags = _logged_run(run_id, cfg.tracking)
    with tempfile.TemporaryDirectory(prefix="rlbench-reproduce-") as tmp:
        rerun_cfg = _rerun_config(logged_cfg, cfg, Path(tmp))
        _refuse_changed_inputs(run_id, tags, rerun_cfg)
        outcome = train(rerun_cfg)
    if outcome.returns is None:
        raise UserError(f"the rerun of {run_id} was pruned: it has no final evaluation")
    rerun = np.asarray(outcome.returns, dtype=np.float64)
    return Reproduction(run_id, seeds, returns, rerun, _code_note(tags))


def _refuse_changed_inputs(run_id: str, tags: dict[str, str], rerun_cfg: DictConfig) -> None:
    """``UserError`` when a file the run read has other content now (a grown log, a newly
    registered forecaster behind the same alias): the rerun would call other data a match or
    a mismatch. Runs logged before ``rlbench.inputs`` existed are not checked."""
    from rlbench.run.inputs import input_digests, read_tag

    logged = read_tag(tags.get(INPUTS_TAG))
    now = input_digests(rerun_cfg)
    changed = [k for k, v in logged.items() if now.get(k) != v]
    if changed:
        key = changed[0]
        raise UserError(
            f"run {run_id} read {key}={OmegaConf.select(rerun_cfg, key)} with content "
            f"{logged[key][:19]}..., which is now {now.get(key, 'missing')[:19]}...: a rerun "
            "would train on other data; restore that input to reproduce the run"
        )


def _code_note(tags: dict[str, str]) -> str:
    """Why a rerun may differ: the logged run's code is not this checkout's (or either had
    uncommitted changes, which cannot be compared)."""
    from rlbench.tracking.provenance import code_version, git_state

    commit, dirty = git_state()
    now = code_version(commit, dirty)
    if now is not None and tags.get(CODE_TAG) == now:
        return ""
    dirty_text = " with uncommitted changes"
    then = tags.get(CODE_TAG) or tags.get(GIT_COMMIT_TAG, "unknown") + dirty_text
    return f" (the run was made by {then}; this checkout is {now or commit + dirty_text})"


def _refuse_other_overrides() -> None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    for override in HydraConfig.get().overrides.task:
        key = override.lstrip("+~").split("=", 1)[0]
        if not key.startswith(ALLOWED_OVERRIDES):
            raise UserError(
                f"+reproduce reruns the logged config as it was: drop {override!r} "
                "(only tracking.*, device and hydra.* may be given with it)"
            )


def _logged_run(
    run_id: str, tracking: DictConfig
) -> tuple[DictConfig, list[int], np.ndarray, dict[str, str]]:
    """The run's logged config, evaluation seeds, returns and tags, from its MLflow store."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    uri, client = _client(tracking)
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise UserError(f"no MLflow run {run_id!r} in {uri}") from None
        raise UserError(
            f"cannot read MLflow run {run_id!r} from {uri}: {first_line(err)}"
        ) from None
    except OSError as err:  # requests' connection errors derive from OSError
        raise UserError(f"the MLflow store {uri} is unreachable ({first_line(err)})") from None
    if run.data.tags.get(SWEEP_ROLE_TAG) == SWEEP_PARENT_ROLE:
        raise UserError(
            f"run {run_id} is a sweep's parent run: it trained nothing itself; reproduce one "
            "of its trials (its child runs)"
        )
    if run.info.status != "FINISHED":
        raise UserError(f"run {run_id} is {run.info.status}, not FINISHED: nothing to compare")
    if run.data.tags.get(PRUNED_TAG) == "true":
        raise UserError(f"run {run_id} was pruned: it has no final evaluation to compare")
    if run.data.tags.get(RESUMED_TAG) == "true":
        step = run.data.tags.get(RESUMED_FROM_STEP_TAG, "?")
        raise UserError(
            f"run {run_id} was resumed from a checkpoint at step {step}: its weights carried "
            "over but its training environments restarted from the seed there, so a rerun "
            "from step 0 cannot match it; train the configuration afresh (resume=false) for a "
            "run that reproduces"
        )
    with tempfile.TemporaryDirectory(prefix="rlbench-logged-") as tmp:
        try:
            config_path = client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp)
            episodes_path = client.download_artifacts(run_id, EPISODES_ARTIFACT, tmp)
        except Exception as err:  # MLflow says "not found" in several ways
            raise UserError(
                f"run {run_id} lacks its {CONFIG_ARTIFACT} or {EPISODES_ARTIFACT} artifact "
                f"(was it logged by rlbench-train?): {first_line(err)}"
            ) from None
        try:
            logged_cfg = OmegaConf.load(config_path)
            # pandas 3 reads back exactly the float64 that to_csv wrote (round trip)
            episodes = pd.read_csv(episodes_path)
            seeds = [int(s) for s in episodes["seed"]]
            returns = episodes["return"].to_numpy(dtype=np.float64)
        except Exception as err:  # a damaged or hand-edited artifact
            raise UserError(
                f"run {run_id}: its logged artifacts are unreadable ({first_line(err)})"
            ) from None
    if not isinstance(logged_cfg, DictConfig) or "algo" not in logged_cfg:
        raise UserError(f"run {run_id}: {CONFIG_ARTIFACT} is not an rlbench-train config")
    return logged_cfg, seeds, returns, dict(run.data.tags)


def _client(tracking: DictConfig) -> tuple[str, Any]:
    """The store ``tracking.uri`` (or ``MLFLOW_TRACKING_URI``, as for training) names, which
    must exist."""
    from rlbench.tracking.client import mlflow_client
    from rlbench.tracking.store import resolve_uri

    uri = resolve_uri(str(tracking.uri) if tracking.get("uri") else None)
    return uri, mlflow_client(uri, missing_hint="point tracking.uri at the store of the run")


def _rerun_config(logged: DictConfig, current: DictConfig, tmp: Path) -> DictConfig:
    """The logged config, minus sweep bookkeeping, untracked, checkpointing into ``tmp``."""
    plain: dict[str, Any] = OmegaConf.to_container(logged, resolve=True)  # type: ignore[assignment]
    for key in DROPPED_KEYS:
        plain.pop(key, None)
    cfg = OmegaConf.create(plain)
    with open_dict(cfg):
        cfg.resume = False
        cfg.tracking.enabled = False
        cfg.tracking.register = None  # the rerun is compared, not registered again
        cfg.train.checkpoint_dir = str(tmp / "checkpoints")
        if OmegaConf.select(current, "device") is not None:
            cfg.device = current.device
    return cfg
