"""Periodic validation in a forked child on the idle core, while the parent trains on.

A single ``rlbench-train`` uses one core (one torch thread), and each validation (5 greedy
episodes every ``train.eval_every`` steps) stops learning while it runs: 0.27 s of a 4.4 s DQN
command. Forked at the validation point, the child sees the weights as they are then
(copy-on-write) and evaluates them on the validation seeds; the parent trains on and collects
the result at the next validation point or after learning (:class:`PeriodicWork
<rlbench.run.periodic.PeriodicWork>` logs the point, keeps the best checkpoint, raises a
diverged return). The same weights and seeds give the same numbers as in the parent.

Only where it helps and changes nothing else (:func:`available`): Linux (a child dies with its
parent), a second core, and a single run: a sweep's pruner needs each score before training
goes on, and a grid's workers already fill the cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from rlbench import cli


def available(device: str = "cpu") -> bool:
    """Whether this process may fork its validations: Linux with two cores or more for it,
    and an agent on the CPU (CUDA does not survive a fork)."""
    if sys.platform != "linux" or not str(device).startswith("cpu"):
        return False
    return cli.usable_cores() > 1


class ValidationChild:
    """One validation running in a forked child: :meth:`result` waits for it, :meth:`kill`
    stops it (learning failed or was interrupted)."""

    def __init__(self, pid: int, fd: int, steps: int) -> None:
        self.pid, self.fd, self.steps = pid, fd, steps

    def result(self) -> dict[str, Any]:
        """What the child's work returned; a ``RuntimeError`` naming the step when it failed.
        Interrupted while waiting (Ctrl-C), it stops the child before passing that on."""
        fd, self.fd = self.fd, -1
        try:
            with os.fdopen(fd, "rb") as pipe:
                data = pipe.read()
        except BaseException:
            self._stop()
            raise
        os.waitpid(self.pid, 0)
        if not data:
            raise RuntimeError(f"the validation at step {self.steps} ended without a result")
        out = json.loads(data)
        if "error" in out:
            raise RuntimeError(f"the validation at step {self.steps} failed: {out['error']}")
        return out

    def kill(self) -> None:
        """Stop the child and reap it (nothing is left running or unreaped)."""
        if self.fd < 0:
            return
        os.close(self.fd)
        self.fd = -1
        self._stop()

    def _stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def fork(work: Callable[[], dict[str, Any]], steps: int) -> ValidationChild:
    """Run ``work`` (returning a JSON-able dict) in a forked child; the parent returns at once.

    The child never returns into the caller's code: it writes its result (or its error) to a
    pipe and leaves with ``os._exit``, running no atexit handler and flushing nothing of the
    parent's (the tracking helper, log files and progress bar stay the parent's)."""
    read, write = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        code, out = 1, {"error": "interrupted"}
        try:
            cli.start_helper_child(parent)
            out, code = work(), 0
        except BaseException as err:  # reported to the parent, which raises it
            out = {"error": f"{type(err).__name__}: {err}"}
        finally:
            with contextlib.suppress(BaseException):
                data = json.dumps(out).encode()
                while data:
                    data = data[os.write(write, data) :]
            os._exit(code)
    os.close(write)
    return ValidationChild(pid, read, steps)
