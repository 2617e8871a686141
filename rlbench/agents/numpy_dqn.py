"""DQN on small MLP Q-networks in numpy alone: a DQN run that never imports torch.

``algo=dqn`` (``loop: numpy``, the default) on flat float observations and discrete actions,
with SB3's ``MlpPolicy`` and Adam, is stable-baselines3's DQN as :class:`~rlbench.agents.
dqn_loop.LeanDQN` runs it: the same collection loop, replay sampling, exploration schedule,
target updates, Huber loss, gradient clipping and Adam step, the same random streams (numpy's
legacy generator seeded with the run's seed; the action space's own; the Q-network's first
weights drawn as torch's ``nn.Linear`` draws them from ``torch.manual_seed(seed)``) and the same
float32 arithmetic (:mod:`rlbench.agents.numpy_mlp`). From one seed it learns LeanDQN's
parameters bit for bit (tests/agents/test_numpy_dqn.py). What it leaves out is torch: importing
torch and SB3 took ~1 s of a 100k-step command's ~4 s (issue 21).

Anything else (``loop: sb3``, another policy or replay buffer, n-step returns, a GPU, tensorboard)
is built by :class:`rlbench.agents.sb3_agents.DQNAgent`; :meth:`NumpyDQNAgent.variant` decides.
Both write one model file format: the networks and Adam's moments as arrays named by SB3's
``state_dict`` keys (a file written before this class, with ``torch.save`` blobs, still loads).
No torch import here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from itertools import pairwise
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from gymnasium import spaces

from rlbench.agents import numpy_mlp
from rlbench.agents.base import (
    Agent,
    LearnCallback,
    LearnReporter,
    config_to_dict,
    epsilon_greedy,
    require_discrete_actions,
)
from rlbench.agents.checkpoint_io import Checkpoint
from rlbench.agents.replay import ReplayBuffer, huber_td_gradient
from rlbench.agents.sb3_settings import DQN_PARAMETERS, LinearSchedule, check_sb3_settings

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv

#: Q-network state_dict names in SB3's DQNPolicy: ``<net>.q_net.<module index>.<weight|bias>``
NETS = ("q_net", "q_net_target")
#: ``policy_kwargs`` this loop understands (others: SB3's DQN)
POLICY_KWARGS = frozenset({"net_arch", "activation_fn", "optimizer_class", "optimizer_kwargs"})
#: Adam's options this loop computes (``fused``/``foreach`` only choose torch's kernels)
ADAM_OPTIONS = frozenset({"betas", "eps", "weight_decay", "fused", "foreach"})
ADAM_DEFAULTS = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}


def numpy_loop_refusal(settings: Mapping[str, Any]) -> str | None:
    """Why these checked settings need SB3's DQN (a short reason), or None when this loop runs
    them. Judged on the config alone; :meth:`NumpyDQNAgent.variant` adds the env and device."""
    if settings.get("loop", "numpy") != "numpy":
        return "algo.loop is not numpy"
    if settings.get("policy", "MlpPolicy") != "MlpPolicy":
        return "a policy other than MlpPolicy"
    for key, default in (("replay_buffer_class", None), ("optimize_memory_usage", False),
                         ("n_steps", 1), ("tensorboard_log", None)):  # fmt: skip
        if settings.get(key, default) != default:
            return f"algo.{key}"
    if settings.get("replay_buffer_kwargs"):
        return "algo.replay_buffer_kwargs"
    if settings.get("verbose", 0):
        return "algo.verbose"
    freq = settings.get("train_freq", 4)
    if isinstance(freq, tuple | list) and (len(freq) != 2 or freq[1] != "step"):
        return "a train_freq counted in episodes"
    kwargs = settings.get("policy_kwargs") or {}
    if set(kwargs) - POLICY_KWARGS:
        return "policy_kwargs beyond net_arch, activation_fn and the optimizer"
    arch = kwargs.get("net_arch", [64, 64])
    if not isinstance(arch, list | tuple) or not all(isinstance(w, int) for w in arch):
        return "a net_arch that is not a list of widths"
    if str(kwargs.get("activation_fn", "relu")).lower() not in ("relu", "tanh"):
        return "an activation other than relu or tanh"
    if str(kwargs.get("optimizer_class", "adam")).lower() not in ("adam", "adamw"):
        return "an optimizer other than Adam or AdamW"
    options = kwargs.get("optimizer_kwargs") or {}
    if set(options) - ADAM_OPTIONS:
        return "optimizer_kwargs beyond betas, eps and weight_decay"
    return None


def torch_linear_init(sizes: list[int], seed: int) -> numpy_mlp.Layers:
    """``(W, b)`` per layer as ``torch.manual_seed(seed)`` then ``nn.Linear(a, b)`` for each
    consecutive pair would draw them: torch's CPU generator is the 32-bit Mersenne Twister
    seeded as numpy's legacy one, and ``uniform_(lo, hi)`` takes the low 24 bits of each draw
    (``x / 2**24 * (hi - lo) + lo`` in double, rounded to float32). Kaiming-uniform with
    ``a = sqrt(5)`` gives weights and biases both the bound ``1 / sqrt(fan_in)``."""
    _, keys, pos, _, _ = np.random.RandomState(seed).get_state()  # init_genrand(seed)
    bits = np.random.MT19937()
    bits.state = {"bit_generator": "MT19937", "state": {"key": keys, "pos": pos}}

    def uniform(n: int, bound: float) -> np.ndarray:
        lo, hi = np.float64(np.float32(-bound)), np.float64(np.float32(bound))
        x = (bits.random_raw(n) & 0xFFFFFF).astype(np.float64) * (1.0 / (1 << 24))
        return (x * (hi - lo) + lo).astype(np.float32)

    layers = []
    for fan_in, fan_out in pairwise(sizes):
        gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))  # torch's expressions, in its order
        weight_bound = math.sqrt(3.0) * (gain / math.sqrt(fan_in))
        w = uniform(fan_in * fan_out, weight_bound).reshape(fan_out, fan_in)
        b = uniform(fan_out, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0)
        layers.append((w, b))
    return layers


class FlatMLP(numpy_mlp.MLP):
    """An MLP whose parameters, and gradients, each lie in one float32 array (layer by layer,
    weight then bias: the order of SB3's optimizer), as ``flatten_parameters`` lays out a
    torch network for LeanDQN; ``weights`` and ``grads`` are views into them."""

    def __init__(self, layers: numpy_mlp.Layers, relu: bool) -> None:
        self.relu = relu
        self.shapes = [(w.shape, b.shape) for w, b in layers]
        self.flat = np.concatenate([a.ravel() for w, b in layers for a in (w, b)])
        self.flat_grad = np.zeros_like(self.flat)
        self.weights = self._views(self.flat)
        self.grads = self._views(self.flat_grad)

    def _views(self, flat: np.ndarray) -> numpy_mlp.Layers:
        views, start = [], 0
        for w_shape, b_shape in self.shapes:
            w_end = start + math.prod(w_shape)
            b_end = w_end + math.prod(b_shape)
            views.append((flat[start:w_end].reshape(w_shape), flat[w_end:b_end]))
            start = b_end
        return views

    def state(self, net: str) -> dict[str, np.ndarray]:
        """The parameters as SB3's DQNPolicy names them (Linear layers at every other index)."""
        named = {}
        for i, (w, b) in enumerate(self.weights):
            named[f"{net}.q_net.{2 * i}.weight"], named[f"{net}.q_net.{2 * i}.bias"] = w, b
        return named

    def load(self, named: Mapping[str, np.ndarray], net: str) -> None:
        """Take parameters named as :meth:`state` names them (``KeyError``/``ValueError`` if
        one is missing or has another shape)."""
        for i, (w, b) in enumerate(self.weights):
            for name, view in (("weight", w), ("bias", b)):
                value = np.asarray(named[f"{net}.q_net.{2 * i}.{name}"], dtype=np.float32)
                if value.shape != view.shape:
                    raise ValueError(f"{net} layer {i} {name} has shape {value.shape}")
                view[...] = value


class NumpyDQNAgent(Agent):
    """Deep Q-Network in numpy (SB3's algorithm); reports about every 1000 steps."""

    name: ClassVar[str] = "dqn"
    report_every: ClassVar[int] = 1000
    own_keys: ClassVar[tuple[str, ...]] = ("loop",)
    file_version: ClassVar[int] = 2  # tensors as arrays: an rlbench before it names the version

    # -- which class builds a config ---------------------------------------------------------
    @classmethod
    def check_settings(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        settings = cls._checked(config_to_dict(cfg))
        if numpy_loop_refusal(settings) is not None:
            return cls._sb3_class().check_settings(cfg)
        return settings

    @classmethod
    def _checked(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        given = {k: v for k, v in cfg.items() if k != "name"}
        if given.get("loop", "numpy") != "numpy":  # SB3's own loop: its own checks
            return given
        return check_sb3_settings(cls.name, given, DQN_PARAMETERS, cls.own_keys)

    @classmethod
    def variant(cls, cfg: Mapping[str, Any], env: VecEnv, device: str) -> type[Agent]:
        """This class where it runs the config on this env and device, else SB3's DQN agent."""
        from rlbench.agents.device import resolve_device

        settings = cls._checked(config_to_dict(cfg))
        space = env.observation_space
        flat_float = isinstance(space, spaces.Box) and np.issubdtype(space.dtype, np.floating)
        if (
            numpy_loop_refusal(settings) is None
            and flat_float
            and resolve_device(device, {**settings, "name": cls.name}) == "cpu"
        ):
            return cls
        return cls._sb3_class()

    @staticmethod
    def _sb3_class() -> type[Agent]:
        from rlbench.agents.sb3_agents import DQNAgent

        return DQNAgent

    # -- building -----------------------------------------------------------------------------
    def __init__(self, env: VecEnv, cfg: Mapping[str, Any], seed: int, device: str = "cpu") -> None:
        super().__init__(env, cfg, seed, device)
        self.device = "cpu"
        require_discrete_actions(self.name, env)
        s = {name: p.default for name, p in DQN_PARAMETERS.items()}
        s.update(self._checked(self.cfg))
        self.learning_starts, self.batch_size = int(s["learning_starts"]), int(s["batch_size"])
        self.tau, self.gamma, self.max_grad_norm = s["tau"], s["gamma"], s["max_grad_norm"]
        freq = s["train_freq"]
        self.train_freq = int(freq[0] if isinstance(freq, tuple | list) else freq)
        self.gradient_steps = int(s["gradient_steps"])
        self.target_update_interval = int(s["target_update_interval"])
        self.lr_schedule = _schedule(s["learning_rate"])
        fraction, start, end = (s["exploration_fraction"], s["exploration_initial_eps"],
                                s["exploration_final_eps"])  # fmt: skip
        self.exploration_schedule = _exploration(start, end, fraction)
        kwargs = s.get("policy_kwargs") or {}
        self._build_network(kwargs)
        self.replay = ReplayBuffer(int(s["buffer_size"]), env.num_envs, env.observation_space)
        # numpy's legacy generator as SB3's set_random_seed leaves it: coins, replay draws
        self.rng = np.random.RandomState(self.seed)
        self.action_space = env.action_space
        self.action_space.seed(self.seed)
        self.exploration_rate = 0.0
        self._n_calls = self._n_updates = self._episode_num = 0
        self._last_obs: np.ndarray | None = None
        self._progress_remaining = 1.0
        self._stats: dict[str, float] = {}
        self._actor_cache: tuple[int, numpy_mlp.Layers] | None = None

    def _build_network(self, kwargs: Mapping[str, Any]) -> None:
        """The Q-network from torch's first draws, its target a copy, Adam's state at zero."""
        obs_dim = int(np.prod(self.env.observation_space.shape))
        sizes = [obs_dim, *[int(w) for w in kwargs.get("net_arch", [64, 64])]]
        sizes.append(int(self.env.action_space.n))
        relu = str(kwargs.get("activation_fn", "relu")).lower() == "relu"
        self.q_net = FlatMLP(torch_linear_init(sizes, self.seed), relu)
        self.q_net_target = FlatMLP([(w.copy(), b.copy()) for w, b in self.q_net.weights], relu)
        options = dict(kwargs.get("optimizer_kwargs") or {})
        self.decoupled = str(kwargs.get("optimizer_class", "adam")).lower() == "adamw"
        defaults = {**ADAM_DEFAULTS, "weight_decay": 0.01 if self.decoupled else 0.0}
        self.adam = {k: options.get(k, v) for k, v in defaults.items()}
        self.adam["betas"] = tuple(self.adam["betas"])
        self.adam["lr"] = float(self.lr_schedule(1.0))
        self.adam_m = np.zeros_like(self.q_net.flat)
        self.adam_v = np.zeros_like(self.q_net.flat)
        self.adam_step = np.zeros(1, dtype=np.float32)  # torch keeps it in float32

    # -- learning (SB3's OffPolicyAlgorithm.learn and DQN's hooks, in their order) ---------------
    def learn(self, total_steps: int, callback: LearnCallback | None = None) -> None:
        remaining = int(total_steps) - self.num_steps
        if remaining <= 0:
            return
        warmup = self.learning_starts
        if self.num_steps > 0 and self.replay.size() == 0:  # resumed from a file: refill first
            warmup = self.num_steps + self.learning_starts
        total = self.num_steps + remaining
        if self._last_obs is None:
            self._last_obs = self.env.reset()
        report = LearnReporter(self, callback, self.report_every)
        while self.num_steps < total:
            report.rollout_start()
            if not self._collect(total, warmup, report):
                break
            if self.num_steps > 0 and self.num_steps > warmup:
                steps = self.gradient_steps
                if steps < 0:  # SB3's -1: as many as the rollout's env steps
                    steps = self.train_freq * self.env.num_envs
                if steps > 0:
                    self.train(steps)
        report.training_end()

    def _collect(self, total: int, warmup: int, report: LearnReporter) -> bool:
        """One rollout of ``train_freq`` batched steps into the replay buffer; False when the
        callback asked to stop (as SB3, before storing that step's transition)."""
        n = self.env.num_envs
        for _ in range(self.train_freq):
            if self.num_steps < warmup:
                actions = np.array([self.action_space.sample() for _ in range(n)])
            else:
                actions = self._explore(self._last_obs)
            new_obs, rewards, dones, infos = self.env.step(actions)
            self.num_steps += n
            if not report.step(dones, infos):
                return False
            next_obs = np.array(new_obs, copy=True)
            for i in np.flatnonzero(dones):
                if infos[i].get("terminal_observation") is not None:
                    next_obs[i] = infos[i]["terminal_observation"]
            self.replay.add(self._last_obs, next_obs, actions, rewards, dones, infos)
            self._last_obs = new_obs
            self._progress_remaining = 1.0 - float(self.num_steps) / float(total)
            self._n_calls += 1
            if self._n_calls % max(self.target_update_interval // n, 1) == 0:
                self._update_target()
            self.exploration_rate = self.exploration_schedule(self._progress_remaining)
            self._episode_num += int(np.sum(dones))
        return True

    def _explore(self, obs: np.ndarray) -> np.ndarray:
        """SB3's DQN.predict while learning: one coin for every copy, then random or greedy."""
        if self.rng.rand() < self.exploration_rate:
            return np.array([self.action_space.sample() for _ in range(len(obs))])
        return self.q_net.output(obs).argmax(axis=1)

    def _update_target(self) -> None:
        """SB3's polyak_update: a copy at ``tau`` 1, else ``target * (1 - tau) + tau * q``."""
        target, q = self.q_net_target.flat, self.q_net.flat
        if self.tau == 1.0:
            target[...] = q
        else:
            target *= np.float32(1 - self.tau)
            target += np.float32(self.tau) * q

    def train(self, gradient_steps: int) -> None:
        """DQN's update (LeanDQN.train): replay samples, the target network's greedy value,
        Huber loss, gradient-norm clipping, one Adam step per gradient step."""
        self.adam["lr"] = float(self.lr_schedule(self._progress_remaining))
        q_net, target, batch = self.q_net, self.q_net_target, self.batch_size
        losses = []
        for _ in range(gradient_steps):
            minibatch = self.replay.sample(batch, self.rng)
            losses.append(huber_td_gradient(q_net, target, minibatch, self.gamma))
            numpy_mlp.clip_grad_norm([q_net], self.max_grad_norm)
            self.adam_step += 1
            numpy_mlp.adam_update(q_net.flat, q_net.flat_grad, self.adam_m, self.adam_v,
                                  float(self.adam_step[0]), self.adam, self.decoupled)  # fmt: skip
        self._n_updates += gradient_steps
        self._stats = {"learning_rate": self.adam["lr"], "loss": float(np.mean(losses)),
                       "n_updates": float(self._n_updates)}  # fmt: skip

    def training_stats(self) -> dict[str, float]:
        return {**self._stats, "epsilon": float(self.exploration_rate)}

    def check_finite(self) -> bool:
        return bool(np.isfinite(self.q_net.flat).all())

    # -- acting -------------------------------------------------------------------------------
    def _greedy_layers(self) -> numpy_mlp.Layers:
        """``(W.T, b)`` copies for :func:`numpy_mlp.forward`, taken again when training moved
        on: the arithmetic SB3Agent's decisions use, so both agents decide alike."""
        cached = self._actor_cache
        if cached is None or cached[0] != self.num_steps:
            layers = [(w.T.copy(), b.copy()) for w, b in self.q_net.weights]
            cached = self._actor_cache = (self.num_steps, layers)
        return cached[1]

    def outputs(self, obs: np.ndarray) -> np.ndarray:
        """Q(s, .) for a batch (float32)."""
        act = numpy_mlp.relu if self.q_net.relu else np.tanh
        return numpy_mlp.forward(np.asarray(obs), self._greedy_layers(), act)

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        return self.outputs(obs).astype(np.float64)

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        obs = np.asarray(obs)
        if deterministic:
            return self.outputs(obs).argmax(axis=1).astype(np.int64)
        return np.asarray(self._explore(obs), dtype=np.int64).reshape(len(obs))

    def action_probabilities(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Epsilon-greedy on the Q-network at the current exploration rate."""
        greedy = self.outputs(obs).argmax(axis=1)
        eps = 0.0 if deterministic else self.exploration_rate
        return epsilon_greedy(greedy, self._discrete_actions(), eps)

    def decide(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, np.ndarray]:
        if not deterministic:
            return super().decide(obs, deterministic=False)
        pi = self.action_probabilities(obs, deterministic=True)  # one forward pass
        return pi.argmax(axis=1).astype(np.int64), pi

    # -- save / load (DQNAgent's file: same meta, the tensors as arrays) -------------------------
    COUNTERS: ClassVar[tuple[str, ...]] = ("_n_updates", "_episode_num", "_n_calls")

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
        kind, keys, pos, has_gauss, cached = self.rng.get_state()
        state: dict[str, Any] = {name: getattr(self, name) for name in self.COUNTERS}
        state["exploration_rate"] = float(self.exploration_rate)
        state["numpy_global"] = [kind, int(pos), int(has_gauss), float(cached)]
        state["action_space_rng"] = self.action_space.np_random.bit_generator.state
        state["optimizer"] = {"step": float(self.adam_step[0]), "lr": self.adam["lr"]}
        arrays = {"numpy_global_keys": keys}
        for net_name, net in zip(NETS, (self.q_net, self.q_net_target), strict=True):
            arrays.update({f"policy/{k}": v for k, v in net.state(net_name).items()})
        arrays["optimizer/exp_avg"], arrays["optimizer/exp_avg_sq"] = self.adam_m, self.adam_v
        return state, arrays, {}

    def _restore(self, ckpt: Checkpoint) -> None:
        state = ckpt.meta["state"]
        if "policy.pt" in ckpt.blobs:  # written by SB3's DQN agent: its torch.save blobs
            policy, moments, step = _from_torch_blobs(ckpt.blobs, self.q_net)
        else:
            policy = {k.removeprefix("policy/"): v for k, v in ckpt.arrays.items()
                      if k.startswith("policy/")}  # fmt: skip
            moments = (ckpt.arrays["optimizer/exp_avg"], ckpt.arrays["optimizer/exp_avg_sq"])
            step = float(state["optimizer"]["step"])
        for net_name, net in zip(NETS, (self.q_net, self.q_net_target), strict=True):
            net.load(policy, net_name)
        for target, value in zip((self.adam_m, self.adam_v), moments, strict=True):
            value = np.asarray(value, dtype=np.float32).reshape(-1)
            if value.shape != target.shape:
                raise ValueError(f"Adam's moments have {value.size} values, not {target.size}")
            target[...] = value
        self.adam_step[0] = step
        for name in self.COUNTERS:
            setattr(self, name, int(state[name]))
        self.exploration_rate = float(state["exploration_rate"])
        kind, pos, has_gauss, cached = state["numpy_global"]
        keys = np.asarray(ckpt.arrays["numpy_global_keys"], dtype=np.uint32)
        self.rng.set_state((kind, keys, int(pos), int(has_gauss), float(cached)))
        if state.get("action_space_rng") is not None:
            self.action_space.np_random.bit_generator.state = state["action_space_rng"]
        self._actor_cache = None


def _schedule(value: Any) -> Callable[[float], float]:
    """SB3's FloatSchedule: a number is constant, a :class:`LinearSchedule` decays."""
    if isinstance(value, LinearSchedule):
        return lambda progress: float(value(progress))
    return lambda _progress: float(value)


def _exploration(start: float, end: float, fraction: float) -> Callable[[float], float]:
    """SB3's exploration schedule: linear from ``start`` to ``end`` over the first
    ``fraction`` of training, then ``end``."""

    def epsilon(progress_remaining: float) -> float:
        if (1 - progress_remaining) > fraction:
            return end
        return start + (1 - progress_remaining) * (end - start) / fraction

    return epsilon


def _from_torch_blobs(
    blobs: Mapping[str, bytes], q_net: FlatMLP
) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray], float]:
    """The parameters, Adam's moments (flat, in parameter order) and step of a model file
    that SB3's DQN agent wrote with ``torch.save`` (read with ``weights_only``: no pickle)."""
    from rlbench.agents.sb3_agents import _torch_load

    policy = {k: v.numpy() for k, v in _torch_load(blobs["policy.pt"], "cpu").items()}
    optimizer = _torch_load(blobs["optimizer.pt"], "cpu")
    ids = optimizer["param_groups"][0]["params"]
    per_param = [optimizer["state"].get(i, {}) for i in ids]
    if not all(per_param):  # saved before the first update: Adam has no state yet
        zeros = np.zeros_like(q_net.flat)
        return policy, (zeros, zeros), 0.0
    moments = tuple(
        np.concatenate([s[key].numpy().reshape(-1) for s in per_param])
        for key in ("exp_avg", "exp_avg_sq")
    )
    return policy, moments, float(per_param[0]["step"])  # type: ignore[return-value]
