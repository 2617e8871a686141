"""Which torch device a neural agent runs on: ``auto`` picks cuda, then mps, then cpu.

Kept separate so that choosing a device (and failing clearly when the asked-for one is absent)
is one function that train.py, the agents and the tests share.
"""

from __future__ import annotations

from rlbench.errors import UserError

DEVICES = ("auto", "cpu", "cuda", "mps")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | None = "auto") -> str:
    """A concrete torch device name (``cpu``, ``cuda``, ``cuda:1``, ``mps``) for a config value.

    ``auto`` (or ``None``) gives cuda if available, else mps if available, else cpu. Naming a device
    that this machine does not have is a :class:`UserError`, not a silent fallback: a sweep asked
    to run on a GPU should not quietly run on the CPU.
    """
    name = "auto" if device is None else str(device).strip().lower()
    base = name.split(":", 1)[0]
    if base not in DEVICES:
        raise UserError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if base == "auto":
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
