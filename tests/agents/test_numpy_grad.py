"""Training a torch MLP from numpy (rlbench/agents/numpy_grad.py, torch_startup.py): autograd's
gradients, torch's Adam, and a process that never imports torch's compiler."""

from __future__ import annotations

import copy
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rlbench.agents.numpy_grad import (
    AdamStep,
    MLPView,
    flatten_parameters,
    supported,
)
from rlbench.agents.numpy_mlp import clip_grad_norm


def net(activation=torch.nn.Tanh, sizes=(5, 7, 6, 3)):
    torch.manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("activation", [torch.nn.Tanh, torch.nn.ReLU])
def test_forward_and_backward_are_autograds(activation):
    model = net(activation)
    x = np.random.default_rng(0).standard_normal((11, 5)).astype(np.float32)
    upstream = np.random.default_rng(1).standard_normal((11, 3)).astype(np.float32)
    out = model(torch.as_tensor(x))
    (out * torch.as_tensor(upstream)).sum().backward()
    expected = [p.grad.clone() for p in model.parameters()]
    view = MLPView(list(model), grads=True)  # the same .grad tensors, overwritten
    acts = view.forward(x)
    np.testing.assert_allclose(acts[-1], out.detach().numpy(), atol=1e-6)
    view.backward(acts, upstream)
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, atol=1e-5, rtol=1e-5)


def test_clipping_is_torchs():
    model, twin = net(), net()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        p.grad = torch.full_like(p, 0.3)
        q.grad = torch.full_like(q, 0.3)
    norm = clip_grad_norm([MLPView(list(model), grads=True)], 0.5)
    expected = torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.5)
    assert norm == pytest.approx(float(expected), rel=1e-6)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)


def test_only_plain_cpu_mlps_are_supported():
    assert supported(list(net()))
    assert not supported(list(net(torch.nn.ELU)))
    assert not supported([torch.nn.Linear(2, 2), torch.nn.Tanh(), torch.nn.ReLU()])
    assert not supported([torch.nn.Linear(2, 2).double()])


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (torch.optim.Adam, {}),
        (torch.optim.Adam, {"fused": True, "eps": 1e-5}),
        (torch.optim.Adam, {"weight_decay": 0.1}),
        (torch.optim.AdamW, {"weight_decay": 0.1}),
    ],
    ids=["adam", "fused", "adam-decay", "adamw"],
)
def test_adam_step_is_torchs_and_torch_can_take_over(cls, kwargs):
    ours, theirs = net(), net()
    opt_ours = cls(ours.parameters(), lr=1e-2, **kwargs)
    opt_theirs = cls(theirs.parameters(), lr=1e-2, **kwargs)
    step = AdamStep.of(opt_ours)
    assert step is not None
    g = torch.Generator().manual_seed(1)
    for i in range(60):
        for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
            grad = torch.randn(p.shape, generator=g)
            p.grad, q.grad = grad.clone(), grad.clone()
        if i == 30:  # saved and loaded halfway: new state tensors, the views follow
            opt_ours.load_state_dict(copy.deepcopy(opt_ours.state_dict()))
        step() if i < 50 else opt_ours.step()  # torch continues from our state
        opt_theirs.step()
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)
    for a, b in zip(opt_ours.state.values(), opt_theirs.state.values(), strict=True):
        assert float(a["step"]) == float(b["step"]) == 60
        torch.testing.assert_close(a["exp_avg_sq"], b["exp_avg_sq"], atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [(torch.optim.Adam, {}), (torch.optim.AdamW, {"weight_decay": 0.1})],
    ids=["adam", "adamw"],
)
def test_adam_step_on_flat_parameters_is_torchs(cls, kwargs):
    ours, theirs = net(), net()
    before = [p.detach().clone() for p in ours.parameters()]
    ids = [id(p) for p in ours.parameters()]
    opt_ours = cls(ours.parameters(), lr=1e-2, **kwargs)
    opt_theirs = cls(theirs.parameters(), lr=1e-2, **kwargs)
    assert flatten_parameters(opt_ours)
    assert [id(p) for p in ours.parameters()] == ids  # the same Parameters, their values kept
    for p, b in zip(ours.parameters(), before, strict=True):
        torch.testing.assert_close(p.detach(), b, rtol=0, atol=0)
    params = list(ours.parameters())  # one after another in one buffer
    assert all(q.data_ptr() - p.data_ptr() == p.numel() * 4 for p, q in itertools.pairwise(params))
    step = AdamStep.of(opt_ours)
    assert step is AdamStep.of(opt_ours)  # one per optimizer, flat arrays kept between calls
    g = torch.Generator().manual_seed(1)
    for i in range(60):
        for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
            grad = torch.randn(p.shape, generator=g)
            p.grad.copy_(grad)  # in place, as MLPView.backward writes them
            q.grad = grad.clone()
        if i == 30:  # saved and loaded halfway: new state tensors, flattened again
            opt_ours.load_state_dict(copy.deepcopy(opt_ours.state_dict()))
        step() if i < 50 else opt_ours.step()  # torch continues from our state
        assert step.flat
        opt_theirs.step()
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)
    for a, b in zip(opt_ours.state.values(), opt_theirs.state.values(), strict=True):
        assert float(a["step"]) == float(b["step"]) == 60
        torch.testing.assert_close(a["exp_avg_sq"], b["exp_avg_sq"], atol=1e-7, rtol=1e-5)


def test_other_optimizers_step_through_torch():
    model = net()
    assert AdamStep.of(torch.optim.SGD(model.parameters(), lr=0.1)) is None
    assert AdamStep.of(torch.optim.Adam(model.parameters(), amsgrad=True)) is None


def test_a_numpy_loop_run_never_imports_torchs_compiler(tmp_path):
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from agent_fakes import make_fake
from rlbench.agents import build_agent, load_agent
for cfg in ({{"name": "ppo", "n_steps": 64}}, {{"name": "dqn", "learning_starts": 10}}):
    agent = build_agent(cfg, make_fake(n=4), 0, "cpu")
    agent.learn(512)
    agent.save("model")
    load_agent("model", make_fake(n=4)).learn(1024)
print("torch._dynamo" in sys.modules)
"""
    run = [sys.executable, "-c", code]
    done = subprocess.run(run, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert done.stdout.strip().splitlines()[-1] == "False"
