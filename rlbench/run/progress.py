"""Progress of a long job: a bar on a terminal, a few quiet log lines anywhere else (CI, files)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from rlbench.config import PROGRESS_MODES

log = logging.getLogger("rlbench")
MODES = PROGRESS_MODES  # train.progress


class Progress:
    """Reports ``update(done, **stats)`` calls against a known ``total``.

    ``mode``: ``auto`` (a tqdm bar when stderr is a terminal, log lines otherwise), ``bar``,
    ``log`` (a line every 10% of the work) or ``off``.

    Agents learn in whole chunks (PPO's rollouts, DQN's and the offline agents' batches), so a
    run ends past its budget by part of one (20480 steps for 20000): the steps reached are only
    known then. From the update that passes the budget, the total is the steps reached (tqdm
    drops a bar past its total; "102%" is no share of anything) and the budget asked for is
    shown beside it.
    """

    def __init__(self, total: int, desc: str, mode: str = "auto", initial: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"train.progress must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode, self.total, self.desc = mode, max(int(total), 1), desc
        self.asked = self.total  # the budget; self.total grows to the steps reached past it
        self._done = self._initial = int(initial)
        self._next_log = self._done + self.total // 10
        self._t0 = time.perf_counter()
        self._bar: Any = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self._done, desc=desc, unit="step")

    def update(self, done: int, **stats: float) -> None:
        """Move to ``done`` steps; ``stats`` are shown beside the bar or in the log line."""
        if done > self.total:  # the last chunk of work ran past the budget
            self.total = done
            if self._bar is not None:
                self._bar.total = done
        shown = {k: f"{v:.4g}" for k, v in stats.items()}
        if self.total > self.asked:
            shown["asked"] = str(self.asked)
        if self._bar is not None:
            self._bar.update(max(done - self._done, 0))
            if shown:
                self._bar.set_postfix(shown, refresh=False)
        elif self.mode == "log" and (done >= self._next_log or done >= self.total):
            elapsed = time.perf_counter() - self._t0
            # a rate over a few milliseconds (an agent that does not learn) means nothing
            rate = f"{(done - self._initial) / elapsed:.0f} steps/s" if elapsed > 0.1 else "at once"
            past = (
                f"; {self.asked} asked, rounded up to whole rollouts/batches"
                if self.total > self.asked
                else ""
            )
            log.info(
                "%s: %d/%d steps (%.0f%%, %s%s) %s",
                self.desc,
                done,
                self.total,
                100 * done / self.total,
                rate,
                past,
                " ".join(f"{k}={v}" for k, v in shown.items() if k != "asked"),
            )
            self._next_log = done + self.total // 10
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
