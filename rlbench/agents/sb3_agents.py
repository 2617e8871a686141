"""PPO and DQN from stable-baselines3 behind the :class:`~rlbench.agents.base.Agent` protocol.

``algo=dqn`` is built here only where :mod:`rlbench.agents.numpy_dqn` (no torch) does not
apply; its model files (arrays instead of torch blobs) load here too, and this DQN's there.

Every key of the ``algo`` group except ``name`` and ``loop`` (``numpy``: rlbench's forward
passes and gradients for small MLPs, rlbench/agents/{ppo,dqn}_loop.py; ``sb3``: SB3's own) is an
SB3 constructor argument
(``algo.n_steps=2048``); ``policy_kwargs.activation_fn`` and ``policy_kwargs.optimizer_class``
are names (``tanh``, ``relu``, ``adam``...) mapped to torch classes, so configs stay plain YAML.

Model files never use SB3's ``model.save`` (its zip embeds cloudpickled objects). We store the
algo config (JSON), the policy and optimizer ``state_dict`` and the torch RNG state (each a
``torch.save`` blob read back with ``weights_only=True``), numpy's global RNG state (SB3 samples
minibatches and DQN's random actions from it, rlbench's PPO loop its actions), and the
counters; ``load`` rebuilds the model from the config on the given env and loads the state
dicts. DQN's replay buffer is NOT saved (it can
be gigabytes): a resumed DQN first refills it with ``learning_starts`` steps of random actions,
as a fresh one does, before it updates again. Its exploration rate follows
SB3's linear schedule over the ``total_steps`` given to ``learn``; a run resumed with the same
target continues the same schedule.

Seeding: torch, numpy and python are seeded (SB3's ``set_random_seed``) before the networks are
built, and the action space is seeded; the env is NOT reseeded here (SB3's own ``seed=`` would
call ``env.seed``), so an agent loaded onto an evaluation env keeps that env's seeds.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import random
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import set_random_seed

from rlbench.agents import numpy_mlp
from rlbench.agents.base import (
    Agent,
    LearnCallback,
    LearnReporter,
    config_to_dict,
    epsilon_greedy,
    one_hot,
    require_discrete_actions,
)
from rlbench.agents.checkpoint_io import Checkpoint
from rlbench.agents.device import resolve_device
from rlbench.agents.dqn_loop import LeanDQN
from rlbench.agents.ppo_loop import LeanPPO
from rlbench.agents.sb3_logger import SB3_TRAIN_GROUP
from rlbench.agents.sb3_settings import LinearSchedule as LinearSchedule  # re-exported
from rlbench.agents.sb3_settings import check_sb3_settings
from rlbench.agents.torch_startup import optimizers_without_dynamo
from rlbench.envs.vec_base import register_with_sb3
from rlbench.errors import UserError

register_with_sb3()  # our envs are SB3 VecEnvs without importing SB3 themselves

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv

# Keyed by sb3_settings.ACTIVATION_NAMES / OPTIMIZER_NAMES, in their order (a test checks).
ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "tanh": torch.nn.Tanh,
    "relu": torch.nn.ReLU,
    "elu": torch.nn.ELU,
    "leaky_relu": torch.nn.LeakyReLU,
    "gelu": torch.nn.GELU,
    "silu": torch.nn.SiLU,
    "sigmoid": torch.nn.Sigmoid,
}
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "sgd": torch.optim.SGD,
}


@contextlib.contextmanager
def _no_distribution_checks() -> Iterator[None]:
    """Skip torch.distributions' argument validation (a simplex check of every categorical's
    probabilities per call): 0.9-1.8 s of CPU in a 100k-step PPO run, results bit-identical.
    NaN parameters are still caught, by rlbench.run.divergence. The caller's setting comes back."""
    from torch.distributions import Distribution

    previous = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)


class SB3Agent(Agent):
    """Common machinery for an SB3 algorithm; subclasses set ``name`` and ``LOOPS``."""

    #: ``algo.loop``: rlbench's loops (numpy forward passes and gradients for small MLPs,
    #: rlbench/agents/{ppo,dqn}_loop.py; the default) or stable-baselines3's own.
    LOOPS: ClassVar[dict[str, type[BaseAlgorithm]]]
    sb3_class: type[BaseAlgorithm]  # the chosen loop's class
    #: Report to the callback at most this often (environment steps; at least one rollout).
    report_every: ClassVar[int] = 1
    #: Keys of the algo config that are ours, not SB3 constructor arguments.
    own_keys: ClassVar[tuple[str, ...]] = ("loop",)

    def __init__(self, env: VecEnv, cfg: Mapping[str, Any], seed: int, device: str = "cpu") -> None:
        super().__init__(env, cfg, seed, device)
        loop = self.cfg.get("loop", "numpy")
        self.sb3_class = self._loop_class(self.cfg)
        if loop == "numpy":  # its optimizers never meet torch.compile: skip importing it
            optimizers_without_dynamo()
        self.device = resolve_device(device, self.cfg)
        self._check_env(env)
        kwargs = self._sb3_kwargs(self.cfg)
        kwargs.setdefault("policy", "MlpPolicy")
        kwargs.setdefault("verbose", 0)
        # Seed the global generators SB3 uses, build, keep the resulting streams as this
        # agent's own (see _own_rng) and give the caller its generators back untouched.
        self._rng_live = False
        outer, outer_py = _capture_rng(), random.getstate()
        set_random_seed(self.seed, using_cuda=self.device.startswith("cuda"))
        try:
            self.model = self.sb3_class(env=env, device=self.device, **kwargs)
        except (TypeError, ValueError, AssertionError, KeyError) as exc:
            reason = " ".join(str(exc).split())  # one line, as a UserError must be
            reason = reason if len(reason) <= 300 else reason[:297] + "..."
            raise UserError(f"{self.name}: invalid settings ({reason})") from exc
        finally:
            self._rng = _capture_rng()
            _apply_rng(outer)
            random.setstate(outer_py)
        self.model.seed = self.seed
        self.model.action_space.seed(self.seed)

    # num_steps is SB3's own counter, so it cannot drift from what SB3 learned.
    @property
    def num_steps(self) -> int:  # type: ignore[override]
        model = self.__dict__.get("model")
        return 0 if model is None else int(model.num_timesteps)

    @num_steps.setter
    def num_steps(self, value: int) -> None:
        model = self.__dict__.get("model")
        if model is not None:
            model.num_timesteps = int(value)

    def _check_env(self, env: VecEnv) -> None:
        """Hook: refuse envs the algorithm cannot handle with a ``UserError``."""

    @classmethod
    def check_settings(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        return cls._sb3_kwargs(config_to_dict(cfg))

    @classmethod
    def _loop_class(cls, cfg: Mapping[str, Any]) -> type[BaseAlgorithm]:
        loop = cfg.get("loop", "numpy")
        if loop not in cls.LOOPS:
            raise UserError(
                f"algo.loop={loop!r} is not a choice; choose numpy (rlbench's loops, the "
                f"default) or sb3 (stable-baselines3's own) ({cls.name})"
            )
        return cls.LOOPS[loop]

    @classmethod
    def _sb3_kwargs(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """The SB3 constructor arguments from config, checked against its signature
        (:func:`~rlbench.agents.sb3_settings.check_sb3_settings`), class names made classes."""
        params = inspect.signature(cls._loop_class(cfg).__init__).parameters
        settings = check_sb3_settings(cls.name, cfg, params, cls.own_keys)
        if settings.get("policy_kwargs") is not None:
            settings["policy_kwargs"] = _policy_kwargs(settings["policy_kwargs"])
        return settings

    # -- the protocol ------------------------------------------------------------------------
    def learn(self, total_steps: int, callback: LearnCallback | None = None) -> None:
        remaining = int(total_steps) - self.num_steps
        if remaining <= 0:
            return
        forward = _Forward(self, callback, max(self.report_every, 1))
        _silent_logger(self.model)
        with self._own_rng(), _no_distribution_checks():
            self.model.learn(total_timesteps=remaining, reset_num_timesteps=False, callback=forward)

    def action_probabilities(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """The policy's action distribution (PPO: its categorical; DQN: epsilon-greedy on the
        Q-network at the current exploration rate); one-hot on the mode when deterministic."""
        n = self._discrete_actions()
        obs_t, _ = self.model.policy.obs_to_tensor(np.asarray(obs))
        with torch.no_grad(), _no_distribution_checks():
            return self._distribution(obs_t, n, deterministic)

    def _distribution(self, obs_t: Any, n: int, deterministic: bool) -> np.ndarray:
        """pi(a|s) as a numpy ``(N, A)`` array for a batch already on the policy's device."""
        raise NotImplementedError

    def decide(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, np.ndarray]:
        if not deterministic:  # sampled by SB3, from this agent's own random stream
            return super().decide(obs, deterministic=False)
        # one forward pass: the mode is the argmax of the distribution, as in SB3's predict
        pi = self.action_probabilities(obs, deterministic=True)
        return pi.argmax(axis=1).astype(np.int64), pi

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        obs = np.asarray(obs)
        if deterministic:  # an evaluation's or a live decision's few observations: numpy
            net = self._numpy_net() if len(obs) <= NUMPY_BATCH else None
            if net is not None:
                return numpy_mlp.forward(obs, *net).argmax(axis=1).astype(np.int64)
        with (
            contextlib.nullcontext() if deterministic else self._own_rng(),
            _no_distribution_checks(),
        ):
            actions, _ = self.model.predict(np.asarray(obs), deterministic=deterministic)
        space = self.model.action_space
        if isinstance(space, spaces.Box):  # a torque or a force: the numbers, per copy
            return np.asarray(actions, dtype=space.dtype).reshape((len(obs), *space.shape))
        return np.asarray(actions, dtype=np.int64).reshape(len(obs))

    def _greedy_net(self) -> tuple[Any, list[Any]]:
        """The feature extractor and the modules whose outputs' argmax is the greedy action."""
        raise NotImplementedError

    def outputs(self, obs: np.ndarray) -> np.ndarray:
        """The greedy network's outputs (PPO's logits, DQN's Q-values); in numpy when it is a
        plain MLP (:meth:`_numpy_net`), else through torch."""
        obs = np.asarray(obs)
        net = self._numpy_net()
        if net is not None:
            return numpy_mlp.forward(obs, *net)
        from stable_baselines3.common.preprocessing import preprocess_obs

        policy = self.model.policy
        extractor, modules = self._greedy_net()
        obs_t, _ = policy.obs_to_tensor(obs)
        with torch.no_grad():
            h = extractor(preprocess_obs(obs_t, policy.observation_space, policy.normalize_images))
            for module in modules:
                h = module(h)
        return h.cpu().numpy()

    def _numpy_net(self) -> tuple[numpy_mlp.Layers, Any] | None:
        """The greedy network (:meth:`_greedy_net`) as numpy arrays and its activation, or None
        when it is not the plain flatten + MLP this copies (then torch decides). A few
        observations take ~25 us in numpy against ~250-370 us through SB3's ``predict``, which
        is most of a periodic evaluation's time. The copy is taken again whenever training
        has moved on (``num_steps``) or weights were loaded."""
        cached = getattr(self, "_actor_cache", None)
        if cached is not None and cached[0] == self.num_steps:
            return cached[1]
        from stable_baselines3.common.torch_layers import FlattenExtractor

        extractor, modules = self._greedy_net()
        activations = {torch.nn.Tanh: np.tanh, torch.nn.ReLU: numpy_mlp.relu}
        linear = [m for m in modules if isinstance(m, torch.nn.Linear)]
        others = {type(m) for m in modules if not isinstance(m, torch.nn.Linear)}
        net = None
        if (
            isinstance(extractor, FlattenExtractor)
            and isinstance(self.model.observation_space, spaces.Box)
            and isinstance(self.model.action_space, spaces.Discrete)
            and len(others) <= 1
            and others <= set(activations)
        ):
            act = activations[others.pop()] if others else (lambda h: h)
            net = (numpy_mlp.copy_linear(linear), act)
        self._actor_cache = (self.num_steps, net)
        return net

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        """Run with this agent's own torch/numpy global RNG streams, then give the caller's back.

        SB3 draws from the global generators (minibatch order, action sampling, replay sampling),
        so without this two agents in one process, or an evaluation between two ``learn``
        calls, would change each other's results.
        """
        if self._rng_live:  # nested (a callback inside learn): the streams are already ours
            yield
            return
        outer = _capture_rng()
        _apply_rng(self._rng)
        self._rng_live = True
        try:
            yield
        finally:
            self._rng_live = False
            self._rng = _capture_rng()
            _apply_rng(outer)

    def _current_rng(self) -> dict[str, Any]:
        """This agent's streams as of now (live in the globals while it is learning)."""
        return _capture_rng() if self._rng_live else self._rng

    def check_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.policy.parameters())

    def training_stats(self) -> dict[str, float]:
        """SB3's latest ``train`` logger values (losses, learning rate...) as floats, by name."""
        values = getattr(self.model.logger, "name_to_value", {})
        stats = {}
        for key, value in values.items():
            group, _, name = key.partition("/")
            if group == SB3_TRAIN_GROUP and name and isinstance(value, int | float | np.number):
                stats[name] = float(value)
        return stats

    # -- save / load ---------------------------------------------------------------------------
    def _counters(self) -> list[str]:
        return ["_n_updates", "_episode_num"]

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
        policy = self.model.policy
        rng = self._current_rng()
        np_state = rng["numpy"]
        state = {name: getattr(self.model, name) for name in self._counters()}
        state["numpy_global"] = [np_state[0], *map(_jsonable, np_state[2:])]
        state["action_space_rng"] = _space_rng_state(self.model.action_space)
        blobs = {
            "policy.pt": _torch_bytes(policy.state_dict()),
            "optimizer.pt": _torch_bytes(policy.optimizer.state_dict()),
            "torch_rng.pt": _torch_bytes({"cpu": rng["torch"]}),
        }
        return state, {"numpy_global_keys": np_state[1]}, blobs

    def _restore(self, ckpt: Checkpoint) -> None:
        policy = self.model.policy
        state = ckpt.meta["state"]
        if "policy.pt" not in ckpt.blobs and "optimizer" in state:  # the numpy DQN's arrays
            self._restore_arrays(ckpt)
            torch_state = self._current_rng()["torch"]  # none saved: DQN draws none after init
        else:
            for name in ("policy.pt", "optimizer.pt", "torch_rng.pt"):
                if name not in ckpt.blobs:
                    raise KeyError(f"missing {name}")
            policy.load_state_dict(_torch_load(ckpt.blobs["policy.pt"], self.device))
            policy.optimizer.load_state_dict(_torch_load(ckpt.blobs["optimizer.pt"], self.device))
            torch_state = _torch_load(ckpt.blobs["torch_rng.pt"], "cpu")["cpu"]
        for name in self._counters():
            setattr(self.model, name, type(getattr(self.model, name))(state[name]))
        kind, pos, has_gauss, cached = state["numpy_global"]
        keys = np.asarray(ckpt.arrays["numpy_global_keys"], dtype=np.uint32)
        numpy_state = (kind, keys, int(pos), int(has_gauss), float(cached))
        rng = {"torch": torch_state, "numpy": numpy_state}
        outer = _capture_rng()
        try:
            _apply_rng(rng)  # fails here, not later, on a malformed state
        finally:
            _apply_rng(outer)
        self._rng = rng
        if state.get("action_space_rng") is not None:
            self.model.action_space.np_random.bit_generator.state = state["action_space_rng"]
        self._actor_cache = None  # new weights: PPO's numpy copy is taken again


class PPOAgent(SB3Agent):
    """Proximal Policy Optimisation (SB3); reports to the callback after every rollout+update."""

    name: ClassVar[str] = "ppo"
    LOOPS: ClassVar[dict[str, type[BaseAlgorithm]]] = {"numpy": LeanPPO, "sb3": PPO}

    def _distribution(self, obs_t: Any, n: int, deterministic: bool) -> np.ndarray:
        probs = self.model.policy.get_distribution(obs_t).distribution.probs.cpu().numpy()
        return one_hot(probs.argmax(axis=1), n) if deterministic else probs.astype(np.float64)

    def action_probabilities(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """As SB3 computes it; a few observations at a time (a live decision) in numpy from a
        copy of the actor's weights, ~30 us instead of ~400 us through torch. The copy is taken
        again whenever training has moved on (``num_steps``)."""
        obs = np.asarray(obs)
        actor = self._numpy_net() if len(obs) <= NUMPY_BATCH else None
        if actor is None:
            return super().action_probabilities(obs, deterministic)
        h = numpy_mlp.forward(obs, *actor)
        if deterministic:
            return one_hot(h.argmax(axis=1), h.shape[1])
        z = np.exp(h - h.max(axis=1, keepdims=True)).astype(np.float64)
        return z / z.sum(axis=1, keepdims=True)

    def _greedy_net(self) -> tuple[Any, list[Any]]:
        """The feature extractor and the modules whose argmax is the greedy action: the actor
        (policy MLP and action head)."""
        policy = self.model.policy
        return policy.pi_features_extractor, [*policy.mlp_extractor.policy_net, policy.action_net]


NUMPY_BATCH = 16  # observations up to which PPO and DQN decide in numpy (SB3Agent._numpy_net)


class DQNAgent(SB3Agent):
    """Deep Q-Network (SB3); reports about every 1000 steps. Discrete actions only."""

    name: ClassVar[str] = "dqn"
    LOOPS: ClassVar[dict[str, type[BaseAlgorithm]]] = {"numpy": LeanDQN, "sb3": DQN}
    report_every: ClassVar[int] = 1000

    def _check_env(self, env: VecEnv) -> None:
        require_discrete_actions(self.name, env)
        freq = self.cfg.get("train_freq")
        if isinstance(freq, list | tuple) and freq[1:] == ["episode"] and env.num_envs > 1:
            raise UserError(  # SB3 asserts it once learning starts
                f"algo.train_freq={list(freq)} counts episodes, which SB3's DQN does with one "
                f"env copy only; this env has {env.num_envs}: set train.num_envs=1, or count "
                "steps (algo.train_freq=4)"
            )

    def _counters(self) -> list[str]:
        return [*super()._counters(), "_n_calls", "exploration_rate"]

    def _restore_arrays(self, ckpt: Checkpoint) -> None:
        """Networks and Adam's state from a file :mod:`rlbench.agents.numpy_dqn` wrote: arrays
        named by this policy's ``state_dict`` keys, the moments flat in parameter order."""
        policy = self.model.policy
        names = dict(policy.state_dict())
        tensors = {k: torch.as_tensor(ckpt.arrays[f"policy/{k}"]).to(self.device) for k in names}
        policy.load_state_dict(tensors)
        optimizer, saved = policy.optimizer, ckpt.meta["state"]["optimizer"]
        params = optimizer.param_groups[0]["params"]
        flat = {k: np.asarray(ckpt.arrays[f"optimizer/{k}"], np.float32).reshape(-1)
                for k in ("exp_avg", "exp_avg_sq")}  # fmt: skip
        sizes = [p.numel() for p in params]
        if any(len(v) != sum(sizes) for v in flat.values()):
            raise ValueError(f"Adam's moments do not have {sum(sizes)} values")
        state, start = {}, 0
        for i, (p, size) in enumerate(zip(params, sizes, strict=True)):
            moments = {k: torch.from_numpy(v[start : start + size].copy()).view(p.shape)
                       for k, v in flat.items()}  # fmt: skip
            state[i] = {"step": torch.tensor(float(saved["step"])), **moments}
            start += size
        groups = [{**optimizer.state_dict()["param_groups"][0], "lr": float(saved["lr"])}]
        optimizer.load_state_dict({"state": state, "param_groups": groups})

    def _distribution(self, obs_t: Any, n: int, deterministic: bool) -> np.ndarray:
        # SB3's DQN.predict explores with probability exploration_rate (uniform over actions)
        greedy = self.model.q_net(obs_t).argmax(dim=1).cpu().numpy()
        return epsilon_greedy(greedy, n, 0.0 if deterministic else self.model.exploration_rate)

    def action_probabilities(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Epsilon-greedy on the Q-network; a few observations at a time in numpy (as PPO)."""
        obs = np.asarray(obs)
        net = self._numpy_net() if len(obs) <= NUMPY_BATCH else None
        if net is None:
            return super().action_probabilities(obs, deterministic)
        greedy = numpy_mlp.forward(obs, *net).argmax(axis=1)
        eps = 0.0 if deterministic else self.model.exploration_rate
        return epsilon_greedy(greedy, self._discrete_actions(), eps)

    def _greedy_net(self) -> tuple[Any, list[Any]]:
        q_net = self.model.q_net
        return q_net.features_extractor, list(q_net.q_net)

    def learn(self, total_steps: int, callback: LearnCallback | None = None) -> None:
        warmup = self.model.learning_starts
        if self.num_steps > 0 and self.model.replay_buffer.size() == 0:  # resumed from a file
            self.model.learning_starts = self.num_steps + warmup
        try:
            super().learn(total_steps, callback)
        finally:
            self.model.learning_starts = warmup

    def training_stats(self) -> dict[str, float]:
        return {**super().training_stats(), "epsilon": float(self.model.exploration_rate)}


class _Forward(BaseCallback):
    """SB3's callback hooks turned into :class:`~rlbench.agents.base.LearnReporter`'s calls
    (our ``callback(num_steps, stats)`` between chunks of SB3 work); stops SB3 on False."""

    def __init__(self, agent: SB3Agent, callback: LearnCallback | None, every: int) -> None:
        super().__init__(verbose=0)
        self.agent, self.user_callback, self.every = agent, callback, every
        self.reporter: LearnReporter | None = None

    def _on_training_start(self) -> None:
        self.reporter = LearnReporter(self.agent, self.user_callback, self.every)

    def _on_rollout_start(self) -> None:
        self.reporter.rollout_start()

    def _on_step(self) -> bool:
        dones = self.locals.get("dones")
        if dones is None:
            return not self.reporter.stop
        return self.reporter.step(dones, self.locals["infos"])

    def _on_training_end(self) -> None:
        self.reporter.training_end()


def _policy_kwargs(value: Mapping[str, Any]) -> dict[str, Any]:
    """``policy_kwargs`` with class names (checked by :func:`check_sb3_settings`) turned into
    torch classes."""
    kwargs = dict(value)
    for key, table in (("activation_fn", ACTIVATIONS), ("optimizer_class", OPTIMIZERS)):
        name = kwargs.get(key)
        if isinstance(name, str):
            kwargs[key] = table[name.lower()]
    return kwargs


def _silent_logger(model: BaseAlgorithm) -> None:
    """An in-memory logger for a quiet model (no tensorboard, verbose 0): SB3's own default
    makes an empty ``/tmp/SB3-<time>`` folder at every learn() (a 180-run demo left 120 of
    them; a test suite thousands). The statistics are still recorded for the run's metrics."""
    from stable_baselines3.common.logger import Logger

    quiet = model.tensorboard_log is None and not model.verbose
    if quiet and not getattr(model, "_custom_logger", False):
        model.set_logger(Logger(folder=None, output_formats=[]))


def _capture_rng() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}


def _apply_rng(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _torch_load(data: bytes, device: str) -> Any:
    """``torch.load`` restricted to tensors and plain containers (no arbitrary unpickling)."""
    try:
        return torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except Exception as exc:  # torch raises several types for bad bytes, incl. UnpicklingError
        raise ValueError(f"unreadable tensor data ({type(exc).__name__}: {exc})") from exc


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _space_rng_state(space: spaces.Space) -> dict[str, Any] | None:
    rng = getattr(space, "_np_random", None)
    return None if rng is None else rng.bit_generator.state
