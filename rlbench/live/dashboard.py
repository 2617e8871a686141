"""The live view of a session: a rich terminal dashboard, or log lines where there is no terminal.

Both take the session's :meth:`~rlbench.live.loop.LiveSession.snapshot` (decisions, reward,
the log's written and fsynced counts, triggers, the champion, a challenger in shadow or on
canary with its episodes per arm, the last retrainings) a few times
per second; the log view prints at most every ``every_s`` seconds so CI logs stay short.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

log = logging.getLogger("rlbench.live")
VIEWS = ("auto", "rich", "log", "off")


def _fmt(x: Any, spec: str = ".4g") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


class LogView:
    """One line every ``every_s`` seconds (and the last one at close)."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s, self._next = every_s, 0.0
        self._last: dict[str, Any] | None = None

    def __call__(self, snap: dict[str, Any]) -> None:
        self._last = snap
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self.every_s
            self._print(snap)
            self._last = None

    def _print(self, s: dict[str, Any]) -> None:
        awaiting = s.get("awaiting")
        log.info(
            "%s: %d decisions (%s/s), reward %s recent / %s mean, champion v%s%s%s, %d "
            "retrainings%s",
            s["session"], s["decisions"], _fmt(s["rate"], ",.0f"), _fmt(s["reward_recent"]),
            _fmt(s["reward_mean"]), s["champion"], " (KILL SWITCH: fallback acts)"
            if s["acting"] == "fallback" else "", _canary_text(s.get("canary"), ", "),
            _retraining_count(s),
            f" (v{awaiting} waiting for approval)" if awaiting is not None else "",
        )  # fmt: skip

    def close(self) -> None:
        """Print the last state if it has not been printed."""
        if self._last is not None:
            self._print(self._last)


class RichView:
    """A rich ``Live`` panel: the counts, the acting policy, triggers and the last retrainings."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self._live = Live(console=Console(), refresh_per_second=4, transient=False)
        self._live.start()

    def __call__(self, snap: dict[str, Any]) -> None:
        self._live.update(self.render(snap))

    @staticmethod
    def render(s: dict[str, Any]) -> Any:
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table

        head = Table.grid(padding=(0, 2))
        head.add_row("decisions", f"{s['decisions']:,}", "per second", _fmt(s["rate"], ",.0f"))
        head.add_row("reward (last 1000)", _fmt(s["reward_recent"]), "mean", _fmt(s["reward_mean"]))
        acting = "[bold red]fallback rule (kill switch)[/]" if s["acting"] == "fallback" else (
            f"champion v{s['champion']}"
        )  # fmt: skip
        head.add_row("acting", acting, "shadow", f"v{s['shadow']}" if s["shadow"] else "-")
        head.add_row("log written", f"{s['log_written']:,}", "fsynced", f"{s['log_flushed']:,}")
        if s.get("canary"):
            c = s["canary"]
            head.add_row("canary", _canary_text(c), "episodes per arm", str(c["episodes"]))
        if s["watch"]:
            w = s["watch"]
            head.add_row(
                "rollback watch", f"v{w['version']}: {w['n']} decisions",
                "baseline", _fmt(w["baseline"]),
            )  # fmt: skip
        if s.get("forecast"):
            f = s["forecast"]
            head.add_row(
                f"forecast ({f['forecaster']})",
                f"{f['source']}: {f['fresh']:,} fresh, {f['stale']:,} stale, "
                f"{f['fallbacks']:,} fallbacks, {f['errors']:,} errors",
                "queue delay",
                f"p50 {_fmt(f['delay_p50_ms'], '.2f')} ms, p99 {_fmt(f['delay_p99_ms'], '.2f')} "
                f"ms, {f['dropped']:,} dropped",
            )  # fmt: skip
        trig = Table("trigger", "state", box=None)
        for name, state in s["triggers"].items():
            trig.add_row(name, _trigger_text(state))
        runs = Table("#", "at", "version", "verdict", "why", box=None)
        for r in s["retrainings"]:
            runs.add_row(
                str(r.get("k")), f"{r.get('at', 0):,}", str(r.get("version", "...")),
                _verdict_text(r, s.get("awaiting")),
                str(r.get("canary_why", r.get("why", r.get("trigger", ""))))[:90],
            )  # fmt: skip
        return Panel(
            Group(head, trig, runs, s["event"] or ""), title=f"rlbench-live: {s['session']}"
        )

    def close(self) -> None:
        self._live.stop()


def _retraining_count(s: dict[str, Any]) -> int:
    """All of the session's retrainings (the snapshot lists only the last few)."""
    return int(s.get("retraining_count", len(s["retrainings"])))


def _canary_text(canary: dict[str, Any] | None, prefix: str = "") -> str:
    """A challenger on canary and its completed episodes per arm so far ('' without one)."""
    if not canary:
        return ""
    return (
        f"{prefix}canary v{canary['version']}: {canary['challenger']}/{canary['episodes']} "
        f"challenger, {canary['champion']}/{canary['episodes']} champion episodes"
    )


def _verdict_text(entry: dict[str, Any], awaiting: str | None) -> str:
    """A retraining's verdict, or what it is doing while it has none."""
    if "verdict" in entry:
        return str(entry["verdict"])
    if awaiting is not None and str(entry.get("version")) == str(awaiting):
        return "waiting for approval"
    return "training"


def _trigger_text(state: dict[str, Any]) -> str:
    parts = []
    for key, value in state.items():
        if isinstance(value, list):
            parts.append(f"{key}: {len(value)}")
        else:
            parts.append(f"{key}: {_fmt(value) if isinstance(value, float) else value}")
    return ", ".join(parts) or "watching"


def make_view(mode: str) -> Any:
    """The view ``dashboard=`` asks for (``auto``: rich on a terminal, else log lines)."""
    if mode not in VIEWS:
        from rlbench.errors import UserError

        raise UserError(f"dashboard={mode!r}: choose one of {', '.join(VIEWS)}")
    if mode == "auto":
        mode = "rich" if sys.stdout.isatty() else "log"
    if mode == "rich":
        return RichView()
    if mode == "log":
        return LogView()
    return None
