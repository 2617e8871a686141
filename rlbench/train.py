"""``rlbench-train``: compose a config, train, evaluate, track, return the score.

    rlbench-train env=autoscaling env.load=spike algo=ppo seed=3
    rlbench-train -m algo=threshold,qlearning seed=0,1
    rlbench-train --cfg job                 # show the composed config
    rlbench-train +reproduce=<run id>       # rerun a logged run, say whether it matched

Read top to bottom: build the environment and the agent, learn with periodic evaluation and
checkpoints, evaluate on held-out seeds, log everything to one MLflow run, return the mean
evaluation return (the number a sweeper optimises).

Training that produces NaN or inf (a loss, the network's weights, an observation or a reward)
stops at once (:mod:`rlbench.divergence`): one line and exit code 3 for a single run; inside a
sweep the trial ends FAILED and the sweep goes on.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from rlbench import cli, divergence
from rlbench.errors import UserError
from rlbench.progress import MODES as PROGRESS_MODES
from rlbench.provenance import (
    CODE_TAG,
    MIXED_CODE,
    RUN_KEY_TAG,
    code_version,
    package_versions,
)
from rlbench.redaction import mask_passwords

log = logging.getLogger("rlbench.train")
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
TORCH_ALGOS = {"ppo", "dqn", "hybrid"}


@dataclass
class TrainOutcome:
    score: float
    run_id: str | None
    steps: int
    pruned: bool = False
    returns: list[float] | None = None  # per-episode final evaluation returns (None if pruned)
    reused: bool = False  # resume=true found this configuration finished: nothing was trained


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


def build_env(env_id: str, env_kwargs: dict[str, Any], num_envs: int, seed: int):
    """The batched training environment; constructor errors become one-line user errors."""
    from rlbench.envs import make_vec

    try:
        return make_vec(env_id, num_envs, seed=seed, **env_kwargs)
    except (ValueError, TypeError) as err:
        raise UserError(f"env ({env_id}): {err}") from None


def _build_agent(algo_cfg: DictConfig, venv, seed: int, device: str):
    """The agent; settings its constructor rejects (wrong types, impossible sizes) as one line."""
    from rlbench.agents import build_agent

    try:
        return build_agent(algo_cfg, venv, seed=seed, device=device)
    except UserError:
        raise
    except (ValueError, TypeError, RuntimeError) as err:
        reason = " ".join(str(err).split())[:300]
        raise UserError(f"algo ({algo_cfg.name}): invalid settings ({reason})") from None


def _resume_agent(ckpt, state: dict[str, Any], algo_name: str, venv, device: str):
    """The agent saved in this run's checkpoint folder, which must hold this algorithm."""
    from rlbench.agents import agent_class

    fix = f"delete {ckpt.path} to start afresh, or run without resume=true"
    saved = state.get("algo")
    if saved is not None and saved != algo_name:
        raise UserError(
            f"cannot resume: {ckpt.path} holds a {saved} checkpoint, not {algo_name}; {fix}"
        )
    try:
        return agent_class(algo_name).load(ckpt.last, venv, device=device)
    except UserError as err:
        raise UserError(f"cannot resume: {err}; {fix}") from None


def _check_writable(folder: Path, key: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        ok = os.access(folder, os.W_OK)
    except OSError as err:
        raise UserError(f"{key}={folder}: cannot create it ({err.strerror or err})") from None
    if not ok:
        raise UserError(f"{key}={folder} is not writable: choose another folder")


def train(cfg: DictConfig) -> TrainOutcome:
    """Train and evaluate the configured agent; the caller handles errors and exit codes."""
    check_config(cfg)
    _check_writable(Path(cfg.train.checkpoint_dir), "train.checkpoint_dir")
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.train.threads))
    from rlbench.tracking import flatten_config, make_tracker, run_tags

    # First, so MLflow warms up in its helper process while torch and the agent load here.
    tracker = make_tracker(cfg.tracking)
    from rlbench.checkpoints import CheckpointDir, run_key
    from rlbench.trial import TrialContext

    flat = flatten_config(cfg)
    trial = TrialContext.from_cfg(cfg)
    user_tags = {str(k): str(v) for k, v in (cfg.tracking.get("tags") or {}).items()}
    if cfg.resume and trial is None and cfg.tracking.get("enabled", True):
        # a rerun grid skips the jobs that finished (their runs are in MLflow)
        done = _finished_before(tracker, run_key(flat), user_tags)
        if done is not None:
            return done
    env_id, env_kwargs = env_spec(cfg.env)
    algo_name = str(cfg.algo.name)
    device = "cpu"
    if algo_name in TORCH_ALGOS:
        import torch

        from rlbench.agents.device import resolve_device

        torch.set_num_threads(int(cfg.train.threads))
        device = resolve_device(str(cfg.device), cfg.algo)

    venv = divergence.finite_env(build_env(env_id, env_kwargs, cfg.train.num_envs, cfg.seed))
    agent = _build_agent(cfg.algo, venv, int(cfg.seed), device)
    ckpt = CheckpointDir(cfg.train.checkpoint_dir, run_key(flat), agent.file_suffix)
    state = ckpt.read_state() if cfg.resume else None
    if state is not None:
        agent = _resume_agent(ckpt, state, algo_name, venv, device)
        log.info("resuming from %s at step %d", ckpt.last, agent.num_steps)
    elif cfg.resume:  # said once per job of a grid would drown the scores: debug there
        log.log(
            logging.DEBUG if _in_multirun() else logging.INFO,
            "resume=true: no checkpoint in %s, starting from step 0", ckpt.path,
        )  # fmt: skip

    tags = run_tags(cfg, device) | {RUN_KEY_TAG: ckpt.path.name}
    tags |= user_tags
    if trial is not None:
        tags |= trial.mlflow_tags()
    ckpt.stamp = {"code": tags.get(CODE_TAG), "versions": package_versions()}
    if state is not None and {k: state.get(k) for k in ckpt.stamp} != ckpt.stamp:
        log.warning(
            "resuming a checkpoint made by other code or library versions: the run is tagged "
            "%s=%s, and resume=true will never reuse it as finished", CODE_TAG, MIXED_CODE,
        )  # fmt: skip
        tags[CODE_TAG] = ckpt.stamp["code"] = MIXED_CODE
    default_name = f"{algo_name}-{cfg.env.name}-{env_kwargs.get('load', '')}-s{cfg.seed}"
    run_id = tracker.start(
        run_name=cfg.tracking.run_name or default_name,
        params=flat,
        tags=tags,
        parent_run_id=trial.parent_run_id if trial else None,
        resume_run_id=state.get("mlflow_run_id") if state else None,
    )
    if state is not None:
        tracker.set_tags({"rlbench.resumed_from_step": str(agent.num_steps)})
    status, error = "FAILED", None
    try:
        score, pruned, returns = _learn_and_evaluate(
            cfg, agent, env_id, env_kwargs, tracker, ckpt, trial, state
        )
        status = "FINISHED"
        return TrainOutcome(score, run_id, agent.num_steps, pruned=pruned, returns=returns)
    except KeyboardInterrupt:
        status, error = "KILLED", "interrupted (Ctrl-C)"
        raise
    except divergence.TrainingDiverged as err:
        error = f"TrainingDiverged: {err}"
        tracker.set_tags({"rlbench.diverged": "true"})
        ckpt.remove()  # resuming would diverge again: the same config, the same seed
        raise
    except BaseException as err:  # recorded on the run, then shown by the caller
        error = f"{type(err).__name__}: {err}"
        raise
    finally:
        tracker.end(status, error=error)
        venv.close()


def _learn_and_evaluate(cfg, agent, env_id, env_kwargs, tracker, ckpt, trial, state):
    """The training loop proper: learn, evaluate periodically, checkpoint, final evaluation."""
    from rlbench.evaluate import evaluate, evaluation_seeds
    from rlbench.progress import Progress

    total = int(cfg.train.total_steps)
    eval_every, ckpt_every = int(cfg.train.eval_every), int(cfg.train.checkpoint_every)
    val_seeds = evaluation_seeds(
        cfg.seed, cfg.eval.periodic_episodes, cfg.eval.seed_offset, validation=True
    )
    saved_best = state.get("best_score") if state else None
    best = -math.inf if saved_best is None else float(saved_best)
    marks = {
        "eval": _next_mark(agent.num_steps, eval_every),
        "ckpt": _next_mark(agent.num_steps, ckpt_every),
    }
    pruned = False
    last_score = best
    desc = f"{cfg.algo.name} on {cfg.env.name}"
    mode = cfg.train.progress
    if isinstance(mode, bool):  # train.progress=false is what people type
        mode = "auto" if mode else "off"
    progress = Progress(total, desc, mode, agent.num_steps)

    policy = divergence.FinitePolicy(agent)

    def callback(steps: int, stats: dict[str, float]) -> bool:
        nonlocal best, pruned, last_score
        divergence.check_stats(agent, steps, stats)
        tracker.log_metrics(stats, step=steps)
        if eval_every and steps >= marks["eval"] and steps < total:
            marks["eval"] = _next_mark(steps, eval_every)
            divergence.check_parameters(agent, steps)
            result = evaluate(
                policy, env_id, env_kwargs, val_seeds, deterministic=cfg.eval.deterministic
            )
            divergence.check_returns(agent, steps, result.returns)
            last_score = result.mean_return
            tracker.log_metrics(result.metrics(), step=steps)
            if last_score > best:
                best = last_score
                ckpt.save(agent, _state(tracker, agent, best), best=True)
            if trial is not None and trial.report(steps, last_score):
                pruned = True
                return False
        if ckpt_every and steps >= marks["ckpt"] and steps < total:
            marks["ckpt"] = _next_mark(steps, ckpt_every)
            ckpt.save(agent, _state(tracker, agent, best))
        progress.update(steps, **{k.split("/")[-1]: v for k, v in stats.items() if "return" in k})
        return True

    try:
        agent.learn(total, callback=callback)
    except (ValueError, RuntimeError) as err:
        if isinstance(err, UserError | divergence.TrainingDiverged) or agent.check_finite():
            raise
        # e.g. torch refusing a distribution whose logits are NaN
        raise divergence.TrainingDiverged(
            divergence.message(agent, agent.num_steps, "its parameters")
        ) from err
    finally:
        progress.close()
    divergence.check_parameters(agent, agent.num_steps)

    out_dir = _output_dir()
    model_path = out_dir / f"model{agent.file_suffix}"
    agent.save(model_path)
    tracker.log_artifact(model_path, "model")
    if ckpt.best.is_file():
        shutil.copyfile(ckpt.best, out_dir / f"best_model{agent.file_suffix}")
        tracker.log_artifact(out_dir / f"best_model{agent.file_suffix}", "model")
    config_path = out_dir / "config.yaml"
    # storage and server passwords stay out of the artifact the team reads
    config_path.write_text(mask_passwords(OmegaConf.to_yaml(cfg, resolve=True)))
    tracker.log_artifact(config_path)

    if pruned:
        trial.mark_pruned()
        tracker.set_tags({"pruned": "true", "rlbench.pruned_at_step": str(agent.num_steps)})
        tracker.log_metrics({"train/total_steps": agent.num_steps}, step=agent.num_steps)
        log.info("pruned at step %d (last evaluation %.4g)", agent.num_steps, last_score)
        ckpt.remove()
        return last_score, True, None

    seeds = evaluation_seeds(cfg.seed, cfg.eval.episodes, cfg.eval.seed_offset)
    result = evaluate(policy, env_id, env_kwargs, seeds, deterministic=cfg.eval.deterministic)
    divergence.check_returns(agent, agent.num_steps, result.returns)
    final = result.metrics() | {"train/total_steps": agent.num_steps}
    tracker.log_metrics(final, step=agent.num_steps)
    _log_evaluation_artifacts(result, out_dir, tracker, env_id, env_kwargs, cfg)
    ckpt.remove()
    return result.mean_return, False, [float(r) for r in result.returns]


def _finished_before(tracker, key: str, user_tags: dict[str, str]) -> TrainOutcome | None:
    """``resume=true``: the newest FINISHED run of this configuration (same run key) made by the
    same code and libraries (same ``rlbench.code`` and ``version.*`` tags), or None: then the
    job trains. Only a complete stand-alone run counts: not pruned, with its final metrics, not
    a sweep's trial, and carrying the job's ``tracking.tags`` (the report selects runs by them).

    This is what makes a killed grid (``experiment=benchmark``) resumable: rerun it with
    ``resume=true`` and only the jobs that did not finish train. Uncommitted changes in the
    checkout never match, so edited code is always trained afresh.
    """
    code = code_version()
    if code is None:
        _say_once("resume=true: the checkout has uncommitted changes: finished runs are not reused")
        return None
    same = {RUN_KEY_TAG: key, CODE_TAG: code}
    same |= {f"version.{name}": version for name, version in package_versions().items()}
    query = " and ".join(f"tags.`{tag}` = '{value}'" for tag, value in same.items())
    for run in tracker.find_runs(query, status="FINISHED"):
        tags, metrics = run["tags"], run["metrics"]
        score = metrics.get("eval/mean_return")
        if (
            score is None
            or "train/total_steps" not in metrics  # logged with the final evaluation only
            or tags.get("pruned") == "true"
            or "mlflow.parentRunId" in tags  # a sweep's trial
            or any(tags.get(k) != v for k, v in user_tags.items())
        ):
            continue
        log.info("resume=true: finished before as run %s (same config and code)", run["run_id"])
        steps = int(metrics["train/total_steps"])
        return TrainOutcome(float(score), run["run_id"], steps, reused=True)
    return None


@functools.cache
def _say_once(message: str) -> None:
    """Log ``message`` once per process (not once per job of a grid)."""
    log.info(message)


def _next_mark(steps: int, every: int) -> int:
    return (steps // every + 1) * every if every else sys.maxsize


def _state(tracker, agent, best: float) -> dict[str, Any]:
    return {
        "mlflow_run_id": tracker.run_id,
        "steps": agent.num_steps,
        "algo": agent.name,
        "best_score": None if math.isinf(best) else best,
    }


def _output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        path = Path(HydraConfig.get().runtime.output_dir)
    else:
        path = Path("outputs/runs/adhoc")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _log_evaluation_artifacts(result, out_dir: Path, tracker, env_id, env_kwargs, cfg) -> None:
    """Per-episode returns, the first episode's trajectory (CSV and picture)."""
    import pandas as pd

    from rlbench.envs import ENVIRONMENTS, env_class
    from rlbench.envs.render import episode_figure

    episodes_csv = out_dir / "eval_episodes.csv"
    pd.DataFrame(result.episodes_table()).to_csv(episodes_csv, index=False)
    tracker.log_artifact(episodes_csv, "eval")
    if not result.trajectory.get("step", []).size:
        return
    trajectory_csv = out_dir / "trajectory.csv"
    pd.DataFrame(result.trajectory).to_csv(trajectory_csv, index=False)
    tracker.log_artifact(trajectory_csv, "eval")
    (out_dir / "eval_metrics.json").write_text(json.dumps(result.metrics(), indent=2))
    # the picture costs more than a threshold trial's training: sweeps may turn it off
    if not OmegaConf.select(cfg, "eval.trajectory_plot", default=True):
        return
    keys = env_class(env_id).core_cls.render_keys if env_id in ENVIRONMENTS else ()
    keys = (*(k for k in keys if k in result.trajectory), "action")
    columns = result.trajectory
    rows = [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]
    title = f"{cfg.algo.name} on {env_id} {env_kwargs.get('load', '')} (seed {result.seeds[0]})"
    fig = episode_figure(rows, keys, title=title)
    picture = out_dir / "trajectory.png"
    fig.savefig(picture)
    tracker.log_artifact(picture, "eval")


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def app(cfg: DictConfig) -> float:
    """Hydra task: train, print the score and the MLflow run id, return the score."""
    try:
        if OmegaConf.select(cfg, "reproduce") is not None:
            return _reproduce(cfg)
        outcome = train(cfg)
    except (UserError, divergence.TrainingDiverged) as err:
        if _in_multirun() or cli.wants_traceback():
            raise  # a sweep records the failed job and goes on
        print(f"error: {err}", file=sys.stderr)
        sys.exit(cli.exit_code(err))
    note = "  (pruned)" if outcome.pruned else "  (finished before)" if outcome.reused else ""
    print(
        f"score: {outcome.score:.6g}  steps: {outcome.steps}  "
        f"mlflow run: {outcome.run_id or '(tracking off)'}{note}"
    )
    return outcome.score


def _reproduce(cfg: DictConfig) -> float:
    """``+reproduce=<run id>``: exit 0 when the rerun matched the logged run, else 1."""
    from rlbench.reproduce import reproduce

    if _in_multirun():
        raise UserError("+reproduce reruns one logged run: drop -m/--multirun")
    result = reproduce(cfg)
    print(result.summary())
    if not result.matched:
        sys.exit(cli.EXIT_FAILED)
    return result.score


def main() -> None:
    """The ``rlbench-train`` console script."""
    cli.run_app(app)


if __name__ == "__main__":
    main()
