"""``device=auto`` picks cuda, then mps, then cpu; a device the machine lacks is a UserError."""

from __future__ import annotations

import pytest

from rlbench.agents import device
from rlbench.errors import UserError


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(device, "_cuda_available", lambda: cuda)
    monkeypatch.setattr(device, "_mps_available", lambda: mps)
    assert device.resolve_device("auto") == expected
    assert device.resolve_device(None) == expected


def test_named_devices_pass_through_when_present(monkeypatch):
    monkeypatch.setattr(device, "_cuda_available", lambda: True)
    assert device.resolve_device("CPU") == "cpu"
    assert device.resolve_device("cuda:1") == "cuda:1"


def test_a_missing_or_unknown_device_is_a_user_error(monkeypatch):
    monkeypatch.setattr(device, "_cuda_available", lambda: False)
    monkeypatch.setattr(device, "_mps_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA GPU"):
        device.resolve_device("cuda")
    with pytest.raises(UserError, match="no MPS"):
        device.resolve_device("mps")
    with pytest.raises(UserError, match="unknown device 'tpu'; choose one of auto, cpu, cuda, mps"):
        device.resolve_device("tpu")
