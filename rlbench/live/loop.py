"""The live session: act with the champion, log every decision, retrain when triggered, gate,
promote or reject, watch the new champion and roll it back if it does worse.

One decision, in order: look for the kill switch (``control/kill``, when ``CONTROL_EVERY_S``
of wall time passed since the last look: the next decision obeys it when decisions are further
apart than that, as any real system's are, and within 10 ms in a fast simulation; a stat per
decision cost ~5% of the loop's throughput), compute pi(.|obs) of the acting policy under the
configured exploration and sample the action (so its propensity is exact), step the adapter,
append the decision to the interaction log, feed the triggers and the rollback watch. When a
trigger fires (and at least ``retrain.min_interval`` decisions passed since the last retraining)
the session retrains (:mod:`rlbench.live.retrain`), gates (:mod:`rlbench.live.gate`) and then,
by config, waits for a manual approval, runs the challenger in shadow (it decides beside the
champion, logged in the decision's ``context``, not acted on), and promotes it through the
registry. A challenger the gate neither promotes nor shows worse (its calibrated interval is
too wide on sequential logs to promote) goes to the canary (``canary.episodes``): each episode's
acting policy is drawn at random, the challenger with probability ``canary.share``, and once
both arms completed ``canary.episodes`` episodes a one-sided Welch t-test on their returns
(:func:`rlbench.live.gate.canary_verdict`) promotes it (on through approval and shadow, as a
gate-passed one) or rejects it. No retraining starts during a canary or a shadow.

Durability: the log is fsynced in batches (a killed session loses at most the unflushed batch);
``session.json`` (counts, triggers, the rollback watch) is replaced atomically after each batch
is written, so it never counts a decision the log lacks; the champion is
always read back from the registry, whose alias moves are single atomic updates, so a kill
between two steps never leaves a half-promoted model. Rerunning the same command resumes the
session: the same MLflow parent run, counts and triggers, the log continued in new part files;
decisions logged after the last save of ``session.json`` (a kill between the two) are counted
in, and a retraining a kill interrupted is owed (``redo``, saved) until one reaches a verdict.
A canary's per-arm returns are saved with the state; an episode a kill cut short (or one the
kill switch's fallback acted in) is not counted, and a resumed canary draws each episode's arm
from ``(seed, retraining, episode)``, the same draw as before the kill.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from omegaconf import OmegaConf
from scipy import stats

from rlbench.errors import UserError, first_line
from rlbench.live.adapters import Adapter
from rlbench.live.champion import ServedPolicy
from rlbench.live.forecast_feed import ForecastFeed
from rlbench.live.gate import (
    GateResult,
    canary_stop,
    canary_verdict,
    paired_gate,
    shown_worse,
)
from rlbench.live.retrain import (
    OFFLINE_ALGOS,
    run_training,
    split_window,
    train_overrides,
    write_training_split,
)
from rlbench.live.triggers import Trigger, block_means, build_triggers, welch
from rlbench.offline.collect import Behaviour
from rlbench.offline.log import COLLECTION_KEY, LogWriter, collections_in, read_log
from rlbench.tracking import schema
from rlbench.tracking.provenance import process_tag

log = logging.getLogger(__name__)
CONTROL_EVERY_S = 0.01  # wall seconds between looks at the kill switch
VIEW_EVERY_S = 0.25  # wall seconds between dashboard refreshes
REDO_PREFIX = "again, after an interrupted retraining "  # + its number (its trigger)
CONTROL_FILES = ("kill", "retrain", "approve", "reject")


def worse_live(
    reference: list[float], blocks: list[float], margin: float, alpha: float
) -> tuple[bool, str]:
    """Is the new champion worse than the old one by more than ``margin``, at level ``alpha``?
    A one-sided Welch t-test on block means (the drift trigger's statistic), so a champion as
    good as the old one is rolled back ``alpha`` of the time, not half of it as a comparison
    of two noisy means was. ``(verdict, the test in words)``; fewer than 2 blocks on either side
    is no evidence (a window of 0 turns the rollback off)."""
    if len(reference) < 2 or len(blocks) < 2:
        return False, f"{len(reference)} and {len(blocks)} blocks: too few to test"
    t, df = welch(reference, blocks, shift=margin)
    p = float(stats.t.cdf(t, df))
    verdict = "<" if p < alpha else ">="
    return p < alpha, (
        f"one-sided Welch t on {len(reference)} and {len(blocks)} block means: t = {t:.2f}, "
        f"p = {p:.3g} {verdict} rollback.alpha={alpha:g}"
    )


def _logged_after(root: Path, collection: int, skip: int) -> Iterator[dict[str, Any]]:
    """The records collection ``collection`` wrote into the log ``root``, in the order it wrote
    them, after its first ``skip``: read line by line (one start's files can be large) and
    parsed only past ``skip``. A torn last line (a write cut short) is no record."""
    files = []
    for path in root.rglob("part-*.jsonl") if root.is_dir() else ():
        with path.open("rb") as f:
            try:
                header = json.loads(f.readline() or b"{}")
            except ValueError:
                continue
        if isinstance(header, dict) and header.get(COLLECTION_KEY) == collection:
            counter = path.stem.rsplit("-", 1)[-1]  # part-<pid>-<n>: n counts up in one writer
            files.append((int(counter) if counter.isdigit() else 0, path))
    seen = 0
    for _, path in sorted(files):
        with path.open("rb") as f:
            f.readline()  # the header
            for line in f:
                if not line.endswith(b"\n") or not line.strip():
                    continue
                seen += 1
                if seen <= skip:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    raise UserError(
                        f"{path}: record {seen} is not valid JSON (a corrupt log): move the file "
                        "away to resume without its decisions"
                    ) from None
                yield record


@dataclass
class State:
    """What a resumed session needs (``session.json``)."""

    run_id: str | None = None
    starts: int = 0  # how often the session was started: episode ids stay unique over resumes
    decisions: int = 0
    episodes: int = 0
    retrainings: int = 0
    last_retrain: int | None = None  # decision count at the last retraining
    reward_sum: float = 0.0
    triggers: dict[str, Any] = field(default_factory=dict)
    watch: dict[str, Any] | None = None  # the rollback watch of a new champion
    shadow: dict[str, Any] | None = None  # a gated challenger deciding in shadow
    canary: dict[str, Any] | None = None  # a challenger acting in a share of episodes (A/B)
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per retraining
    # the registered forecaster as given and the version it named at the first start: every
    # start, retraining and log of the session keeps that version (an alias moves on)
    forecast_model: dict[str, str] | None = None
    # the count when the latest start began: what its log files hold beyond it is in the state
    decisions_at_start: int | None = None

    def save(self, path: Path, durable: bool = False) -> None:
        """Replace ``path`` atomically (write a temporary file, rename it over)."""
        tmp = path.with_suffix(".tmp")
        data = json.dumps(asdict(self), default=float).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> State:
        try:
            state = cls(**json.loads(path.read_text()))
            state._check()
            return state
        except (ValueError, TypeError) as err:
            raise UserError(
                f"{path}: not a live session state ({err}); delete it to start the session anew"
            ) from None

    #: field -> the kinds its value may have (None for an optional field)
    KINDS: ClassVar[dict[str, tuple[type, ...]]] = {
        "run_id": (str, type(None)), "starts": (int,), "decisions": (int,), "episodes": (int,),
        "retrainings": (int,), "last_retrain": (int, type(None)), "reward_sum": (int, float),
        "triggers": (dict,), "watch": (dict, type(None)), "shadow": (dict, type(None)),
        "canary": (dict, type(None)), "history": (list,), "decisions_at_start": (int, type(None)),
        "forecast_model": (dict, type(None)),
    }  # fmt: skip
    WATCH_KEYS: ClassVar[tuple[str, ...]] = ("version", "baseline", "n", "sum")
    SHADOW_KEYS: ClassVar[tuple[str, ...]] = ("version", "run_id", "n", "agree", "until")
    CANARY_KEYS: ClassVar[tuple[str, ...]] = (
        "version", "run_id", "k", "champion", "challenger_returns", "champion_returns",
    )  # fmt: skip

    def _check(self) -> None:
        """ValueError for a field of the wrong kind (a hand-edited or foreign file)."""
        for name, kinds in self.KINDS.items():
            value = getattr(self, name)
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise ValueError(f"{name} is {value!r}")
            if name != "reward_sum" and isinstance(value, int) and value < 0:
                raise ValueError(f"{name} is negative ({value})")
        for name, keys in (
            ("watch", self.WATCH_KEYS), ("shadow", self.SHADOW_KEYS), ("canary", self.CANARY_KEYS),
        ):  # fmt: skip
            node = getattr(self, name)
            if node is not None and not set(keys) <= set(node):
                raise ValueError(f"{name} lacks {', '.join(sorted(set(keys) - set(node)))}")
        c = self.canary
        if c is not None and not all(
            isinstance(c[arm], list) for arm in ("challenger_returns", "champion_returns")
        ):
            raise ValueError("canary's returns are not lists")
        if not all(isinstance(e, dict) and "k" in e and "trigger" in e for e in self.history):
            raise ValueError("history holds an entry that is not a retraining")


@dataclass
class PolicyHandle:
    """A policy the session can act with: the agent, its registry version and a label."""

    agent: Any
    version: str
    label: str


class LiveSession:
    """One session of ``rlbench-live`` (see the module docstring).

    ``cfg`` is the ``rlbench-live`` config; ``adapter`` the system; ``tracker`` the session's
    MLflow tracker (:func:`rlbench.tracking.tracker.make_tracker`); ``load_policy(spec)`` gives
    the agent of ``models:/NAME/VERSION`` or of an ``algo`` option (the fallback rule);
    ``view`` is called with :meth:`snapshot` a few times per second (the dashboard);
    ``feed``: the forecaster as a producer thread (:mod:`rlbench.live.forecast_feed`): each
    step's load (``info[forecast.load_key]``) goes to it, and every observation the policy sees
    carries its freshest forecast.
    """

    def __init__(
        self,
        cfg: Any,
        adapter: Adapter,
        folder: Path,
        tracker: Any,
        registry: Any,
        load_policy: Callable[[str], Any],
        view: Callable[[dict[str, Any]], None] | None = None,
        feed: ForecastFeed | None = None,
    ) -> None:
        self.cfg, self.adapter, self.folder = cfg, adapter, Path(folder)
        self.tracker, self.registry, self.load_policy = tracker, registry, load_policy
        self.view = view or (lambda snapshot: None)
        self.feed = feed
        self.load_key = str(OmegaConf.select(cfg, "forecast.load_key", default="influx"))
        self.control = self.folder / "control"
        self.control.mkdir(parents=True, exist_ok=True)
        self.state_path = self.folder / schema.LIVE_STATE_FILE
        self.state = State.load(self.state_path) if self.state_path.exists() else State()
        self.triggers: list[Trigger] = build_triggers(cfg.triggers, self.control)
        for trig in self.triggers:
            trig.load(self.state.triggers.get(trig.name, {}))
        self.rng = np.random.default_rng([int(cfg.seed), self.state.decisions])
        self.model = str(cfg.model)
        self.champion: PolicyHandle | None = None
        self.shadow: PolicyHandle | None = None
        self.canary: PolicyHandle | None = None  # the challenger on trial (state.canary)
        self.fallback: PolicyHandle | None = None
        self.killed = False
        self.recent = collections.deque(maxlen=int(cfg.rollback.window))
        self.view_rewards = collections.deque(maxlen=1000)
        self.last_event = ""
        self.writer: LogWriter | None = None  # the session's log while it runs
        self._running = False  # while the writer is open
        self._redo: str | None = None  # a retraining to do again now (see _pending_redo)
        self._awaiting: str | None = None  # the challenger's version while it awaits approval
        self._rate = 0.0  # decisions per wall second, measured at each dashboard refresh

    # ------------------------------------------------------------------ the policies
    def _load_champion(self) -> PolicyHandle:
        version = str(self.registry.resolve_alias(f"models:/{self.model}@{schema.CHAMPION}"))
        if self.cfg.get("serve_url"):  # rlbench-serve decides; it follows the alias itself
            served = self.champion.agent if self._served() else None
            if served is None:
                n = int(self.adapter.action_space.n)
                served = ServedPolicy(str(self.cfg.serve_url), n, version=version)
            return PolicyHandle(served, version, self.model)
        agent = self.load_policy(f"models:/{self.model}/{version}")
        return PolicyHandle(agent, version, f"{self.model}")

    def _served(self) -> bool:
        """Whether rlbench-serve decides for the champion (``serve_url=``)."""
        return self.champion is not None and isinstance(self.champion.agent, ServedPolicy)

    def _answered(self, acting: Behaviour) -> str:
        """The version that decided: rlbench-serve's answer names it (the server follows the
        alias on its own clock); an in-process policy is the version it was loaded as. The
        champion's handle follows the answer, so the view and the records say the same."""
        if not isinstance(acting.agent, ServedPolicy):
            return acting.version
        version = acting.agent.version
        if self.champion is not None and self.champion.agent is acting.agent:
            self.champion.version = version
        return version

    def _behaviour(self, handle: PolicyHandle) -> Behaviour:
        ex = self.cfg.explore
        return Behaviour(
            handle.agent, str(ex.kind), float(ex.epsilon), float(ex.temperature),
            handle.label, handle.version,
        )  # fmt: skip

    # ------------------------------------------------------------------ the loop
    def run(self) -> State:
        """Act until ``cfg.decisions`` decisions (counted over the whole session)."""
        if self.state.starts == 0:  # a new state over an old log: its episode ids stay apart
            self.state.starts = collections_in(self.folder / "log")
        self.state.starts += 1
        (self.control / schema.LIVE_AWAITING_FILE).unlink(missing_ok=True)  # a killed wait's
        last = self.state.history[-1] if self.state.history else None
        if last is not None and "verdict" not in last:  # killed while it trained: do it again
            last.update(verdict="interrupted", why="the session stopped while it trained",
                        redo=True)  # fmt: skip
        self._redo = self._pending_redo()
        self._recount_unsaved()
        self._restore_recent()
        self.state.decisions_at_start = self.state.decisions
        self._save(durable=True)
        self.champion = self._load_champion()
        if self.state.shadow:
            self.shadow = self._version_handle(self.state.shadow["version"])
        if self.state.canary:
            self.canary = self._version_handle(self.state.canary["version"])
            c = self.state.canary
            self._event(f"canary of v{c['version']} resumed: {len(c['challenger_returns'])} "
                        f"challenger, {len(c['champion_returns'])} champion episodes")  # fmt: skip
        behaviour = self._behaviour(self.champion)
        fallback_behaviour: Behaviour | None = None
        target = math.inf if self.cfg.decisions is None else int(self.cfg.decisions)
        space = self.adapter.observation_space
        writer = LogWriter(
            self.folder / "log",
            env_id=self.adapter.env_id,
            obs_shape=space.shape,
            n_actions=int(self.adapter.action_space.n),
            batch_size=int(self.cfg.log.batch),
            fsync=bool(self.cfg.log.fsync),
            meta={"session": str(self.cfg.session), COLLECTION_KEY: self.state.starts},
        )
        self.writer = writer
        self._running = True
        seconds = float(getattr(self.adapter, "step_seconds", 1.0))
        if self.feed is not None:
            self.feed.start()
        obs = self._reset()
        step = 0
        kill_path = str(self.control / "kill")
        t_rate, n_rate = time.monotonic(), self.state.decisions
        t_view, n_view = t_rate, n_rate
        next_view = next_control = 0.0
        report_every = int(self.cfg.report_every)
        window_rewards: list[float] = []
        saved_written = 0
        arm: str | None = None  # the canary arm acting in this episode (None: no canary)
        arm_return, arm_clean = 0.0, True  # its return so far; whether only the arm acted
        try:
            while self.state.decisions < target:
                now = time.monotonic()
                if now >= next_control:
                    next_control = now + CONTROL_EVERY_S
                    if os.path.exists(kill_path) != self.killed:
                        self.killed = not self.killed
                        self._event("kill switch ON: the fallback rule acts" if self.killed
                                    else "kill switch OFF: the champion acts again")  # fmt: skip
                    if self.killed and fallback_behaviour is None:
                        self.fallback = self._fallback()
                        fallback_behaviour = self._behaviour(self.fallback)
                if step == 0:  # an episode starts: a canary draws the policy acting in it
                    arm = self._canary_arm()
                    if arm is not None:
                        behaviour = self._behaviour(self._arm_handle(arm))
                    arm_return, arm_clean = 0.0, True
                acting = fallback_behaviour if self.killed else behaviour
                assert acting is not None
                probs = acting.action_probabilities(obs[None])[0]
                version = self._answered(acting)
                action = int(np.searchsorted(np.cumsum(probs), self.rng.random() * probs.sum()))
                action = min(action, len(probs) - 1)
                context: dict[str, Any] = {}
                if self.shadow is not None:
                    shadow_action = int(self.shadow.agent.predict(obs[None], deterministic=True)[0])
                    context["shadow_action"] = shadow_action
                    self.state.shadow["n"] += 1
                    self.state.shadow["agree"] += int(shadow_action == action)
                next_obs, reward, terminated, truncated, info = self.adapter.step(action)
                done = bool(terminated or truncated)
                if self.feed is not None:  # the next decision's observation, with its forecast
                    next_obs = self._forecast(next_obs, info, step + 1)
                writer.append(
                    {
                        "ts": time.time(),
                        "episode": f"{self.cfg.session}-{self.state.starts}-{self.state.episodes}",
                        "step": step,
                        "obs": obs,
                        "action": action,
                        "propensity": float(probs[action]),
                        "reward": reward,
                        "next_obs": next_obs,
                        "done": done,
                        "terminal": bool(terminated),
                        "policy": acting.name,
                        "policy_version": version,
                        "context": context,
                    }
                )
                self.state.decisions += 1
                self.state.reward_sum += reward
                if arm is not None:
                    arm_return += reward
                    arm_clean = arm_clean and version == self._arm_handle(arm).version
                if arm != "challenger":  # the rollback's baseline is the champion's reward
                    self.recent.append(reward)
                self.view_rewards.append(reward)
                window_rewards.append(reward)
                for trig in self.triggers:
                    trig.observe(reward, info, seconds)
                if self.state.watch is not None and version == self.state.watch["version"]:
                    self._watch(reward)  # only the watched champion's own decisions count
                step += 1
                if done:
                    if arm is not None:
                        self._canary_episode(arm, arm_return, arm_clean, step)
                    self.state.episodes += 1
                    obs, step = self._reset(), 0
                else:
                    obs = next_obs
                if writer.written != saved_written:  # a batch went to the log: count it
                    saved_written = writer.written
                    self._save()
                if self.state.decisions % report_every == 0:
                    now = time.monotonic()
                    rate = (self.state.decisions - n_rate) / max(now - t_rate, 1e-9)
                    t_rate, n_rate = now, self.state.decisions
                    self._report(float(np.mean(window_rewards)), rate)
                    window_rewards.clear()
                if self._events():
                    behaviour = self._behaviour(self.champion)
                    if self.state.canary is None:  # a canary ended: the champion acts on
                        arm = None
                now = time.monotonic()
                if now >= next_view:  # the rate since the last refresh, not since a report
                    self._rate = (self.state.decisions - n_view) / max(now - t_view, 1e-9)
                    t_view, n_view = now, self.state.decisions
                    self.view(self.snapshot())
                    next_view = time.monotonic() + VIEW_EVERY_S
        finally:
            self._running = False
            if self.feed is not None:
                self.feed.close()
            writer.close()
            self._save(durable=True)
        if self.state.decisions > n_view:  # the decisions since the last refresh
            self._rate = (self.state.decisions - n_view) / max(time.monotonic() - t_view, 1e-9)
        self.view(self.snapshot())
        return self.state

    def _events(self) -> bool:
        """The rollback watch, the end of a shadow or a canary, a due retraining; True when the
        acting policy changed (the champion, or a canary's end)."""
        watch, shadow, canary = self.state.watch, self.state.shadow, self.state.canary
        if watch is not None and watch["n"] >= self.recent.maxlen:
            return self._check_rollback()
        if shadow is not None and self.state.decisions >= shadow["until"]:
            return self._end_shadow()
        if canary is not None and (
            canary.get("stop")
            or int(self.cfg.canary.episodes) == 0
            or min(len(canary["challenger_returns"]), len(canary["champion_returns"]))
            >= int(canary.get("episodes") or self.cfg.canary.episodes)
        ):
            return self._end_canary()
        reason = self._redo or self._due()
        self._redo = None  # the flag in the state stays until a retraining reaches its verdict
        if not reason:
            return False
        try:
            return self._retrain(reason)
        except Exception as err:  # said as failed: only a kill leaves an entry without verdict
            last = self.state.history[-1] if self.state.history else None
            if last is not None and "verdict" not in last:
                last.update(verdict="failed", why=first_line(err))
                self._save(durable=True)
            raise

    def _pending_redo(self) -> str | None:
        """Why a retraining runs again now: the latest interrupted one whose ``redo`` flag is
        still set. The flag is saved with the verdict and cleared only when a retraining reaches
        its own verdict, so a session killed again before the redo finished still owes it."""
        owed = [e for e in self.state.history if e.get("redo")]
        if not owed:
            return None
        last = owed[-1]
        self._event(f"retraining {last['k']} was interrupted: it runs again now")
        trigger = str(last["trigger"])
        while trigger.startswith(REDO_PREFIX) and trigger.endswith(")"):  # a redo's redo
            trigger = trigger[trigger.index("(") + 1 : -1]  # names the first trigger, once
        return f"{REDO_PREFIX}{last['k']} ({trigger})"

    def _settle_redo(self) -> None:
        """A retraining reached its verdict: no interrupted one is owed any more."""
        for entry in self.state.history:
            entry.pop("redo", None)

    def _recount_unsaved(self) -> None:
        """Count in the decisions the previous start logged after its last state save (a kill
        between a batch written and ``session.json`` replaced): their rewards, episodes, the
        triggers (from the reward alone: the log keeps no step info) and the rollback watch
        and shadow, so the state again counts exactly the log's decisions."""
        at = self.state.decisions_at_start
        if at is None or self.state.starts < 2:  # no earlier start of this state to look at
            return
        counted = self.state.decisions - at  # of the previous start's logged decisions
        extra = list(_logged_after(self.folder / "log", self.state.starts - 1, counted))
        if not extra:
            return
        seconds = float(getattr(self.adapter, "step_seconds", 1.0))
        s = self.state
        for rec in extra:
            reward = float(rec.get("reward") or 0.0)
            s.decisions += 1
            s.reward_sum += reward
            s.episodes += bool(rec.get("done"))
            for trig in self.triggers:
                trig.observe(reward, {}, seconds)
            if s.watch is not None and str(rec.get("policy_version")) == s.watch["version"]:
                self._watch(reward)
            shadow_action = (rec.get("context") or {}).get("shadow_action")
            if s.shadow is not None and shadow_action is not None:
                s.shadow["n"] += 1
                s.shadow["agree"] += int(shadow_action == rec.get("action"))
        self._event(f"{len(extra)} decisions logged after the last save of {schema.LIVE_STATE_FILE}"
                    " (the session was killed): counted in")  # fmt: skip

    def _reset(self) -> np.ndarray:
        seed = int(np.random.default_rng([int(self.cfg.seed), self.state.episodes]).integers(2**31))
        obs = np.asarray(self.adapter.reset(seed=seed), dtype=np.float32)
        return self.feed.apply(obs) if self.feed is not None else obs

    def _forecast(self, obs: np.ndarray, info: dict[str, Any], t: int) -> np.ndarray:
        """Hand the step's load to the feed; ``obs`` with the freshest forecast in it."""
        if self.load_key not in info:
            raise UserError(
                f"forecast.load_key={self.load_key}: the adapter's step info has no such entry "
                f"(it has {', '.join(sorted(info)) or 'none'}): name the one with the step's load"
            )
        self.feed.observe(float(info[self.load_key]), t)
        return self.feed.apply(obs)

    def _save(self, durable: bool = False) -> None:
        """Save the state; a durable save mid-batch (a shadow's end, a rollback, a retraining)
        first makes the log hold every decision the state counts."""
        if durable and self.writer is not None and self._running:
            self.writer.flush()
        self.state.triggers = {t.name: t.state() for t in self.triggers}
        self.state.save(self.state_path, durable)

    def _event(self, text: str) -> None:
        self.last_event = f"[{self.state.decisions}] {text}"
        log.info("%s", self.last_event)

    def _report(self, mean_reward: float, rate: float) -> None:
        """``live/*`` metrics: the mean reward and decisions/s over the last ``report_every``."""
        metrics = {
            schema.live_metric("reward"): mean_reward,
            schema.live_metric("decisions_per_s"): rate,
            schema.live_metric("champion_version"): float(self.champion.version)
            if self.champion and self.champion.version.isdigit()
            else math.nan,
            schema.live_metric("killed"): float(self.killed),
        }
        if self.feed is not None:
            metrics.update({k: v for k, v in self.feed.metrics().items() if math.isfinite(v)})
        self.tracker.log_metrics(metrics, step=self.state.decisions)

    # ------------------------------------------------------------------ retraining
    def _due(self) -> str | None:
        last = self.state.last_retrain
        if last is not None and self.state.decisions - last < int(self.cfg.retrain.min_interval):
            return None
        if self.state.shadow is not None or self.state.canary is not None:  # one at a time
            return None
        for trig in self.triggers:
            why = trig.fired()
            if why:
                return f"{trig.name}: {why}"
        return None

    def _retrain(self, reason: str) -> bool:
        """Train, gate and maybe promote a challenger; True when the champion changed."""
        k = self.state.retrainings + 1
        rc = self.cfg.retrain
        self._event(f"retraining {k}: {reason}")
        self.writer.flush()
        for trig in self.triggers:
            trig.reset()
        self.state.last_retrain = self.state.decisions
        self.state.retrainings = k
        entry: dict[str, Any] = {
            "k": k, "at": self.state.decisions, "trigger": reason,
            "champion": self.champion.version if self.champion else None,
        }  # fmt: skip
        self.state.history.append(entry)
        self._save(durable=True)
        t0 = time.perf_counter()
        try:
            data = read_log(self.folder / "log")
            split = split_window(data, int(rc.window), float(rc.holdout), int(self.cfg.seed) + k)
        except UserError as err:  # too little data yet: the session goes on with its champion
            entry.update(verdict="skipped", why=str(err))
            self._settle_redo()
            self._event(f"retraining {k} skipped: {err}")
            self._save(durable=True)
            return False
        folder = self.folder / f"retrain-{k}"
        train_data, init_from = None, None
        if str(rc.algo) in OFFLINE_ALGOS:
            train_data = write_training_split(split, folder / "train-log")
        elif rc.get("warm_start", True):
            init_from = self._warm_start_file(str(rc.algo), folder)
        run_id, score = self._train(
            algo=str(rc.algo), steps=int(rc.steps), seed=int(self.cfg.seed) + k,
            run_name=f"{self.cfg.session}-retrain-{k}", data=train_data, init_from=init_from,
            extra=list(rc.overrides),
        )  # fmt: skip
        version = self.registry.version_of_run(self.model, run_id)
        challenger = self._version_handle(version)
        gc = self.cfg.gate
        champion = self.champion.agent
        if self._served():  # the served version, in process (the server takes 1024 rows a call)
            champion = self._version_handle(self.champion.version).agent
        result = paired_gate(
            split.holdout, challenger.agent, champion, estimator=str(gc.estimator),
            n_boot=int(gc.n_boot), alpha=float(gc.alpha), margin=float(gc.margin),
            gamma=float(gc.gamma), features=str(gc.features), seed=int(self.cfg.seed) + k,
            min_episodes=int(gc.min_episodes),
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        entry.update(run_id=run_id, version=version, score=score, seconds=seconds)
        entry.update(gate=result.metrics(), why=result.why)
        if result.promote:
            verdict, changed = self._passed(challenger, run_id, result.why, "the gate")
        elif int(self.cfg.canary.episodes) > 0 and not shown_worse(result):
            verdict, changed = "canary", False  # the next episode's policy is drawn
            self._start_canary(challenger, run_id, k)
        else:
            verdict, changed = "rejected", False
        self._clear_unpromoted(verdict, version)
        entry["verdict"] = verdict
        self._settle_redo()
        self._record(run_id, reason, verdict if verdict != "shadow" else "promoted", result)
        self._event(f"retraining {k} ({seconds:.1f} s): v{version} {verdict}: {result.why}")
        self._save(durable=True)
        return changed

    def _passed(
        self,
        challenger: PolicyHandle,
        run_id: str,
        why: str,
        by: str,
        reference: list[float] | None = None,
    ) -> tuple[str, bool]:
        """A challenger that passed ``by`` (the gate or the canary) goes on: a manual approval
        (``gate.approval``), a shadow (``shadow.decisions``), then the promotion (``reference``:
        the rollback watch's, see :meth:`_promote`). ``(verdict, whether the champion
        changed)``."""
        version = challenger.version
        if self.cfg.gate.approval and not self._approved(version, by):
            return "refused", False
        if int(self.cfg.shadow.decisions) > 0:
            self.shadow = challenger
            self.state.shadow = {
                "version": version, "run_id": run_id, "n": 0, "agree": 0,
                "until": self.state.decisions + int(self.cfg.shadow.decisions), "passed": by,
            }  # fmt: skip
            self._event(f"challenger v{version} passed {by}; in shadow for "
                        f"{int(self.cfg.shadow.decisions)} decisions")  # fmt: skip
            return "shadow", False
        self._promote(challenger, why, reference)
        return "promoted", True

    def _clear_unpromoted(self, verdict: str, version: str) -> None:
        """A rejected or refused challenger loses the registry's challenger alias."""
        if verdict not in ("rejected", "refused"):
            return
        if self.registry.clear_challenger(self.model, version):
            self._event(f"v{version} is no longer the {schema.CHALLENGER} (it was not promoted)")

    # ------------------------------------------------------------------ the canary
    def _start_canary(self, challenger: PolicyHandle, run_id: str, k: int) -> None:
        """The challenger acts in a random ``canary.share`` of the episodes from the next one
        on (the current one goes on with the champion)."""
        cc = self.cfg.canary
        self.canary = challenger
        self.state.canary = {
            "version": challenger.version, "run_id": run_id, "k": k,
            "champion": self.champion.version, "challenger_returns": [], "champion_returns": [],
            "skipped": 0, "episodes": int(cc.episodes),  # a resume with another count keeps it
        }  # fmt: skip
        self._event(f"challenger v{challenger.version}: the gate could not tell; canary: it acts "
                    f"in {float(cc.share):.0%} of the episodes until each arm has "
                    f"{int(cc.episodes)}")  # fmt: skip

    def _canary_arm(self) -> str | None:
        """The arm acting in the episode starting now: ``challenger`` with probability
        ``canary.share``, else ``champion``; None without a canary. Drawn from (seed,
        retraining, episode), so a resumed canary draws what the killed one would have. A
        champion that changed since the canary began (a rollback, a promotion by hand) restarts
        the champion arm: its episodes were another policy's."""
        c = self.state.canary
        if c is None:
            return None
        if self.champion.version != c["champion"]:
            self._event(f"the champion is v{self.champion.version}, no longer v{c['champion']}: "
                        f"the canary's champion arm starts again")  # fmt: skip
            c.update(champion=self.champion.version, champion_returns=[], champion_means=[])
        rng = np.random.default_rng([int(self.cfg.seed), int(c["k"]), self.state.episodes])
        return "challenger" if rng.random() < float(self.cfg.canary.share) else "champion"

    def _arm_handle(self, arm: str) -> PolicyHandle:
        return self.canary if arm == "challenger" else self.champion

    def _canary_episode(self, arm: str, episode_return: float, clean: bool, steps: int) -> None:
        """A canary episode of ``steps`` decisions ended: its return counts for ``arm`` if the
        arm made every one of its decisions (not the kill switch's fallback, not a champion that
        changed midway). The champion's mean reward per decision in it is kept too: a promoted
        challenger's rollback watch compares against those (same load, same time)."""
        c = self.state.canary
        if c is None:
            return
        if not clean:
            c["skipped"] = int(c.get("skipped", 0)) + 1
            return
        c[f"{arm}_returns"].append(float(episode_return))
        if arm == "champion":
            c.setdefault("champion_means", []).append(float(episode_return) / max(steps, 1))
        stop_alpha = self.cfg.canary.get("stop_alpha")
        if stop_alpha is not None:  # a clearly worse challenger stops acting now
            c["stop"] = canary_stop(c["challenger_returns"], c["champion_returns"],
                                    float(stop_alpha))  # fmt: skip

    def _end_canary(self) -> bool:
        """Both arms have ``canary.episodes`` episodes: test, then promote (through approval and
        shadow) or reject; or the challenger was shown worse early (``canary.stop_alpha``):
        rejected. True: the champion acts in every episode again."""
        c, handle = self.state.canary, self.canary
        promote, why, metrics = canary_verdict(
            c["challenger_returns"], c["champion_returns"], float(self.cfg.gate.margin),
            float(self.cfg.canary.alpha),
        )  # fmt: skip
        if c.get("stop"):
            promote, why = False, str(c["stop"])
        if int(self.cfg.canary.episodes) == 0:  # turned off since it began (a resumed session)
            promote = False
            why = f"canary.episodes=0: the canary was turned off before its end ({why})"
        verdict = "rejected"
        if promote:  # the canary stays in the state until this returns: a session killed while
            # it waits for approval asks again when it resumes, its episodes kept
            reference = c.get("champion_means")
            verdict, _ = self._passed(handle, c["run_id"], why, "the canary", reference)
        self.state.canary, self.canary = None, None
        self._clear_unpromoted(verdict, c["version"])
        for entry in reversed(self.state.history):
            if entry.get("k") == c["k"]:
                entry.update(verdict=verdict, canary=metrics, canary_why=why)
                break
        recorded = verdict if verdict != "shadow" else "promoted"
        self._tag(
            c["run_id"],
            {schema.LIVE_GATE_TAG: recorded, schema.LIVE_GATE_WHY_TAG: why[:4000]},
            {schema.canary_metric(k): v for k, v in metrics.items() if math.isfinite(v)},
        )
        self._event(f"canary of v{c['version']} done: {verdict}: {why}")
        self._save(durable=True)
        return True

    def bootstrap(self) -> None:
        """The session's model does not exist yet: train ``initial`` and register it (the
        first version of a model becomes its champion)."""
        log.info("%s is not registered: training algo=%s as its first champion", self.model,
                 self.cfg.initial)  # fmt: skip
        self._train(algo=str(self.cfg.initial), steps=int(self.cfg.initial_steps),
                    seed=int(self.cfg.seed), run_name=f"{self.cfg.session}-initial")  # fmt: skip

    def _train(
        self,
        *,
        algo: str,
        steps: int,
        seed: int,
        run_name: str,
        data: Path | None = None,
        init_from: Path | None = None,
        extra: list[str] | None = None,
    ) -> tuple[str, float]:
        """An ``rlbench-train`` run of the session's env, nested under the session's run and
        registered as a version of its model; ``(run id, score)``."""
        overrides = train_overrides(
            env=str(self.cfg.env),
            env_args=dict(self.cfg.env_args),
            algo=algo,
            steps=steps,
            seed=seed,
            data=data,
            tracking=OmegaConf.to_container(self.cfg.tracking, resolve=True),
            register=self.model,
            run_name=run_name,
            parent_run_id=self.state.run_id,
            extra=extra or [],
            init_from=init_from,
        )
        return run_training(overrides)

    def _warm_start_file(self, algo: str, folder: Path) -> Path | None:
        """The champion's saved model when it is an ``algo`` agent (a simulated retraining
        continues from it), else None: the challenger starts from scratch."""
        from rlbench.agents import peek_algo

        try:
            path = self.registry.model_file(self.model, self.champion.version, folder / "champion")
            saved = peek_algo(path)
        except UserError as err:
            self._event(f"no warm start ({err}): the challenger starts from scratch")
            return None
        if saved != algo:
            self._event(f"the champion is {saved}, not {algo}: the challenger starts from scratch")
            return None
        return path

    def _version_handle(self, version: str) -> PolicyHandle:
        agent = self.load_policy(f"models:/{self.model}/{version}")
        return PolicyHandle(agent, str(version), self.model)

    def _approved(self, version: str, by: str = "the gate") -> bool:
        """Wait for ``control/approve`` or ``control/reject`` (manual approval)."""
        approve, reject = self.control / "approve", self.control / "reject"
        awaiting = self.control / schema.LIVE_AWAITING_FILE
        # only a decision made after this challenger passed counts: an old file is no answer
        approve.unlink(missing_ok=True)
        reject.unlink(missing_ok=True)
        self.control.mkdir(parents=True, exist_ok=True)
        # rlbench-live-ctl approve|reject reads the version, and the process that waits: a
        # killed session's file is no wait (its ctl says so instead of queueing an answer)
        awaiting.write_text(f"{version}\n{process_tag()}\n")
        self._awaiting = version
        self._event(f"challenger v{version} passed {by}: waiting for approval "
                    f"(rlbench-live-ctl approve|reject, or touch {approve})")  # fmt: skip
        timeout = self.cfg.gate.approval_timeout_s
        deadline = math.inf if timeout is None else time.monotonic() + float(timeout)
        try:
            while time.monotonic() < deadline:
                self.view(self.snapshot())
                if reject.exists():
                    reject.unlink(missing_ok=True)
                    return False
                if approve.exists():
                    approve.unlink(missing_ok=True)
                    return True
                time.sleep(0.2)
        finally:
            awaiting.unlink(missing_ok=True)
            self._awaiting = None
        self._event(f"no approval within {timeout} s: v{version} not promoted")
        return False

    def _restore_recent(self) -> None:
        """The rollback watch's reference window, from the log's newest rewards: it lived in
        memory only, so a resumed session promoted its owed retraining against one decision's
        reward and never rolled back."""
        if self.state.decisions == 0:
            return
        try:
            data = read_log(self.folder / "log")
        except UserError:  # no readable log yet: the window fills as the session decides
            return
        order = np.argsort(data.ts, kind="stable")
        if self.state.canary is not None:  # the champion's rewards only, as while it ran
            trial = str(self.state.canary["version"])
            order = order[[data.policy[i].rpartition(":")[2] != trial for i in order]]
        newest = order[-int(self.recent.maxlen or 0) :]
        self.recent.extend(float(r) for r in data.reward[newest])

    def _promote(
        self, challenger: PolicyHandle, why: str, reference: list[float] | None = None
    ) -> None:
        """Promote, and watch the new champion: its live rewards in blocks of ``size``
        decisions, against the same blocks of the last ``rollback.window`` before it, or
        against ``reference`` (a canary's champion episodes, mean reward per decision each):
        the window before a canary's promotion can reach back across the drift that started
        the retraining, a baseline the new champion cannot meet however good it is (the drift
        rerun came within p = 0.053 of rolling back a champion 26 per episode better)."""
        previous = self.champion
        self.registry.promote(self.model, challenger.version, why)
        size = self._block_size()
        if reference is not None and len(reference) >= 2:
            blocks = [float(r) for r in reference]
            baseline = float(np.mean(blocks))
        else:
            blocks = block_means(list(self.recent), size).tolist()
            baseline = float(np.mean(self.recent)) if self.recent else math.nan
        self.state.watch = {
            "version": challenger.version, "previous": previous.version if previous else None,
            "baseline": baseline, "n": 0, "sum": 0.0, "size": size, "block_sum": 0.0,
            "reference": blocks, "blocks": [],
        }  # fmt: skip
        if len(self.state.watch["reference"]) < 2:  # Welch's test needs two blocks a side
            self._event(f"v{challenger.version} promoted unwatched: {len(self.recent)} decisions "
                        f"before it, fewer than two blocks of {size} (rollback.window / "
                        "rollback.blocks): no rollback can be tested")  # fmt: skip
        if self._served():  # rlbench-serve follows the alias: it goes on deciding
            self.champion = PolicyHandle(previous.agent, challenger.version, previous.label)
        else:
            self.champion = challenger

    def _block_size(self) -> int:
        return max(1, int(self.cfg.rollback.window) // int(self.cfg.rollback.blocks))

    def _watch(self, reward: float) -> None:
        """One decision of the watched champion, into its current block."""
        w = self.state.watch
        if "size" not in w:  # a watch saved before blocks: no baseline to test against
            w.update(size=self._block_size(), block_sum=0.0, reference=[], blocks=[])
        w["n"] += 1
        w["sum"] += reward
        w["block_sum"] += reward
        if w["n"] % w["size"] == 0:
            w["blocks"].append(w["block_sum"] / w["size"])
            w["block_sum"] = 0.0

    def _end_shadow(self) -> bool:
        sh = self.state.shadow
        agree = sh["agree"] / max(sh["n"], 1)
        self.state.shadow, handle = None, self.shadow
        self.shadow = None
        self._event(f"shadow of v{sh['version']} done (agreed {agree:.0%}); promoting")
        why = (f"passed {sh.get('passed', 'the gate')}, then {sh['n']} decisions in shadow "
               f"({agree:.0%} agreed)")  # fmt: skip
        self._promote(handle, why)
        self._tag(sh["run_id"], {schema.LIVE_GATE_TAG: "promoted"})
        for entry in reversed(self.state.history):
            if entry.get("version") == sh["version"] and entry.get("verdict") == "shadow":
                entry["verdict"] = "promoted"
                break
        self._save(durable=True)
        return True

    def _check_rollback(self) -> bool:
        w = self.state.watch
        self.state.watch = None
        mean = w["sum"] / max(w["n"], 1)
        margin, alpha = float(self.cfg.rollback.margin), float(self.cfg.rollback.alpha)
        worse, test = worse_live(w.get("reference", []), w.get("blocks", []), margin, alpha)
        if not worse:
            self._event(f"v{w['version']} kept: mean reward {mean:.4g} over {w['n']} decisions "
                        f"(before it {w['baseline']:.4g}; {test})")  # fmt: skip
            return False
        why = (f"live reward {mean:.4g} over {w['n']} decisions below the previous champion's "
               f"{w['baseline']:.4g} by more than {margin:g} ({test})")  # fmt: skip
        self.registry.rollback(self.model, why)
        self.champion = self._load_champion()
        for entry in reversed(self.state.history):
            if entry.get("version") == w["version"]:
                entry["verdict"] = "rolled_back"
                self._tag(entry["run_id"], {schema.LIVE_GATE_TAG: "rolled_back",
                                            schema.LIVE_GATE_WHY_TAG: why})  # fmt: skip
                break
        self._event(f"rolled back v{w['version']} -> v{self.champion.version}: {why}")
        self._save(durable=True)
        return True

    def _fallback(self) -> PolicyHandle:
        rule = str(self.cfg.fallback)
        return PolicyHandle(self.load_policy(rule), "rule", f"fallback:{rule}")

    # ------------------------------------------------------------------ records
    def _record(self, run_id: str, reason: str, verdict: str, result: GateResult) -> None:
        self._tag(
            run_id,
            {
                schema.LIVE_ROLE_TAG: schema.RETRAINING_ROLE,
                schema.LIVE_SESSION_TAG: str(self.cfg.session),
                schema.LIVE_TRIGGER_TAG: reason[:4000],
                schema.LIVE_GATE_TAG: verdict,
                schema.LIVE_GATE_WHY_TAG: result.why[:4000],
            },
            {schema.gate_metric(k): v for k, v in result.metrics().items() if math.isfinite(v)},
        )

    def _tag(self, run_id: str, tags: dict[str, str], metrics: dict[str, float] | None = None):
        self.registry.annotate_run(run_id, tags, metrics or {})

    def _canary_view(self) -> dict[str, Any] | None:
        """The canary as the dashboard shows it: its version and episodes per arm so far."""
        c = self.state.canary
        if c is None:
            return None
        return {
            "version": c["version"], "episodes": int(c.get("episodes") or self.cfg.canary.episodes),
            "challenger": len(c["challenger_returns"]), "champion": len(c["champion_returns"]),
        }  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        """What the dashboard shows."""
        s = self.state
        return {
            "session": str(self.cfg.session),
            "decisions": s.decisions,
            "episodes": s.episodes,
            "reward_recent": float(np.mean(self.view_rewards)) if self.view_rewards else math.nan,
            "reward_mean": s.reward_sum / s.decisions if s.decisions else math.nan,
            "rate": self._rate,
            "champion": self.champion.version if self.champion else "-",
            "acting": "fallback" if self.killed else "champion",
            "shadow": s.shadow["version"] if s.shadow else None,
            "canary": self._canary_view(),
            "watch": dict(s.watch) if s.watch else None,
            "triggers": {t.name: t.state() for t in self.triggers},
            "retrainings": list(s.history[-5:]),
            "retraining_count": len(s.history),
            "awaiting": self._awaiting,
            "log_written": self.writer.written if self.writer else 0,
            "log_flushed": self.writer.flushed if self.writer else 0,
            "event": self.last_event,
            "forecast": self.feed.snapshot() if self.feed is not None else None,
        }
