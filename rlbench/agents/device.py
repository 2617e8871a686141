"""Which torch device a neural agent runs on: ``auto`` keeps small MLP policies on the CPU.

Kept separate so that choosing a device (and failing clearly when the asked-for one is absent)
is one function that train.py, the agents and the tests share.

Why ``auto`` is not simply "the GPU when there is one": every tensor operation on a GPU costs a
kernel launch of the order of microseconds (~5 us through PyTorch's eager dispatch), and every
environment step adds a copy of the observations to the device and a synchronising copy of the
actions back. A 64x64 MLP does too little arithmetic per operation to win that back. Measured
here with one CPU thread (``python -m benchmarks --only device``): choosing actions for 8 copies
takes ~25 us on the CPU against a GPU floor of ~70 us (10 launches and two copies); a PPO
minibatch update of two 64x64 networks on 256 samples takes ~0.95 ms on the CPU and ~160 tensor
operations, a floor of ~0.8 ms on a GPU. Over ``algo=ppo``'s 100k steps (12,500 action choices,
~1,550 updates) that is ~1.8 s of network work on the CPU against a GPU floor of ~2.1 s.
stable-baselines3 reaches the same conclusion and warns when PPO/A2C run an MLP policy on a GPU
(``OnPolicyAlgorithm._maybe_recommend_cpu``; DLR-RM/stable-baselines3 issues #1245 and #2012).
Wider layers change the balance: with 256x256 layers the same update takes ~3.8 ms on the CPU,
five times the GPU floor.

The rule: for an SB3 ``MlpPolicy`` (the default policy) whose minibatch work, ``batch_size``
times the multiply-adds of its hidden layers, is below :data:`GPU_MIN_MACS`, ``auto`` gives the
CPU even where CUDA or MPS exists. Naming the device (``device=cuda``, ``device=mps``) always
forces it; ``auto`` without an algorithm config keeps the old order (cuda, then mps, then cpu).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

from rlbench.errors import UserError

DEVICES = ("auto", "cpu", "cuda", "mps")

#: Minibatch multiply-adds (``batch_size`` x hidden-layer MACs per sample, actor and critic
#: summed) below which ``auto`` keeps an MLP policy on the CPU. It is where a GPU breaks even on
#: ``algo=ppo``'s mix of work (module doc): its faster updates (~1,550 per 100k steps) must repay
#: its slower action choices (12,500 x 45-95 us). A CPU update costs ~0.8 ms of per-operation
#: overhead plus 3 x MACs at ~26G MAC/s (measured at 256x256), so break-even is ~3M MACs if a
#: launch costs 5 us and ~13M if it costs 10 us; 10M leans to the realistic end.
GPU_MIN_MACS = 10_000_000
#: SB3's defaults where the algorithm config leaves them out (MlpPolicy 64x64; PPO batch 64).
DEFAULT_NET_ARCH = (64, 64)
DEFAULT_BATCH_SIZE = 64


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _hidden_macs(layers: Sequence[Any]) -> int:
    """Multiply-adds per sample between consecutive hidden layers of one network."""
    widths = [int(w) for w in layers]
    return sum(a * b for a, b in pairwise(widths))


def minibatch_macs(algo: Mapping[str, Any]) -> int | None:
    """Multiply-adds of one minibatch through the hidden layers of an MLP policy, or ``None``.

    ``None`` when the algorithm is not an SB3 ``MlpPolicy`` (a CNN or custom policy: its size is
    unknown here). ``net_arch`` may be a list (shared by actor and critic, or DQN's Q-network)
    or SB3's ``{"pi": [...], "vf": [...]}`` / ``{"qf": [...]}`` form; the input and output
    layers are left out (their width comes from the environment and is small for MLP tasks).
    """
    policy = algo.get("policy", "MlpPolicy")
    if policy != "MlpPolicy":
        return None
    kwargs = algo.get("policy_kwargs") or {}
    arch = kwargs.get("net_arch", DEFAULT_NET_ARCH)
    if arch is None:
        arch = DEFAULT_NET_ARCH
    if isinstance(arch, Mapping):
        per_sample = sum(_hidden_macs(layers or ()) for layers in arch.values())
    else:
        per_sample = _hidden_macs(arch)
        if str(algo.get("name", "")) != "dqn":
            per_sample *= 2  # actor and critic: SB3 builds one of each from a list
    batch = algo.get("batch_size", DEFAULT_BATCH_SIZE) or DEFAULT_BATCH_SIZE
    return int(batch) * per_sample


def small_mlp(algo: Mapping[str, Any] | None) -> bool:
    """True when ``algo`` is an MLP policy too small for a GPU to speed up (see module doc)."""
    if algo is None:
        return False
    macs = minibatch_macs(algo)
    return macs is not None and macs < GPU_MIN_MACS


def resolve_device(device: str | None = "auto", algo: Mapping[str, Any] | None = None) -> str:
    """A concrete torch device name (``cpu``, ``cuda``, ``cuda:1``, ``mps``) for a config value.

    ``auto`` (or ``None``) gives the CPU for a small MLP policy (``algo``: the ``algo`` config
    group; see :func:`small_mlp`), else cuda if available, else mps if available, else cpu.
    Naming a device that this machine does not have is a :class:`UserError`, not a silent
    fallback: a sweep asked to run on a GPU should not quietly run on the CPU.
    """
    name = "auto" if device is None else str(device).strip().lower()
    base = name.split(":", 1)[0]
    if base not in DEVICES:
        raise UserError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if base == "auto":
        if small_mlp(algo):
            return "cpu"
        if _cuda_available():
            return "cuda"
        if _mps_available():
            return "mps"
        return "cpu"
    if base == "cuda" and not _cuda_available():
        raise UserError(f"device={device} but torch sees no CUDA GPU here; use device=auto or cpu")
    if base == "mps" and not _mps_available():
        raise UserError(f"device={device} but torch has no MPS backend here; use auto or cpu")
    return name
