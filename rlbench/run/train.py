"""One training job: build the environment and the agent, learn, evaluate, record one MLflow run.

Read top to bottom (:func:`train`): check the config, open the run's tracker, reuse a finished
run (``resume=true``) or continue from a checkpoint, learn with periodic validation and
checkpoints (:mod:`rlbench.run.periodic`), save the model, evaluate on held-out seeds, log
everything to one MLflow run, return the mean evaluation return (the number a sweeper
optimises). The Hydra app around it is :mod:`rlbench.run.main`.

Training that produces NaN or inf (a loss, the network's weights, an observation or a reward)
stops at once (:mod:`rlbench.run.divergence`): one line and exit code 3 for a single run; inside a
sweep the trial ends FAILED and the sweep goes on.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rlbench.config import check_config, check_seed_overlap, env_spec
from rlbench.envs import core_of
from rlbench.errors import UserError
from rlbench.run import divergence
from rlbench.run.env_presets import apply_env_preset
from rlbench.run.resources import check_memory, slow_phase
from rlbench.tracking import schema
from rlbench.tracking.provenance import package_versions
from rlbench.tracking.redaction import mask_passwords

log = logging.getLogger(__name__)
TORCH_ALGOS = {"ppo", "dqn", "hybrid"}  # neural agents: they resolve a device (dqn mostly in numpy)


@dataclass
class TrainOutcome:
    """What a job returns: its score (the sweeper's objective) and where it is recorded."""

    score: float
    run_id: str | None
    steps: int
    pruned: bool = False
    returns: list[float] | None = None  # per-episode final evaluation returns (None if pruned)
    reused: bool = False  # resume=true found this configuration finished: nothing was trained
    url: str | None = None  # the run's page in MLflow's UI (training mode)


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


def _warm_start(path: str, algo_name: str, venv, device: str):
    """``init_from=PATH``: the saved agent (its weights and settings), counting from step 0 so
    that ``train.total_steps`` more are learned. It must be the algorithm being trained."""
    from rlbench.agents import load_agent, peek_algo

    if not Path(path).is_file():
        raise UserError(f"init_from={path}: no such model file")
    saved = peek_algo(path)
    if saved != algo_name:
        raise UserError(
            f"init_from={path} holds a {saved} model, not {algo_name}: set algo={saved}"
        )
    agent = load_agent(path, venv, device)
    agent.num_steps = 0
    log.info("warm start from %s", path)
    return agent


def _registry_name(cfg: DictConfig, trial: Any) -> str | None:
    """``tracking.register``: the registered model a finished run's policy becomes a version of."""
    name = cfg.tracking.get("register")
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"tracking.register must be a model name, got {name!r}")
    if not cfg.tracking.get("enabled", True):
        raise UserError("tracking.register needs tracking.enabled=true: the registry is MLflow's")
    if trial is not None:
        raise UserError("tracking.register is for single runs: register a sweep's best trial run")
    return name.strip()


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
    from rlbench.run.timing import Phases, take_startup

    phases = Phases()
    phases.seconds["startup"] = take_startup()
    phases.begin("setup")
    cfg, env_preset = apply_env_preset(cfg)  # conf/env_presets.yaml's block for this env, if any
    check_config(cfg)  # the preset's values too
    _pin_forecaster(cfg)
    _check_writable(Path(cfg.train.checkpoint_dir), "train.checkpoint_dir")
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.train.threads))
    # numpy's BLAS started with a thread per core before that was read: a forecaster's matmuls
    # would spread over both cores beside a second job
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(cfg.train.threads), user_api="blas")
    from rlbench.tracking import flatten_config, make_tracker

    # First, so MLflow warms up in its helper process while torch and the agent load here.
    tracker = make_tracker(cfg.tracking)
    from rlbench.run.checkpoints import run_key
    from rlbench.run.inputs import input_digests
    from rlbench.run.trial import TrialContext
    from rlbench.tracking.claims import claim_run_key

    # the files the config names, by content: a grown log or a new forecaster version is
    # another job (run key, checkpoints, resume=true) and is recorded as such
    flat = flatten_config(cfg) | {
        schema.INPUTS_PARAM_PREFIX + k: v for k, v in input_digests(cfg).items()
    }
    trial = TrialContext.from_cfg(cfg)
    register = _registry_name(cfg, trial)
    user_tags = {str(k): str(v) for k, v in (cfg.tracking.get("tags") or {}).items()}
    if env_preset is not None:  # recorded; a rerun reuses only runs tuned the same way
        user_tags[schema.ENV_PRESET_TAG] = env_preset
    key = run_key(flat)
    # one live process per configuration: a second one waits here, then finds the run
    # finished (resume=true reuses it) or the checkpoint of a dead one to continue from
    with claim_run_key(key, cfg.train.checkpoint_dir, cfg.tracking, tracker):
        if cfg.resume and trial is None and cfg.tracking.get("enabled", True):
            from rlbench.run.resume import finished_before

            # a rerun grid skips the jobs that finished (their runs are in MLflow)
            done = finished_before(tracker, key, user_tags)
            if done is not None:
                reused = TrainOutcome(done.score, done.run_id, done.steps, reused=True)
                return _with_link(_register(reused, register, tracker), cfg, tracker)
        outcome = _train_claimed(cfg, tracker, flat, trial, register, user_tags, phases)
        return _with_link(outcome, cfg, tracker)


def _pin_forecaster(cfg: DictConfig) -> None:
    """``env.forecast_model=models:/NAME@ALIAS`` (or ``@latest``) becomes ``models:/NAME/N``,
    the version the alias names now in the run's own store (``tracking.uri``). The run key, the
    logged config and params, a rerun and a policy registered from the run then name the
    forecaster it trained with, whatever the alias names later."""
    from rlbench.envs.forecasters import is_uri

    model = OmegaConf.select(cfg, "env.forecast_model", default=None)
    forecast = str(OmegaConf.select(cfg, "env.forecast", default="none")).strip().lower()
    if forecast != "lstm" or not model or not is_uri(str(model)):
        return
    from rlbench.forecast.registry import pinned_reference

    pinned = pinned_reference(str(model), cfg.tracking.get("uri"))
    if pinned != str(model):
        log.info("env.forecast_model=%s is %s now: the run uses that version", model, pinned)
        cfg.env.forecast_model = pinned


def _with_link(outcome: TrainOutcome, cfg: DictConfig, tracker: Any) -> TrainOutcome:
    """``outcome`` with its run's page in MLflow's UI (``tracking.ui_url``), when tracked."""
    from rlbench.tracking import links

    exp_id = tracker.experiment_id() if outcome.run_id else None
    if exp_id is not None:
        ui = links.ui_url(cfg.tracking.get("ui_url"), tracker.uri)
        outcome.url = links.run_url(ui, exp_id, outcome.run_id)
    return outcome


def _train_claimed(cfg, tracker, flat, trial, register, user_tags, phases) -> TrainOutcome:
    """The job once its run key is claimed: build, learn, evaluate, record."""
    from rlbench.envs.forecasters import with_local_model
    from rlbench.run.checkpoints import CheckpointDir, run_key
    from rlbench.tracking import run_tags

    env_id, env_kwargs = env_spec(cfg.env)
    # every copy (training, validation, evaluation) reads the pinned forecaster's local files
    given, env_kwargs = env_kwargs, with_local_model(env_kwargs, cfg.tracking.get("uri"))
    algo_name = str(cfg.algo.name)
    device = "cpu"
    if algo_name in TORCH_ALGOS:
        from rlbench.agents.device import resolve_device

        device = resolve_device(str(cfg.device), cfg.algo)
    if algo_name in TORCH_ALGOS - {"dqn"}:  # they import torch: one thread from the start
        import torch

        torch.set_num_threads(int(cfg.train.threads))

    num_envs = int(cfg.train.num_envs)
    try:  # one copy: the observation's size
        probe = build_env(env_id, env_kwargs, 1, cfg.seed)
    except UserError as err:  # named as the config names it, not by its cached folder
        local, model = env_kwargs.get("forecast_model"), given.get("forecast_model")
        raise UserError(str(err).replace(str(local), str(model))) from None
    check_memory(cfg.algo, num_envs, tuple(probe.observation_space.shape or ()))
    check_seed_overlap(cfg)
    forecaster = _forecaster_tag(probe)
    probe.close()
    with slow_phase(f"building {num_envs} copies of {env_id}"):
        venv = divergence.finite_env(build_env(env_id, env_kwargs, num_envs, cfg.seed))
    with slow_phase(f"building the {algo_name} agent (networks, buffers)"):
        agent = _build_agent(cfg.algo, venv, int(cfg.seed), device)
    if cfg.get("init_from"):
        agent = _warm_start(str(cfg.init_from), algo_name, venv, device)
    ckpt = CheckpointDir(cfg.train.checkpoint_dir, run_key(flat), agent.file_suffix)
    state = ckpt.read_state() if cfg.resume else None
    if state is not None:
        agent = _resume_agent(ckpt, state, algo_name, venv, device)
        log.info("resuming from %s at step %d", ckpt.last, agent.num_steps)
    elif cfg.resume:  # said once per job of a grid would drown the scores: debug there
        log.log(
            logging.DEBUG if in_multirun() else logging.INFO,
            "resume=true: no checkpoint in %s, starting from step 0", ckpt.path,
        )  # fmt: skip

    if "torch" in sys.modules:  # SB3's DQN imported it (the numpy DQN never does)
        sys.modules["torch"].set_num_threads(int(cfg.train.threads))

    tags = run_tags(cfg, device) | {schema.RUN_KEY_TAG: ckpt.path.name}
    tags |= user_tags | forecaster | _inputs_tag(flat)
    if trial is not None:
        tags |= trial.mlflow_tags()
    ckpt.stamp = {"code": tags.get(schema.CODE_TAG), "versions": package_versions()}
    if state is not None and {k: state.get(k) for k in ckpt.stamp} != ckpt.stamp:
        log.warning(
            "resuming a checkpoint made by other code or library versions: the run is tagged "
            "%s=%s, and resume=true will never reuse it as finished",
            schema.CODE_TAG, schema.MIXED_CODE,
        )  # fmt: skip
        tags[schema.CODE_TAG] = ckpt.stamp["code"] = schema.MIXED_CODE
    default_name = f"{algo_name}-{cfg.env.name}-{env_kwargs.get('load', '')}-s{cfg.seed}"
    if trial is not None:  # a sweep's child run: named by its trial number
        default_name = trial.run_name(default_name)
    run_name = cfg.tracking.run_name or default_name
    with slow_phase(f"opening the MLflow store {mask_passwords(str(tracker.uri))}"):
        run_id = tracker.start(
            run_name=run_name,
            params=flat,
            tags=tags,
            parent_run_id=trial.parent_run_id if trial else cfg.tracking.get("parent_run_id"),
            resume_run_id=state.get("mlflow_run_id") if state else None,
        )
    status, error = "FAILED", None
    try:  # from here on the run is ended whatever happens, as FINISHED, FAILED or KILLED
        if trial is not None:
            trial.record_run(run_id, [schema.SCORE_METRIC])
        if state is not None:
            tracker.set_tags({schema.RESUMED_FROM_STEP_TAG: str(agent.num_steps)})
        score, pruned, returns = _learn_and_evaluate(
            cfg, agent, env_id, env_kwargs, tracker, ckpt, trial, state, phases
        )
        if returns is not None:  # the runs list and the run's page show the score
            tracker.set_tags(_labels(cfg, run_name, env_kwargs, score, len(returns)))
        status = "FINISHED"
        outcome = TrainOutcome(score, run_id, agent.num_steps, pruned=pruned, returns=returns)
    except KeyboardInterrupt:
        status, error = "KILLED", "interrupted (Ctrl-C)"
        raise
    except divergence.TrainingDiverged as err:
        error = f"TrainingDiverged: {err}"
        tracker.set_tags({schema.DIVERGED_TAG: "true"})
        ckpt.remove()  # resuming would diverge again: the same config, the same seed
        raise
    except BaseException as err:  # recorded on the run, then shown by the caller
        error = f"{type(err).__name__}: {err}"
        raise
    finally:
        tracker.end(status, error=error)
        venv.close()
    return _register(outcome, register, tracker)


def _inputs_tag(flat: dict[str, Any]) -> dict[str, str]:
    """``rlbench.inputs``: the digests of the files the run read (see rlbench.run.inputs)."""
    from rlbench.run.inputs import as_tag

    prefix = schema.INPUTS_PARAM_PREFIX
    digests = {k.removeprefix(prefix): str(v) for k, v in flat.items() if k.startswith(prefix)}
    return {schema.INPUTS_TAG: as_tag(digests)} if digests else {}


def _forecaster_tag(env: Any) -> dict[str, str]:
    """The trained forecaster the observation carries, by its weights' hash: an alias such as
    ``models:/load-forecaster@latest`` names other weights after a retraining."""
    meta = getattr(getattr(core_of(env), "forecaster", None), "meta", None) or {}
    digest = meta.get("weights_sha256")
    return {schema.FORECASTER_TAG: f"sha256:{digest}"} if digest else {}


def _labels(cfg, run_name: str, env_kwargs, score: float, episodes: int) -> dict[str, str]:
    """The run's name with its score and its description, set once it has a score."""
    from rlbench.tracking import links

    load = env_kwargs.get("load")
    text = links.description(
        str(cfg.algo.name), str(cfg.env.name), load, int(cfg.seed), score, episodes
    )
    return {
        schema.RUN_NAME_TAG: links.scored_name(run_name, score),
        schema.NOTE_TAG: text,
    }


def _register(outcome: TrainOutcome, name: str | None, tracker: Any) -> TrainOutcome:
    """``tracking.register=NAME``: the run's policy becomes a new version of NAME."""
    if name and outcome.run_id and not outcome.pruned:
        from rlbench.tracking import registry

        version = registry.register(outcome.run_id, name, "tracking.register", tracker.uri)
        log.info("registered as %s version %s %s", name, version.version, version.aliases)
    return outcome


def _learn_and_evaluate(cfg, agent, env_id, env_kwargs, tracker, ckpt, trial, state, phases):
    """The training loop proper: learn with periodic work, save, final evaluation; each phase
    timed (``phases``, recorded at the end)."""
    from rlbench.run import forked_validation
    from rlbench.run.evaluate import evaluate, evaluation_seeds
    from rlbench.run.periodic import PeriodicWork
    from rlbench.run.progress import Progress

    total = int(cfg.train.total_steps)
    mode = cfg.train.progress
    if isinstance(mode, bool):  # train.progress=false is what people type
        mode = "auto" if mode else "off"
    progress = Progress(total, f"{cfg.algo.name} on {cfg.env.name}", mode, agent.num_steps)
    saved_best = state.get("best_score") if state else None
    saved_step = state.get("best_step") if state else None
    policy = divergence.FinitePolicy(agent)
    periodic = PeriodicWork(
        agent,
        policy,
        env_id=env_id,
        env_kwargs=env_kwargs,
        validation_seeds=evaluation_seeds(
            cfg.seed, cfg.eval.periodic_episodes, cfg.eval.seed_offset, validation=True
        ),
        deterministic=cfg.eval.deterministic,
        total=total,
        eval_every=int(cfg.train.eval_every),
        checkpoint_every=int(cfg.train.checkpoint_every),
        tracker=tracker,
        ckpt=ckpt,
        trial=trial,
        progress=progress,
        best=-math.inf if saved_best is None else float(saved_best),
        best_step=None if saved_step is None else int(saved_step),
        phases=phases,
        fork=trial is None and not in_multirun() and forked_validation.available(str(agent.device)),
    )
    phases.end("setup")
    learned = False
    try:
        with phases.phase("learn"):
            agent.learn(total, callback=periodic)
        learned = True
    except (ValueError, RuntimeError) as err:
        if isinstance(err, UserError | divergence.TrainingDiverged) or agent.check_finite():
            raise
        # e.g. torch refusing a distribution whose logits are NaN
        raise divergence.TrainingDiverged(
            divergence.message(agent, agent.num_steps, "its parameters")
        ) from err
    finally:
        if not learned:  # a forked validation still running when learning failed: stopped
            periodic.abandon()
        progress.close()
        # the periodic work ran inside learn(): learning proper is the rest
        phases.seconds["learn"] -= phases.seconds["validation"] + phases.seconds["checkpoints"]
    periodic.finish()  # the last forked validation's result
    divergence.check_parameters(agent, agent.num_steps)

    out_dir = _output_dir()
    scored = agent  # the weights the final evaluation scores (eval.policy)
    best = eval_policy(cfg) == "best" and not periodic.pruned
    if best and not periodic.final_is_best(agent.num_steps):
        scored = _load_checkpoint(ckpt.best, agent)
        policy = divergence.FinitePolicy(scored)
    if not periodic.pruned:
        step = agent.num_steps if scored is agent else periodic.best_step
        scored_tags = {schema.SCORED_POLICY_TAG: eval_policy(cfg)}
        if step is not None:  # None: a best checkpoint resumed from a state that did not say
            scored_tags[schema.SCORED_STEP_TAG] = str(step)
        tracker.set_tags(scored_tags)
    with phases.phase("save"):
        _log_model_and_config(cfg, agent, scored, ckpt, tracker, out_dir)
    steps_metric = {schema.TOTAL_STEPS_METRIC: agent.num_steps}
    if periodic.pruned:
        trial.mark_pruned()
        tracker.set_tags(
            {schema.PRUNED_TAG: "true", schema.PRUNED_AT_STEP_TAG: str(agent.num_steps)}
        )
        tracker.log_metrics(steps_metric | phases.metrics(), step=agent.num_steps)
        phases.write(out_dir)
        log.info("pruned at step %d (last evaluation %.4g)", agent.num_steps, periodic.last_score)
        ckpt.remove()
        return periodic.last_score, True, None

    with phases.phase("evaluation"):
        seeds = evaluation_seeds(cfg.seed, cfg.eval.episodes, cfg.eval.seed_offset)
        result = evaluate(policy, env_id, env_kwargs, seeds, deterministic=cfg.eval.deterministic)
        divergence.check_returns(agent, agent.num_steps, result.returns)
    title = f"{cfg.algo.name} on {env_id} {env_kwargs.get('load', '')} (seed {result.seeds[0]})"
    plot = OmegaConf.select(cfg, "eval.trajectory_plot", default="auto")
    if plot == "auto":  # drawn for the run's page; untracked, the trajectory CSV is enough
        plot = bool(cfg.tracking.get("enabled", True))
    with phases.phase("artifacts"):
        for path in result.write_artifacts(out_dir, env_id, title, plot=plot):
            tracker.log_artifact(path, schema.EVAL_DIR)
    tracker.log_metrics(result.metrics() | steps_metric | phases.metrics(), step=agent.num_steps)
    phases.write(out_dir)
    ckpt.remove()
    return result.mean_return, False, [float(r) for r in result.returns]


def eval_policy(cfg: DictConfig) -> str:
    """``eval.policy``: ``final`` (the last weights are scored) or ``best`` (the weights that
    scored best on the validation seeds; configs logged before it existed mean final)."""
    return str(OmegaConf.select(cfg, "eval.policy", default="final"))


def _load_checkpoint(path: Path, agent: Any) -> Any:
    """The agent saved at ``path`` (this run's best checkpoint), on the trained agent's env."""
    from rlbench.agents import agent_class

    return agent_class(agent.name).load(path, agent.env, device=agent.device)


def _log_model_and_config(cfg, agent, scored, ckpt, tracker, out_dir: Path) -> None:
    """The scored model (``model``: the final weights, or with ``eval.policy=best`` the
    validation-selected ones, and then the final weights as ``last_model``), with ``final``
    the best checkpoint's model (``best_model``), and the resolved config, as artifacts."""
    model_path = out_dir / f"{schema.MODEL_STEM}{agent.file_suffix}"
    if scored is agent:
        agent.save(model_path)
    else:  # the checkpoint file itself: the bytes that were validated
        shutil.copyfile(ckpt.best, model_path)
        last_path = out_dir / f"{schema.LAST_MODEL_STEM}{agent.file_suffix}"
        agent.save(last_path)
        tracker.log_artifact(last_path, schema.MODEL_DIR)
    tracker.log_artifact(model_path, schema.MODEL_DIR)
    if ckpt.best.is_file() and eval_policy(cfg) == "final":
        best_path = out_dir / f"{schema.BEST_MODEL_STEM}{agent.file_suffix}"
        shutil.copyfile(ckpt.best, best_path)
        tracker.log_artifact(best_path, schema.MODEL_DIR)
    config_path = out_dir / schema.CONFIG_ARTIFACT
    # storage and server passwords stay out of the artifact the team reads
    config_path.write_text(mask_passwords(OmegaConf.to_yaml(cfg, resolve=True)))
    tracker.log_artifact(config_path)


def _output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    # A Hydra config left over in this process (an earlier ``--cfg job`` or failed compose in a
    # notebook or test) has no output folder: only a job Hydra actually started sets one.
    runtime = HydraConfig.get().runtime if HydraConfig.initialized() else None
    if runtime is not None and not OmegaConf.is_missing(runtime, "output_dir"):
        path = Path(runtime.output_dir)
    else:
        path = Path("outputs/runs/adhoc") / str(os.getpid())  # never another process's files
    path.mkdir(parents=True, exist_ok=True)
    return path


def in_multirun() -> bool:
    """True inside a Hydra multirun (a grid or a sweep): errors then fail the job, not the run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
