"""Evidence for ``device=auto``: CPU time of small MLP work against a GPU's kernel-launch floor.

There is no GPU here, so the GPU side is a lower bound, not a measurement: each tensor operation
on a GPU is at least one kernel launch, and a launch costs of the order of microseconds
(``LAUNCH_US``; NVIDIA's CUDA Graphs guide and Modal's GPU glossary describe launch overhead
dominating workloads of many small kernels), plus, per environment step, a copy of the
observations to the device and a synchronising copy of the actions back (``COPY_US`` each).
The CPU side is measured: one PPO-style minibatch update (actor and critic MLPs, log-softmax
policy loss, value loss, backward, gradient clipping, Adam) and one action choice, with one
torch thread. Operations are counted at torch's dispatcher, with the multi-tensor (``foreach``)
Adam and clipping that PyTorch uses on GPUs. A ratio above 1 means the CPU finishes before a
GPU could even have launched the work: ``auto`` should stay on the CPU there.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from benchmarks.common import Row

LAUNCH_US = 5.0  # per kernel launch through PyTorch's eager dispatch (a low estimate)
COPY_US = 10.0  # per small host<->device copy
OBS_DIM, ACTIONS = 7, 3  # rlbench/Autoscaling-v0


def _mlp(width: int, out: int):
    from torch import nn

    return nn.Sequential(
        nn.Linear(OBS_DIM, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
        nn.Linear(width, out),
    )  # fmt: skip


def update_step(width: int, batch: int) -> Callable[[], None]:
    """One PPO-like minibatch update of an actor and a critic of two ``width`` layers."""
    import torch

    pi, vf = _mlp(width, ACTIONS), _mlp(width, 1)
    params = [*pi.parameters(), *vf.parameters()]
    opt = torch.optim.Adam(params, lr=3e-4, foreach=True)
    x, a = torch.randn(batch, OBS_DIM), torch.randint(0, ACTIONS, (batch,))
    adv, ret = torch.randn(batch), torch.randn(batch)

    def step() -> None:
        logp = torch.log_softmax(pi(x), -1).gather(1, a[:, None]).squeeze(1)
        loss = -(logp * adv).mean() + 0.5 * ((vf(x).squeeze(1) - ret) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5, foreach=True)
        opt.step()

    return step


def act_step(width: int, copies: int) -> Callable[[], None]:
    """Choosing actions for ``copies`` observations (what every batched env step needs)."""
    import torch

    pi, x = _mlp(width, ACTIONS), torch.randn(copies, OBS_DIM)

    def step() -> None:
        with torch.no_grad():
            pi(x).argmax(-1).numpy()

    return step


def seconds_per_call(fn: Callable[[], None], calls: int, repeats: int = 3) -> float:
    """CPU seconds per call, best of ``repeats`` (CPU time: other jobs' load does not count)."""
    for _ in range(5):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - start) / calls)
    return best


def tensor_ops(fn: Callable[[], None]) -> int:
    """Tensor operations reaching torch's backends in one call of ``fn`` (on a GPU, each is a
    kernel launch, or a view that launches none)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.calls


def run(quick: bool = False) -> list[Row]:
    import torch

    torch.set_num_threads(1)
    cases = [("act", 8, 64), ("act", 8, 256), ("update", 256, 64), ("update", 256, 256)]
    if not quick:
        cases += [("act", 8, 1024), ("update", 256, 1024)]
    rows = []
    for kind, batch, width in cases:
        fn = (act_step if kind == "act" else update_step)(width, batch)
        calls = max(10, (2000 if kind == "act" else 200) * 64 // width)
        cpu_us = seconds_per_call(fn, calls) * 1e6
        ops = tensor_ops(fn)
        floor_us = ops * LAUNCH_US + (2 * COPY_US if kind == "act" else 0.0)
        what = f"{batch} observations" if kind == "act" else f"minibatch of {batch}"
        rows.append(
            Row(
                group="device",
                case=f"{kind}: {width}x{width} MLP, {what}, CPU (us)",
                value=cpu_us,
                unit="us",
                reference=f"GPU floor: {ops} ops x {LAUNCH_US:.0f} us"
                + (f" + 2 copies x {COPY_US:.0f} us" if kind == "act" else ""),
                reference_value=floor_us,
                ratio=floor_us / cpu_us,
                details={"tensor_ops": ops, "width": width, "batch": batch},
            )
        )
    rows.append(ppo_budget(rows))
    return rows


def ppo_budget(rows: list[Row], steps: int = 100_000) -> Row:
    """The network work of ``algo=ppo`` (64x64, 8 copies, n_steps 128, 4 epochs, batch 256) over
    ``steps`` env steps, priced with the 64x64 rows: CPU estimate vs the GPU's floor."""
    act = next(r for r in rows if r.case.startswith("act: 64x64"))
    update = next(r for r in rows if r.case.startswith("update: 64x64"))
    copies, n_steps, epochs, batch = 8, 128, 4, 256
    acts = steps // copies
    updates = steps // (copies * n_steps) * epochs * (copies * n_steps // batch)
    cpu = (acts * act.value + updates * update.value) / 1e6
    gpu = (acts * act.reference_value + updates * update.reference_value) / 1e6
    return Row(
        group="device",
        case=f"algo=ppo, {steps // 1000}k steps: {acts} action choices + {updates} updates, CPU",
        value=cpu,
        unit="s",
        reference="GPU floor for the same work",
        reference_value=gpu,
        ratio=gpu / cpu,
        details={"acts": acts, "updates": updates},
    )
