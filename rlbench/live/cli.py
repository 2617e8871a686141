"""``rlbench-live``: the Hydra app that builds a session (adapter, registry, tracker, view) and
runs it (:mod:`rlbench.live.loop`).

    rlbench-live session=demo decisions=20000
    rlbench-live experiment=drift
    rlbench-live source=scheduler source.schedule=jobs.yaml   (env=scheduler comes with it)

Its config lives in ``conf_live/`` (apart from ``rlbench-train``'s, whose ``--help`` it must not
clutter); ``env=`` and ``retrain.algo=`` name options of ``conf/env`` and ``conf/algo``.
Mistakes are one ``error:`` line and exit code 2 (:mod:`rlbench.cli`).
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import hydra
from omegaconf import DictConfig, OmegaConf

from rlbench import cli
from rlbench.config import CONF_LIVE_DIR, SEED_MAX, env_spec, override_value
from rlbench.envs.forecasters import with_local_model
from rlbench.errors import UserError, first_line
from rlbench.live.adapters import Adapter, SimAdapter
from rlbench.live.champion import Registry
from rlbench.live.dashboard import make_view
from rlbench.live.forecast_feed import build_feed
from rlbench.live.gate import sequential_risk
from rlbench.live.loop import LiveSession, State
from rlbench.tracking import schema
from rlbench.tracking.redaction import MaskingStream

log = logging.getLogger(__name__)
SOURCES = ("sim", "trace", "scheduler")


def make_adapter(cfg: DictConfig, env_id: str, env_kwargs: dict[str, Any]) -> Adapter:
    """The system ``source`` describes (``source._target_``: a user's own adapter class)."""
    src = cfg.source
    if src.get("_target_"):
        adapter = hydra.utils.instantiate(src, _convert_="all")
        if not isinstance(adapter, Adapter):
            raise UserError(f"source._target_={src._target_}: not an rlbench live Adapter")
        return adapter
    kind = str(src.get("kind", "sim"))
    if kind not in SOURCES:
        raise UserError(f"source.kind={kind!r}: choose one of {', '.join(SOURCES)}")
    if kind == "scheduler":
        from rlbench.live.scheduler import ENV_ID, SchedulerAdapter

        if env_id != ENV_ID:  # source=scheduler sets env=scheduler; an explicit env= overrode it
            raise UserError(
                f"source=scheduler needs env=scheduler (its policies act in {ENV_ID}), but "
                f"env={cfg.env} is {env_id}: drop env= or set env=scheduler"
            )
        return SchedulerAdapter(
            src.schedule, Path(cfg.folder) / "scheduler", script=src.get("script"),
            step_seconds=float(src.step_seconds), timeout_s=float(src.timeout_s),
            seconds_per_minute=float(src.seconds_per_minute), env_kwargs=env_kwargs,
        )  # fmt: skip
    kwargs = dict(env_kwargs)
    if kind == "trace":
        kwargs["load"] = "trace"
        if src.get("trace_path"):
            kwargs["trace_path"] = str(src.trace_path)
    return SimAdapter(
        env_id, kwargs, speed=float(src.speed), drift_at=src.drift_at,
        drift_kwargs=dict(src.drift_args or {}), seed=int(cfg.seed),
    )  # fmt: skip


def _env(cfg: DictConfig) -> tuple[str, dict[str, Any], DictConfig]:
    from rlbench.offline.collect import compose

    overrides = [f"env={cfg.env}"]
    overrides += [f"env.{k}={override_value(v)}" for k, v in cfg.env_args.items()]
    try:
        train_cfg = compose(overrides)
    except UserError as err:
        raise UserError(f"env={cfg.env} with env_args: {err}") from None
    env_id, kwargs = env_spec(train_cfg.env)
    return env_id, kwargs, train_cfg


def _policy_loader(cfg: DictConfig, env_id: str, env_kwargs: dict[str, Any], uri: str):
    """``spec`` -> agent: ``models:/NAME/VERSION`` from the registry, else an ``algo`` option
    (the fallback rule) built on the session's environment."""
    from rlbench.offline.collect import policy_from_spec
    from rlbench.run.train import build_env

    venv = build_env(env_id, env_kwargs, 1, int(cfg.seed))

    def load(spec: str) -> Any:
        return policy_from_spec(spec, str(cfg.env), venv, int(cfg.seed), uri)[0]

    return load


def _check(cfg: DictConfig) -> None:
    if not cfg.tracking.enabled:
        raise UserError(
            "rlbench-live needs a tracking store (the registry holds the champion): "
            "drop tracking.enabled=false"
        )
    _check_numbers(cfg)
    if str(cfg.explore.kind) not in ("epsilon", "softmax", "none"):
        raise UserError(f"explore.kind={cfg.explore.kind!r}: choose epsilon, softmax or none")
    from rlbench.offline.collect import compose

    try:
        compose([f"env={cfg.env}"])
    except UserError as err:
        raise UserError(f"env={cfg.env}: {err}") from None
    for key in ("initial", "fallback", "retrain.algo"):  # found now, not at the first retraining
        option = OmegaConf.select(cfg, key)
        try:
            compose([f"env={cfg.env}", f"algo={option}"])
        except UserError as err:
            raise UserError(f"{key}={option}: {err}") from None
    from rlbench.offline.ope import ESTIMATORS, FEATURES

    if str(cfg.gate.estimator) not in ESTIMATORS:
        raise UserError(f"gate.estimator={cfg.gate.estimator!r}: choose one of "
                        f"{', '.join(ESTIMATORS)}")  # fmt: skip
    if str(cfg.gate.features) not in (*FEATURES, "auto"):
        raise UserError(f"gate.features={cfg.gate.features!r}: choose one of auto, "
                        f"{', '.join(FEATURES)}")  # fmt: skip
    if cfg.get("serve_url") and str(cfg.explore.kind) != "epsilon":
        raise UserError(
            "serve_url: rlbench-serve sends the greedy action, so exploration around it must be "
            f"explore.kind=epsilon (got {cfg.explore.kind})"
        )


#: key -> (int or float, lowest, highest, null allowed); an open end is None. A value out of
#: range is refused before the first decision: a gate.alpha of 2 reversed the gate's interval
#: and promoted a worse challenger, a report_every of 0 crashed after the first decision.
NUMBERS: dict[str, tuple[type, float | None, float | None, bool]] = {
    "seed": (int, 0, SEED_MAX, False),
    "log.batch": (int, 1, None, False),
    "explore.epsilon": (float, 0, 1, False),
    "explore.temperature": (float, 0, None, False),
    "decisions": (int, 1, None, True),
    "initial_steps": (int, 1, None, False),
    "report_every": (int, 1, None, False),
    "triggers.count.min_decisions": (int, 1, None, False),
    "triggers.count.max_success_rate": (float, 0, 1, True),
    "triggers.elapsed_s": (float, 0, None, True),
    "triggers.drift.window": (int, 2, None, False),
    "triggers.drift.blocks": (int, 2, None, False),
    "triggers.drift.z": (float, 0, None, False),
    "retrain.steps": (int, 1, None, False),
    "retrain.window": (int, 1, None, False),
    "retrain.holdout": (float, 0, 1, False),
    "retrain.min_interval": (int, 0, None, False),
    "gate.n_boot": (int, 10, None, False),
    "gate.min_episodes": (int, 2, None, False),
    "gate.alpha": (float, 0, 1, False),
    "gate.gamma": (float, 0, 1, False),
    "gate.margin": (float, None, None, False),
    "gate.approval_timeout_s": (float, 0, None, True),
    "shadow.decisions": (int, 0, None, False),
    "canary.episodes": (int, 0, None, False),
    "canary.share": (float, 0, 1, False),
    "canary.alpha": (float, 0, 1, False),
    "canary.stop_alpha": (float, 0, 1, True),
    "rollback.window": (int, 0, None, False),
    "rollback.margin": (float, None, None, False),
    "rollback.alpha": (float, 0, 1, False),
    "rollback.blocks": (int, 2, None, False),
}
#: ends that are not allowed themselves (a share of 0 or 1, an alpha of 0 or 1)
OPEN_ENDS = {"retrain.holdout", "gate.alpha", "rollback.alpha", "triggers.drift.z",
             "explore.temperature", "canary.share", "canary.alpha",
             "canary.stop_alpha"}  # fmt: skip
#: on/off settings: true or false, never a word read as true
SWITCHES = (
    "log.fsync", "triggers.count.enabled", "triggers.drift.enabled", "triggers.file",
    "retrain.warm_start", "gate.approval", "tracking.background",
)  # fmt: skip
BIGGEST = 2**62  # an integer setting beyond this is a typo (and overflows SQLite's INTEGER)


def _shown(bound: float) -> str:
    return "2**63-1" if bound == SEED_MAX else f"{bound:g}"


def _check_numbers(cfg: DictConfig) -> None:
    for key in SWITCHES:
        value = OmegaConf.select(cfg, key, default=False)
        if not isinstance(value, bool):
            raise UserError(f"{key} must be true or false, got {value!r}")
    for key, kind in (("env_args", dict), ("retrain.overrides", list)):
        value = OmegaConf.select(cfg, key, default=None)
        plain = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        if value is not None and not isinstance(plain, kind):
            what = "env settings (+env_args.load=spike)" if kind is dict else "a list of overrides"
            raise UserError(f"{key} must be {what}, got {value!r}")
    model = str(cfg.get("model", ""))
    if not model.strip() or any(c in model for c in "/:"):
        raise UserError(f"model={model!r}: give a registered model name without '/' or ':'")
    for key, (kind, low, high, nullable) in NUMBERS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None and nullable:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        ok = number and math.isfinite(value) and (kind is float or float(value).is_integer())
        ok = ok and (kind is float or abs(value) <= max(BIGGEST, high or 0))
        strict = key in OPEN_ENDS
        if ok and low is not None:
            ok = value > low if strict else value >= low
        if ok and high is not None:
            ok = value < high if strict else value <= high
        if not ok:
            what = "an integer" if kind is int else "a number"
            if low is not None and high is not None:
                bounds = f" {'strictly ' if strict else ''}between {low:g} and {_shown(high)}"
            elif low is not None:
                bounds = f" {'>' if strict else '>='} {low:g}"
            else:
                bounds = ""
            null = " (or null)" if nullable else ""
            raise UserError(f"{key} must be {what}{bounds}{null}, got {value!r}")
    episodes = OmegaConf.select(cfg, "canary.episodes")
    if episodes == 1:  # one episode an arm has no spread to test against
        raise UserError("canary.episodes must be 0 (off) or an integer >= 2 (episodes per arm), "
                        "got 1")  # fmt: skip


def _pin_forecaster(cfg: DictConfig, folder: Path) -> dict[str, str] | None:
    """``env_args.forecast_model=models:/NAME@ALIAS`` becomes the version it named at the
    session's first start (saved in its state), in ``cfg`` itself: the source, the feed, every
    retraining and every later start then use that version, as a training run keeps its
    forecaster (a resumed session read the alias anew: its log mixed two forecasters'
    observations). ``{"given", "pinned"}`` to save, or None without a registered forecaster."""
    from rlbench.envs.forecasters import is_uri
    from rlbench.forecast.registry import pinned_reference

    args = cfg.get("env_args") or {}
    given = args.get("forecast_model")
    if str(args.get("forecast") or "none").strip().lower() != "lstm" or not given:
        return None
    if not is_uri(str(given)):
        return None
    path = folder / schema.LIVE_STATE_FILE
    saved = State.load(path).forecast_model if path.exists() else None
    if saved and saved.get("given") == str(given):
        pinned = saved["pinned"]
        now = pinned_reference(str(given), str(cfg.tracking.uri))
        if now != pinned:
            log.info("env_args.forecast_model=%s names %s now; the session keeps %s, the "
                     "version it began with", given, now, pinned)  # fmt: skip
    else:
        pinned = pinned_reference(str(given), str(cfg.tracking.uri))
        if saved:  # the user named another forecaster: said, then used
            log.warning("env_args.forecast_model=%s (the session began with %s, %s): the "
                        "session goes on with %s", given, saved.get("given"),
                        saved.get("pinned"), pinned)  # fmt: skip
    OmegaConf.update(cfg, "env_args.forecast_model", pinned, force_add=True)
    return {"given": str(given), "pinned": pinned}


def _given(key: str) -> bool:
    """Whether the command line set ``key`` (False outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    task = HydraConfig.get().overrides.task
    return any(o.split("=", 1)[0].lstrip("+~") == key for o in task)


def run_session(cfg: DictConfig, view: Any = "config") -> State:
    """Build and run the session ``cfg`` describes; the session's state at the end.

    ``view``: a callable given snapshots, None for none, or ``"config"``: ``cfg.dashboard``.
    """
    from rlbench.tracking.tracker import flatten_config, make_tracker

    _check(cfg)
    folder = Path(cfg.folder)
    folder.mkdir(parents=True, exist_ok=True)
    pinned = _pin_forecaster(cfg, folder)
    env_id, env_kwargs, train_cfg = _env(cfg)
    # a registered forecaster is looked up in the session's own store, once: the source, the
    # shape check and the feed all read that version's files
    env_kwargs = with_local_model(env_kwargs, str(cfg.tracking.uri))
    horizon = OmegaConf.select(train_cfg, "env.horizon", default=None)
    risk = sequential_risk(str(cfg.gate.estimator), None if horizon is None else int(horizon))
    adapter = make_adapter(cfg, env_id, env_kwargs)
    feed = None
    try:  # a mistake found from here on still releases the adapter (the scheduler's lock)
        if adapter.env_id != env_id:
            raise UserError(
                f"the source speaks {adapter.env_id}, but env={cfg.env} is {env_id}: set env= "
                "to the environment the adapter's policies were trained in"
            )
        expected = gym.make(env_id, **env_kwargs).observation_space.shape
        if tuple(adapter.observation_space.shape) != tuple(expected):
            raise UserError(
                f"the source's observations have shape {adapter.observation_space.shape}, but "
                f"{env_id} with these env_args gives {expected}: a policy trained there cannot "
                "act on it (a forecast adds env_args.forecast_steps entries: give the source "
                "the same env_args)"
            )
        feed = build_feed(
            cfg.get("forecast"), env_kwargs, adapter.observation_space.shape, str(cfg.tracking.uri)
        )
        tracker = make_tracker(cfg.tracking)
        registry = Registry(tracker.uri)
        session = LiveSession(
            cfg, adapter, folder, tracker, registry,
            _policy_loader(cfg, env_id, env_kwargs, tracker.uri), feed=feed,
        )  # fmt: skip
        resumed = session.state.run_id is not None
        run_id = tracker.start(
            run_name=cfg.tracking.get("run_name") or f"live-{cfg.session}",
            params=flatten_config(cfg),
            tags={schema.KIND_TAG: schema.LIVE_KIND, schema.LIVE_SESSION_TAG: str(cfg.session)},
            resume_run_id=session.state.run_id,
        )
    except BaseException:
        adapter.close()
        raise
    shown = make_view(str(cfg.dashboard)) if view == "config" else view
    session.view = shown or (lambda snapshot: None)
    session.state.run_id = run_id
    session.state.forecast_model = pinned or session.state.forecast_model
    session.state.save(session.state_path, durable=True)
    status, error = "FAILED", None
    try:
        if resumed:
            log.info("resuming session %s at decision %d", cfg.session, session.state.decisions)
        if risk:
            log.warning("%s", risk)
        if not registry.exists(str(cfg.model)):
            session.bootstrap()
        elif _given("initial"):  # it only names the first champion of a new model
            log.warning("initial=%s is not used: %s is registered and has its champion (a new "
                        "model=NAME starts from initial)", cfg.initial, cfg.model)  # fmt: skip
        state = session.run()
        status = "FINISHED"
        return state
    except KeyboardInterrupt:
        status, error = "KILLED", "interrupted"
        raise
    except Exception as err:
        error = first_line(err)
        raise
    finally:
        if shown is not None and hasattr(shown, "close"):
            shown.close()
        if feed is not None:
            feed.close()
        adapter.close()
        tracker.end(status, error=error)


@hydra.main(version_base="1.3", config_path=CONF_LIVE_DIR, config_name="live")
def app(cfg: DictConfig) -> None:
    """Hydra task: run the session, print where its records are."""
    try:
        state = run_session(cfg)
    except UserError as err:
        if cli.wants_traceback():
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(cli.exit_code(err))
    verdicts = [h.get("verdict", "?") for h in state.history]
    mean = state.reward_sum / max(state.decisions, 1)
    print(
        f"session {cfg.session}: {state.decisions} decisions, mean reward {mean:.4g}, "
        f"{len(verdicts)} retrainings ({', '.join(verdicts) or 'none'}); "
        f"mlflow run: {state.run_id}; log: {Path(cfg.folder) / 'log'}"
    )


def main() -> None:
    """The ``rlbench-live`` console script."""
    cli.run_app(app, wrap_stdout=MaskingStream)


if __name__ == "__main__":
    main()
