"""Collect an interaction log: run a policy with known exploration in an env, log every decision.

The behaviour policy is the base policy (a rule, an ``algo=`` option, a saved model file, a
registered model ``models:/NAME@ALIAS``, or a finished run ``runs:/<id>``) under epsilon-greedy
or softmax exploration, so each logged action carries its exact probability (the propensity
off-policy evaluation divides by). A seed fixes the collection: the same command writes the same
decisions.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlbench.errors import UserError
from rlbench.offline.log import InteractionLog, LogWriter

EXPLORE = ("epsilon", "softmax", "none")


def action_values(agent: Any, obs: np.ndarray) -> np.ndarray:
    """Q(s, .) of an agent that has action values (tabular or a Q-network); ``UserError`` else."""
    if hasattr(agent, "q_values"):
        return np.asarray(agent.q_values(obs), dtype=np.float64)
    if hasattr(agent, "q") and hasattr(agent, "discretise"):  # tabular Q-learning
        return agent.q[agent.discretise(obs)]
    model = getattr(agent, "model", None)
    if model is not None and hasattr(model, "q_net"):  # SB3 DQN
        import torch

        obs_t, _ = model.policy.obs_to_tensor(np.asarray(obs))
        with torch.no_grad():
            return model.q_net(obs_t).cpu().numpy().astype(np.float64)
    raise UserError(
        f"softmax exploration needs action values; {getattr(agent, 'name', agent)!r} has none "
        "(use a Q-learning, DQN or offline Q agent, or epsilon exploration)"
    )


def check_memoryless(agent: Any, role: str) -> None:
    """``UserError`` for a policy whose decision depends on its own past (threshold's
    cooldown): propensities and off-policy estimates are pi(a|s) of the observation alone, so
    the log would describe another policy than the one named."""
    setting = getattr(agent, "history_setting", lambda: None)()
    if setting:
        raise UserError(
            f"{role} has {setting}: its decisions depend on its own past actions, which the "
            "log's propensities pi(a|s) cannot say; use a policy of the observation alone "
            "(algo.cooldown=0)"
        )


@dataclass
class Behaviour:
    """A base policy under exploration: its pi is what the log records as propensities.

    ``epsilon``: (1 - eps) * base + eps / A, where base is the agent's deterministic pi.
    ``softmax``: exp(Q / temperature), normalised. ``none``: the agent's own pi (stochastic
    agents such as PPO, or an epsilon-greedy Q-learner at its current epsilon).
    """

    agent: Any
    explore: str = "epsilon"
    epsilon: float = 0.1
    temperature: float = 1.0
    name: str = "policy"
    version: str = "0"

    def __post_init__(self) -> None:
        if self.explore not in EXPLORE:
            raise UserError(f"explore must be one of {', '.join(EXPLORE)}, got {self.explore!r}")
        if not 0.0 <= float(self.epsilon) <= 1.0:
            raise UserError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if not float(self.temperature) > 0.0:
            raise UserError(f"temperature must be > 0, got {self.temperature}")
        check_memoryless(self.agent, "the policy")

    def action_probabilities(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        if self.explore == "softmax":
            q = action_values(self.agent, obs) / float(self.temperature)
            q = np.exp(q - q.max(axis=1, keepdims=True))
            return q / q.sum(axis=1, keepdims=True)
        if self.explore == "none":
            return np.asarray(self.agent.action_probabilities(obs, deterministic=False))
        base = np.asarray(self.agent.action_probabilities(obs, deterministic=True))
        return (1.0 - self.epsilon) * base + self.epsilon / base.shape[1]

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return self.action_probabilities(obs).argmax(axis=1)


def collect(
    venv: Any,
    behaviour: Behaviour,
    writer: LogWriter | None,
    *,
    episodes: int,
    seed: int,
    start_ts: float | None = None,
    seconds_per_step: float = 1.0,
    run_name: str = "collect",
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run ``behaviour`` in the batched ``venv`` until ``episodes`` episodes have finished; write
    every decision of them to ``writer`` (None: only return them). Decision times are
    ``start_ts + seconds_per_step * (batched step)``; each copy's episode is one session whose
    context ``user_id`` is its simulated user. Returns the columns and the episode returns.
    ``progress(k)`` is called whenever ``k`` more episodes have finished."""
    if episodes < 1:
        raise UserError(f"episodes must be a positive integer, got {episodes}")
    rng = np.random.default_rng(seed)
    n = venv.num_envs
    venv.seed(seed)
    obs = venv.reset()
    start_ts = time.time() if start_ts is None else start_ts
    ep_of = np.arange(n)  # the episode number each copy is in
    next_ep = n
    step = np.zeros(n, dtype=np.int64)
    finished: list[float] = []
    ret = np.zeros(n)
    rows: dict[str, list[Any]] = {k: [] for k in ("episode", "obs", "action", "propensity")}
    rows |= {k: [] for k in ("reward", "next_obs", "done", "terminal", "step")}
    t = 0
    while len(finished) < episodes:
        probs = behaviour.action_probabilities(obs)
        u = rng.random(n)
        actions = np.minimum((probs.cumsum(axis=1) < u[:, None]).sum(axis=1), probs.shape[1] - 1)
        new_obs, rewards, dones, infos = venv.step(actions)
        next_obs = new_obs.copy()
        terminal = np.zeros(n, dtype=bool)
        for i in np.flatnonzero(dones):
            next_obs[i] = infos[i]["terminal_observation"]
            terminal[i] = not infos[i].get("TimeLimit.truncated", False)
        ts = start_ts + seconds_per_step * t
        live = ep_of < episodes  # copies still in one of the first ``episodes`` episodes
        for i in np.flatnonzero(live):
            rec = {
                "ts": ts, "episode": f"{run_name}-{ep_of[i]}", "step": int(step[i]),
                "obs": obs[i].tolist(), "action": int(actions[i]),
                "propensity": float(probs[i, actions[i]]), "reward": float(rewards[i]),
                "next_obs": next_obs[i].tolist(), "done": bool(dones[i]),
                "terminal": bool(terminal[i]), "policy": behaviour.name,
                "policy_version": behaviour.version,
                "context": {"user_id": f"{run_name}-user-{ep_of[i]}"},
            }  # fmt: skip
            if writer is not None:
                writer.append(rec)
            for k in rows:
                rows[k].append(rec[k])
        ret += rewards
        step += 1
        before = len(finished)
        for i in np.flatnonzero(dones):
            if ep_of[i] < episodes:
                finished.append(float(ret[i]))
            ret[i] = 0.0
            step[i] = 0
            ep_of[i] = next_ep
            next_ep += 1
        if progress is not None and len(finished) > before:
            progress(len(finished) - before)
        obs = new_obs
        t += 1
    return {"returns": finished, "rows": rows}


def on_policy_returns(venv: Any, policy: Any, episodes: int, seed: int) -> np.ndarray:
    """Returns of ``episodes`` episodes of ``policy`` acting by its own pi (sampled, seeded):
    the truth an off-policy estimate is judged against. Episodes are numbered in the order the
    copies start them and exactly the first ``episodes`` are kept, so short episodes are not
    over-represented (a copy's later episodes never replace another copy's unfinished one)."""
    rng = np.random.default_rng(seed)
    n = venv.num_envs
    venv.seed(seed)
    obs = venv.reset()
    ep_of = np.arange(n)
    next_ep = n
    ret = np.zeros(n)
    out = np.full(episodes, np.nan)
    while (ep_of < episodes).any():
        probs = policy.action_probabilities(obs)
        u = rng.random(n)
        actions = np.minimum((probs.cumsum(axis=1) < u[:, None]).sum(axis=1), probs.shape[1] - 1)
        obs, rewards, dones, _ = venv.step(actions)
        ret += rewards
        idx = np.flatnonzero(dones)
        if len(idx):
            keep = idx[ep_of[idx] < episodes]
            out[ep_of[keep]] = ret[keep]
            ret[idx] = 0.0
            ep_of[idx] = next_ep + np.arange(len(idx))
            next_ep += len(idx)
    return out


def rows_to_log(rows: dict[str, list[Any]], env_id: str, venv: Any) -> InteractionLog:
    """The decisions :func:`collect` returned, as an in-memory :class:`InteractionLog` (what
    :func:`~rlbench.offline.log.read_log` would give for the same decisions written to disk)."""
    n = len(rows["action"])
    shape = tuple(venv.observation_space.shape)
    names, codes = np.unique(np.asarray(rows["episode"]), return_inverse=True)
    return InteractionLog(
        env_id=env_id,
        obs_shape=shape,
        n_actions=int(venv.action_space.n),
        ts=np.zeros(n),
        episode=codes.astype(np.int64),
        step=np.asarray(rows["step"], dtype=np.int64),
        obs=np.asarray(rows["obs"], dtype=np.float64).reshape(n, *shape),
        action=np.asarray(rows["action"], dtype=np.int64),
        propensity=np.asarray(rows["propensity"], dtype=np.float64),
        reward=np.asarray(rows["reward"], dtype=np.float64),
        next_obs=np.asarray(rows["next_obs"], dtype=np.float64).reshape(n, *shape),
        done=np.asarray(rows["done"], dtype=bool),
        terminal=np.asarray(rows["terminal"], dtype=bool),
        policy=[""] * n,
        context=[{}] * n,
        episode_ids=[str(x) for x in names],
    )


def parse_time(text: str | None) -> float | None:
    """Unix seconds of an ISO date or date-time (UTC unless it says otherwise); None: now."""
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"--start {text!r} is not an ISO date (2026-01-31 or 2026-01-31T12:00)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


# --------------------------------------------------------------------------- loading policies


def compose(overrides: Sequence[str]) -> Any:
    """The train config composed with ``overrides`` (env=..., algo=..., env.load=...); Hydra's
    composition errors become one-line ``UserError``s, described as ``rlbench-train`` does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rlbench import cli
    from rlbench.config import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        try:
            return hydra_compose("train", overrides=list(overrides))
        except UserError:
            raise
        except Exception as err:  # unknown options and keys, malformed overrides
            raise UserError(cli.describe(err)) from None


def is_model_spec(spec: str) -> bool:
    """A saved policy (``models:/``, ``runs:/``, a .zip/.npz file), not an ``algo`` option."""
    return spec.startswith(("models:/", "runs:/")) or Path(spec).suffix in (".zip", ".npz")


def policy_from_spec(
    spec: str,
    env: str,
    venv: Any,
    seed: int,
    tracking_uri: str | None,
    overrides: Sequence[str] = (),
):
    """:func:`load_policy` for a spec that is a saved policy or an ``algo`` option of
    ``conf/algo`` (composed with ``env=<env>`` and ``overrides``)."""
    algo_cfg = None
    if not is_model_spec(spec):
        algo_cfg = compose([f"env={env}", f"algo={spec}", *overrides]).algo
    return load_policy(spec, algo_cfg, venv, seed, tracking_uri)


def load_policy(spec: str, algo_cfg: Any, venv: Any, seed: int, tracking_uri: str | None):
    """``(agent, name, version)`` for a policy spec: ``models:/NAME@ALIAS``, ``runs:/<id>``, a
    model file, or (anything else) the composed ``algo`` config."""
    from rlbench.agents import build_agent, load_agent

    if spec.startswith("models:/"):
        return _registered(spec, tracking_uri)
    if spec.startswith("runs:/"):
        return _from_run(spec.removeprefix("runs:/").strip("/"), venv, tracking_uri)
    if Path(spec).suffix in (".zip", ".npz", ".json") or Path(spec).is_file():
        if not Path(spec).is_file():
            raise UserError(f"{spec}: no such model file")
        return load_agent(spec, venv), Path(spec).stem, "file"
    return build_agent(algo_cfg, venv, seed=seed, device="cpu"), str(algo_cfg.name), "config"


def _registered(spec: str, tracking_uri: str | None):
    name, version, agent, _, _ = registered_policy(spec, tracking_uri)
    return agent, name, version


def registered_policy(spec: str, tracking_uri: str | None) -> tuple[str, str, Any, str, dict]:
    """``(name, version, agent, env id, env settings)`` of ``models:/NAME@ALIAS``: the env the
    version acts in, its forecaster pinned (a log of it must be collected there)."""
    from rlbench.tracking import registry

    name, _, _ = registry.parse_model_uri(spec)
    version = registry.resolve_alias(spec, tracking_uri)
    agent, venv, env_id, env_kwargs = registry.load_version_env(name, version, tracking_uri)
    venv.close()
    return name, str(version), agent, env_id, env_kwargs


def _from_run(run_id: str, venv: Any, tracking_uri: str | None):
    import tempfile

    from rlbench.agents import load_agent

    path = run_model_file(run_id, tempfile.mkdtemp(prefix="rlbench-collect-"), tracking_uri)
    try:
        agent = load_agent(path, venv)
    except UserError as err:  # named as the run's model: the download is a temporary file
        raise UserError(str(err).replace(str(path), f"run {run_id}'s model")) from None
    return agent, f"run-{run_id[:8]}", run_id


def run_model_file(run_id: str, folder: str | Path, tracking_uri: str | None) -> Path:
    """The final model a finished run logged (``model/model.*``), downloaded into ``folder``."""
    from rlbench.tracking import schema
    from rlbench.tracking.client import mlflow_client
    from rlbench.tracking.store import resolve_uri

    client = mlflow_client(resolve_uri(tracking_uri))
    try:
        files = [f.path for f in client.list_artifacts(run_id, schema.MODEL_DIR)]
    except Exception as err:  # MLflow raises several kinds
        from rlbench.errors import first_line

        raise UserError(f"no MLflow run {run_id!r}: {first_line(err)}") from None
    final = [p for p in files if Path(p).stem == schema.MODEL_STEM]
    if not final:
        raise UserError(f"run {run_id} has no {schema.MODEL_DIR}/{schema.MODEL_STEM}.* model")
    return Path(client.download_artifacts(run_id, final[0], str(folder)))
