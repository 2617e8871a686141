"""Agents that learn from an interaction log instead of from the environment.

They follow the same protocol as every agent (:class:`~rlbench.agents.base.Agent`), so
``rlbench-train algo=bc data=<log>`` trains one and the run evaluates it in the environment on
held-out seeds like any other; the environment is used only for that evaluation. ``learn``
reads ``algo.data`` itself (the log is read once, on the first call), so the training job needs
no offline branch. ``num_steps`` counts logged transitions replayed (minibatch size times
updates), the offline counterpart of environment steps: ``train.total_steps`` is the budget.

- ``qlearning_replay``: the recommender seed's weekly job: tabular Q-learning replayed over the
  last ``window_days`` of the log, keeping only users with at least ``min_interactions``.
- ``offline_dqn``: fitted-Q iteration with a Q-network (double-DQN targets, a target network
  synced every ``target_update`` updates); ``cql``: the same with the conservative penalty
  ``alpha * (logsumexp_a Q(s, a) - Q(s, a_logged))`` that keeps Q low on actions the log never
  shows (Kumar et al. 2020).
- ``bc``: behaviour cloning, a classifier of the logged action: the floor an offline RL agent
  must clear.

Networks are saved as ``.npy`` arrays inside the agent's zip (no pickle, no torch.save).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from rlbench.agents import numpy_mlp
from rlbench.agents.base import Agent, LearnCallback, call_back, epsilon_greedy, one_hot
from rlbench.agents.checkpoint_io import Checkpoint
from rlbench.agents.qlearning import QLearningAgent
from rlbench.errors import UserError
from rlbench.offline.log import InteractionLog, read_log

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv

log = logging.getLogger(__name__)
DATA_KEYS: dict[str, Any] = {
    "data": None,  # the interaction log (a folder or one part file): data=<path>
    "window_days": None,  # only the last N days before the log's latest decision (None: all)
    "min_interactions": 0,  # only users (context user_id) with at least this many decisions
}
DAY_S = 86400.0


def training_log(agent: Agent, settings: Mapping[str, Any]) -> InteractionLog:
    """The log an offline agent learns from: read, checked against the agent's env, windowed
    and filtered by user activity. ``UserError`` when nothing is left."""
    path = settings.get("data")
    if not path:
        raise UserError(
            f"{agent.name} learns from a log: give one with data=<log folder or file> "
            "(write one with rlbench-collect)"
        )
    space = agent.env.observation_space
    data = read_log(path, obs_shape=space.shape, n_actions=agent._discrete_actions())
    days = settings.get("window_days")
    if days is not None:
        if not float(days) > 0:
            raise UserError(f"algo.window_days must be > 0, got {days}")
        end = float(data.ts.max())
        keep = data.ts > end - float(days) * DAY_S
        data = _nonempty(data.subset(keep), path, f"in the last {days} days of the log")
    least = int(settings.get("min_interactions") or 0)
    if least > 1:
        users = data.user_ids()
        _, inverse, counts = np.unique(users, return_inverse=True, return_counts=True)
        keep = counts[inverse] >= least
        data = _nonempty(data.subset(keep), path, f"from users with >= {least} interactions")
    return data


def _nonempty(data: InteractionLog, path: Any, what: str) -> InteractionLog:
    if not len(data):
        raise UserError(f"{path}: no decisions {what}: the window is empty")
    return data


def record_dataset(callback: Any, agent: Agent, data: InteractionLog, path: Any) -> None:
    """Register the log as the MLflow dataset input of the run that trains on it, when the
    training job's callback carries the run's tracker (``rlbench-train``); else nothing."""
    tracker = getattr(callback, "tracker", None)
    run_id = getattr(tracker, "run_id", None)
    if run_id is None:
        return
    from rlbench.offline.tracking import log_dataset_input
    from rlbench.tracking import schema

    try:
        log_dataset_input(tracker.uri, run_id, data, path, schema.TRAINING_CONTEXT)
    except UserError as err:  # the run still trains; the params hold the log's path
        log.warning("could not record the log as the run's dataset: %s", err)


# --------------------------------------------------------------------------- tabular replay


class ReplayQLearningAgent(QLearningAgent):
    """Tabular Q-learning by replaying logged transitions in time order (no environment)."""

    name: ClassVar[str] = "qlearning_replay"
    defaults: ClassVar[dict[str, Any]] = {
        **QLearningAgent.defaults,
        **DATA_KEYS,
        "window_days": 7,  # the seed's weekly job: the last 7 days ...
        "min_interactions": 5,  # ... of users with at least 5 interactions
        "batch_size": 32,  # transitions per table update
        "epsilon": 0.0,  # only for action_probabilities(deterministic=False)
        "epsilon_min": 0.0,
    }

    def learn(self, total_steps: int, callback: LearnCallback | None = None) -> None:
        s = self._settings()
        data = training_log(self, s)
        record_dataset(callback, self, data, s["data"])
        order = np.argsort(data.ts, kind="stable")
        states = self.discretise(data.obs[order])
        nexts = self.discretise(data.next_obs[order])
        actions, rewards = data.action[order], data.reward[order]
        terminal = data.terminal[order]
        batch = int(s["batch_size"])
        if batch < 1:
            raise UserError(f"algo.batch_size must be >= 1, got {batch}")
        n = len(order)
        report_every = max(1000, batch)
        next_report = self.num_steps + report_every
        while self.num_steps < total_steps:
            lo = self.num_steps % n
            hi = min(lo + batch, n)
            delta = self.update(states[lo:hi], actions[lo:hi], rewards[lo:hi], nexts[lo:hi],
                                terminal[lo:hi])  # fmt: skip
            self.num_steps += hi - lo
            if self.num_steps >= next_report or self.num_steps >= total_steps:
                next_report = self.num_steps + report_every
                stats = {"td_error": delta, "log_decisions": float(n)}
                if not call_back(callback, self.num_steps, stats):
                    return


# --------------------------------------------------------------------------- neural agents


class _TorchOfflineAgent(Agent):
    """Shared parts of the neural offline agents: the MLP, minibatches, save/load as arrays."""

    file_suffix: ClassVar[str] = ".zip"
    common: ClassVar[dict[str, Any]] = {
        **DATA_KEYS,
        "net_arch": [64, 64],
        "learning_rate": 1e-3,
        "batch_size": 256,
    }

    def __init__(self, env: VecEnv, cfg: Mapping[str, Any], seed: int, device: str = "cpu") -> None:
        super().__init__(env, cfg, seed, device)
        import torch

        self.s = self._settings()
        self.n_actions = self._discrete_actions()
        self.obs_dim = int(np.prod(env.observation_space.shape))
        torch.manual_seed(self.seed)
        self.net = self._mlp(self.obs_dim, self.n_actions)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=float(self.s["learning_rate"]))
        self.gen = torch.Generator().manual_seed(self.seed)
        self.updates = 0
        self._data: dict[str, Any] | None = None
        self._numpy_net: tuple[int, numpy_mlp.Layers] | None = None

    def _mlp(self, n_in: int, n_out: int):
        import torch

        arch = [int(h) for h in self.s["net_arch"]]
        if any(h < 1 for h in arch):
            raise UserError(f"algo.net_arch must be positive sizes, got {self.s['net_arch']}")
        layers: list[Any] = []
        for h in arch:
            layers += [torch.nn.Linear(n_in, h), torch.nn.ReLU()]
            n_in = h
        layers.append(torch.nn.Linear(n_in, n_out))
        return torch.nn.Sequential(*layers)

    def _tensors(self, callback: LearnCallback | None) -> dict[str, Any]:
        if self._data is None:
            import torch

            data = training_log(self, self.s)
            record_dataset(callback, self, data, self.s["data"])
            n = len(data)
            self._data = {
                "n": n,
                "obs": torch.as_tensor(data.obs.reshape(n, -1), dtype=torch.float32),
                "next_obs": torch.as_tensor(data.next_obs.reshape(n, -1), dtype=torch.float32),
                "action": torch.as_tensor(data.action, dtype=torch.int64),
                "reward": torch.as_tensor(data.reward, dtype=torch.float32),
                "terminal": torch.as_tensor(data.terminal, dtype=torch.float32),
            }
        return self._data

    def learn(self, total_steps: int, callback: LearnCallback | None = None) -> None:
        import torch

        data = self._tensors(callback)
        batch = int(self.s["batch_size"])
        if batch < 1:
            raise UserError(f"algo.batch_size must be >= 1, got {batch}")
        report_every = max(2000, batch)
        next_report = self.num_steps + report_every
        while self.num_steps < total_steps:
            idx = torch.randint(data["n"], (batch,), generator=self.gen)
            stats = self._update({k: v[idx] for k, v in data.items() if k != "n"})
            self.updates += 1
            self.num_steps += batch
            if self.num_steps >= next_report or self.num_steps >= total_steps:
                next_report = self.num_steps + report_every
                if not call_back(callback, self.num_steps, stats):
                    return

    def _update(self, b: dict[str, Any]) -> dict[str, float]:
        raise NotImplementedError

    def outputs(self, obs: np.ndarray) -> np.ndarray:
        return self._scores(obs)

    def _scores(self, obs: np.ndarray) -> np.ndarray:
        """The network's outputs, computed in numpy from a copy of the weights taken after the
        last update: one decision costs ~10 us instead of torch's ~200 us per call (the live
        loop decides one observation at a time), and every caller sees the same numbers."""
        if self._numpy_net is None or self._numpy_net[0] != self.updates:
            self._numpy_net = (self.updates, numpy_mlp.copy_linear(self.net))
        return numpy_mlp.forward(obs, self._numpy_net[1]).astype(np.float64)

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        if deterministic:
            return self._scores(obs).argmax(axis=1)
        pi = self.action_probabilities(obs, deterministic=False)
        u = np.random.default_rng().random(len(pi))
        return np.minimum((pi.cumsum(axis=1) < u[:, None]).sum(axis=1), self.n_actions - 1)

    def check_finite(self) -> bool:
        return all(bool(p.detach().isfinite().all()) for p in self.net.parameters())

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
        arrays = {f"net.{k}": v.detach().numpy() for k, v in self.net.state_dict().items()}
        return {"updates": self.updates}, arrays, {}

    def _restore(self, ckpt: Checkpoint) -> None:
        import torch

        state = {
            k.removeprefix("net."): torch.as_tensor(v)
            for k, v in ckpt.arrays.items()
            if k.startswith("net.")
        }
        self.net.load_state_dict(state)  # a wrong shape is a RuntimeError -> invalid model
        self.updates = int(ckpt.meta["state"]["updates"])
        self._numpy_net = None
        self._after_restore()

    def _after_restore(self) -> None:
        """Rebuild what depends on the restored network (target networks)."""


class BCAgent(_TorchOfflineAgent):
    """Behaviour cloning: a softmax classifier of the logged action given the observation."""

    name: ClassVar[str] = "bc"
    defaults: ClassVar[dict[str, Any]] = {**_TorchOfflineAgent.common}

    def _update(self, b: dict[str, Any]) -> dict[str, float]:
        import torch

        loss = torch.nn.functional.cross_entropy(self.net(b["obs"]), b["action"])
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": float(loss.detach())}

    def action_probabilities(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """The classifier's softmax (one-hot on its mode when deterministic)."""
        z = self._scores(obs)
        if deterministic:
            return one_hot(z.argmax(axis=1), self.n_actions)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)


class OfflineDQNAgent(_TorchOfflineAgent):
    """Fitted-Q iteration with a Q-network; ``cql_alpha > 0`` adds CQL's conservative term."""

    name: ClassVar[str] = "offline_dqn"
    defaults: ClassVar[dict[str, Any]] = {
        **_TorchOfflineAgent.common,
        "gamma": 0.99,
        "target_update": 500,  # updates between target-network syncs
        "cql_alpha": 0.0,
        "epsilon": 0.0,  # exploration of action_probabilities(deterministic=False)
        "max_grad_norm": 10.0,
    }

    def __init__(self, env: VecEnv, cfg: Mapping[str, Any], seed: int, device: str = "cpu") -> None:
        super().__init__(env, cfg, seed, device)
        import copy

        self.gamma, self.alpha = float(self.s["gamma"]), float(self.s["cql_alpha"])
        self.epsilon = float(self.s["epsilon"])
        if not 0 <= self.gamma <= 1 or self.alpha < 0 or not 0 <= self.epsilon <= 1:
            raise UserError(
                f"{self.name}: algo.gamma and algo.epsilon must be in [0, 1] and algo.cql_alpha "
                f">= 0, got {self.gamma}, {self.epsilon}, {self.alpha}"
            )
        if int(self.s["target_update"]) < 1:
            raise UserError(f"algo.target_update must be >= 1, got {self.s['target_update']}")
        self.target = copy.deepcopy(self.net)

    def _after_restore(self) -> None:
        self.target.load_state_dict(self.net.state_dict())

    def _update(self, b: dict[str, Any]) -> dict[str, float]:
        import torch

        q_all = self.net(b["obs"])
        q = q_all.gather(1, b["action"][:, None]).squeeze(1)
        with torch.no_grad():
            best = self.net(b["next_obs"]).argmax(dim=1, keepdim=True)  # double DQN
            q_next = self.target(b["next_obs"]).gather(1, best).squeeze(1)
            y = b["reward"] + self.gamma * (1.0 - b["terminal"]) * q_next
        td = torch.nn.functional.smooth_l1_loss(q, y)
        loss = td
        stats = {"td_loss": float(td.detach())}
        if self.alpha > 0:
            gap = (torch.logsumexp(q_all, dim=1) - q).mean()
            loss = td + self.alpha * gap
            stats["cql_gap"] = float(gap.detach())
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), float(self.s["max_grad_norm"]))
        self.opt.step()
        if (self.updates + 1) % int(self.s["target_update"]) == 0:
            self.target.load_state_dict(self.net.state_dict())
        stats["q_mean"] = float(q.detach().mean())
        return stats

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Q(s, .) for a batch (what softmax exploration in rlbench-collect uses)."""
        return self._scores(obs)

    def action_probabilities(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Greedy on Q (one-hot), or epsilon-greedy at ``algo.epsilon`` when not deterministic."""
        greedy = self._scores(obs).argmax(axis=1)
        return epsilon_greedy(greedy, self.n_actions, 0.0 if deterministic else self.epsilon)


class CQLAgent(OfflineDQNAgent):
    """Conservative Q-learning: :class:`OfflineDQNAgent` with ``cql_alpha`` 1 by default."""

    name: ClassVar[str] = "cql"
    defaults: ClassVar[dict[str, Any]] = {**OfflineDQNAgent.defaults, "cql_alpha": 1.0}
