"""The script scheduler as a live system: real scripts run at the intervals a policy chooses.

What it owns: :class:`SchedulerAdapter`, the :class:`rlbench.live.adapters.Adapter` of
``rlbench/ScriptScheduler-v0`` (a policy trained in that simulator acts on it unchanged); the
schedule file (:func:`load_schedule`); and the protocol by which a user's ``run`` / ``increase``
/ ``decrease`` reach it (:func:`send_command` writes, the adapter reads; ``rlbench-live-ctl`` is
its command line). Layer 7 (:mod:`rlbench.live`): may import anything in rlbench.

The schedule file is YAML (JSON if it ends in ``.json``)::

    scripts:
      - name: backup                                # letters, digits, . _ - (a folder name)
        command: [/usr/bin/rsync, -a, /src, /dst]   # an argument list: never a shell string
        interval_minutes: 60                        # the interval before any decision
        timeout_s: 300                              # optional; default the adapter's timeout_s

One adapter drives one script (``script=`` picks it when the file lists several), as the
simulator's one-copy face schedules one; a loop runs one adapter per script. Arguments are
passed as they are (no shell, no ``~`` or ``$VAR``); relative paths are relative to the
script's working folder, so give absolute ones. Under ``workdir`` each script has its own::

    <script>/work/                  the working folder (the script's cwd)
    <script>/runs/<n>.out|.err      run n's output
    <script>/runs.jsonl             one line per run: kind, start, duration, exit code, timeout
    <script>/commands/              pending user commands, a file each (see send_command)
    <script>/commands/done/         applied commands
    <script>/commands.jsonl         one line per applied command (what makes them exactly-once)
    <script>/scheduler_state.json   interval, average gap, manual runs: a restart resumes them

Time: one decision covers ``step_seconds`` of real time (default 1800, the simulator's 30
minutes), from the moment ``step`` is called. The script runs whenever its timer reaches the
interval (measured from the start of its last run, manual or scheduled); runs are synchronous,
and commands are looked for every ``poll_seconds``. ``seconds_per_minute`` (60) is how long a
schedule minute lasts, lower for an accelerated demo. ``clock`` is injectable: a
:class:`FakeClock` makes hours pass in no time (tests), while the scripts still run for real
and their durations are measured in real seconds.

The observation is the simulator's, in its units: the average gap between runs and the
interval on the log scale, the preference signal ``(pref + 1) / 2`` of this decision (the
latest ``increase``/``decrease`` of the epoch), and the decisions with a manual run among the
last ``manual_window``, divided by it. Only ``reward_mode="seed"`` exists live: manual run
+1.0, preference +0.5, interval at the floor -0.3, interval within 1.5 minutes of the average
gap seen before the decision +0.2. ``"regret"`` needs the user's ideal interval, which only the
simulator knows.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import re
import secrets
import signal
import subprocess
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock
import numpy as np
import yaml

from rlbench.envs.scheduler import DECREASE, INCREASE, KEEP, ScriptSchedulerCore
from rlbench.errors import UserError, first_line

ENV_ID = "rlbench/ScriptScheduler-v0"
#: user command -> preference signal: +1 "run more often", -1 "less often" (``run``: none)
VERBS: dict[str, int] = {"run": 0, "increase": +1, "decrease": -1}
WORKDIR_ENV = "RLBENCH_LIVE_WORKDIR"
SCRIPT_KEYS = ("name", "command", "interval_minutes", "timeout_s")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SET_BY_ADAPTER = ("step_minutes", "initial_interval", "reward_mode")


# --------------------------------------------------------------------------- the schedule
@dataclass(frozen=True)
class ScriptSpec:
    """One script of the schedule: its command is an argument list, run without a shell."""

    name: str
    command: tuple[str, ...]
    interval_minutes: float
    timeout_s: float | None = None


def load_schedule(path: str | Path) -> list[ScriptSpec]:
    """Read and check a schedule file; any mistake is one ``UserError`` naming file and script."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise UserError(f"cannot read the schedule file {path}: {err.strerror or err}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise UserError(f"{path} is not valid {kind}: {first_line(err)}") from None
    scripts = data.get("scripts") if isinstance(data, dict) else data
    if not isinstance(scripts, list) or not scripts:
        raise UserError(f"{path}: expected 'scripts:' with a list of scripts (name, command, "
                        "interval_minutes)")  # fmt: skip
    specs = [_spec(path, i, entry) for i, entry in enumerate(scripts)]
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"{path}: script {twice[0]!r} is listed twice; names must be unique")
    return specs


def _spec(path: Path, index: int, entry: Any) -> ScriptSpec:
    if not isinstance(entry, dict):
        raise UserError(f"{path}: script #{index + 1} must be a mapping ({', '.join(SCRIPT_KEYS)})")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UserError(f"{path}: script #{index + 1}: name must be letters, digits, '.', '_' or "
                        f"'-' (it names a folder), got {name!r}")  # fmt: skip
    where = f"{path}: script {name!r}"
    unknown = sorted(set(entry) - set(SCRIPT_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; keys: {', '.join(SCRIPT_KEYS)}")
    command = entry.get("command")
    if isinstance(command, str):
        raise UserError(
            f"{where}: command must be an argument list such as ['/bin/sh', 'job.sh'], not the "
            f"string {command!r} (rlbench never runs a shell built from config text)"
        )
    if (
        not isinstance(command, list)
        or not command
        or any(isinstance(a, bool) or not isinstance(a, str | int | float) for a in command)
    ):
        raise UserError(f"{where}: command must be a non-empty list of arguments, got {command!r}")
    interval = entry.get("interval_minutes")
    timeout = entry.get("timeout_s")
    if not _positive(interval):
        raise UserError(f"{where}: interval_minutes must be a number > 0, got {interval!r}")
    if timeout is not None and not _positive(timeout):
        raise UserError(f"{where}: timeout_s must be a number > 0, got {timeout!r}")
    return ScriptSpec(
        name=name,
        command=tuple(str(a) for a in command),
        interval_minutes=float(interval),
        timeout_s=None if timeout is None else float(timeout),
    )


def _positive(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


# --------------------------------------------------------------------------- the commands
def command_dir(workdir: str | Path, script: str) -> Path:
    """The folder a script's pending commands are written to."""
    return Path(workdir) / script / "commands"


def known_scripts(workdir: str | Path) -> list[str]:
    """The scripts an adapter has set up under ``workdir`` (those with a command folder)."""
    root = Path(workdir)
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/commands") if p.is_dir())


def send_command(workdir: str | Path, script: str, verb: str) -> Path:
    """Queue ``verb`` (``run``, ``increase``, ``decrease``) for a script; return its file.

    The command is written and fsynced under a dot-name, then renamed to
    ``<time_ns>-<pid>-<random>.cmd``: the adapter never reads half a command, and names sort in
    the order commands were given. The adapter applies it, journals its name in
    ``commands.jsonl``, then moves the file to ``done/``; a file found already journalled (the
    adapter was killed between the two) is moved without being applied again. So a queued
    command is neither lost nor applied twice.
    """
    if verb not in VERBS:
        raise UserError(f"unknown command {verb!r}; choose from {', '.join(VERBS)}")
    folder = command_dir(workdir, script)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp, final = folder / f".{name}.tmp", folder / f"{name}.cmd"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, f"{verb}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, final)
    return final


# --------------------------------------------------------------------------- time
class Clock:
    """Real time: monotonic seconds, and sleeping."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock(Clock):
    """Time that passes only when slept: a test covers hours of schedule in no time."""

    def __init__(self, start: float = 0.0) -> None:
        self.t = float(start)

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(float(seconds), 0.0)


# --------------------------------------------------------------------------- the adapter
@dataclass
class _Epoch:
    """What happened during one decision."""

    manual: int = 0
    scheduled: int = 0
    preference: int = 0
    runs: list[dict[str, Any]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


class SchedulerAdapter:
    """One real script scheduled by a policy, with user commands as feedback (see the module).

    ``schedule_path``/``script``: the schedule file and the script this adapter drives (needed
    when the file lists several). ``workdir``: where the script's folders go. ``timeout_s``:
    a run's time limit unless the schedule sets one; a run past it is killed (with its process
    group) and recorded as a failure. ``env_kwargs``: the simulator's arguments (min/max
    interval, factors, ``manual_window``, ``gap_smoothing``, the seed reward terms,
    ``horizon``), so the adapter matches the environment a policy was trained on; the adapter
    sets ``step_minutes``, ``initial_interval`` and ``reward_mode`` itself. ``resume``: carry
    ``scheduler_state.json`` over from an earlier session.

    ``step`` returns ``info`` with ``interval`` and ``avg_gap`` (minutes), ``preference``,
    ``requests``, ``manual_runs``, ``scheduled_runs``, ``runs``, ``at_floor``, ``failures``
    (failed runs), ``run_records`` (each run's record), ``commands`` (the verbs applied) and,
    when the script ran, ``success``: the fraction of the epoch's runs that exited 0 in time
    (1.0 or 0.0 for one run). Episodes are truncated every ``horizon`` decisions so logs have
    the simulator's episode length, but the real system does not restart: ``reset`` after the
    first keeps the interval, the timer and the history, and clears the preference.
    """

    env_id = ENV_ID

    def __init__(
        self,
        schedule_path: str | Path,
        workdir: str | Path,
        *,
        script: str | None = None,
        step_seconds: float = 1800.0,
        timeout_s: float = 600.0,
        poll_seconds: float = 1.0,
        seconds_per_minute: float = 60.0,
        reward_mode: str = "seed",
        env_kwargs: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
        resume: bool = True,
    ) -> None:
        for key, value in (("step_seconds", step_seconds), ("timeout_s", timeout_s),
                           ("poll_seconds", poll_seconds),
                           ("seconds_per_minute", seconds_per_minute)):  # fmt: skip
            if not _positive(value):
                raise UserError(f"{key} must be a number > 0, got {value!r}")
        if reward_mode != "seed":
            raise UserError(
                f"reward_mode {reward_mode!r} is not available live: 'regret' needs the user's "
                "hidden ideal interval, which only the simulator knows; use reward_mode='seed'"
            )
        specs = load_schedule(schedule_path)
        names = [s.name for s in specs]
        if script is None and len(specs) > 1:
            raise UserError(f"{schedule_path} lists {len(specs)} scripts ({', '.join(names)}): "
                            "pass script= to choose the one this adapter drives")  # fmt: skip
        if script is not None and script not in names:
            raise UserError(f"{schedule_path} has no script {script!r}; "
                            f"scripts: {', '.join(names)}")  # fmt: skip
        self.spec = specs[0] if script is None else specs[names.index(script)]
        self.step_seconds = float(step_seconds)
        self.timeout_s = float(self.spec.timeout_s or timeout_s)
        self.poll_seconds = float(poll_seconds)
        self.seconds_per_minute = float(seconds_per_minute)
        self.clock = clock or Clock()
        kwargs = {k: v for k, v in (env_kwargs or {}).items() if k not in _SET_BY_ADAPTER}
        defaults = inspect.signature(ScriptSchedulerCore).parameters
        low = kwargs.get("min_interval", defaults["min_interval"].default)
        high = kwargs.get("max_interval", defaults["max_interval"].default)
        if _positive(low) and _positive(high) and not low <= self.spec.interval_minutes <= high:
            raise UserError(
                f"{schedule_path}: script {self.spec.name!r}: interval_minutes must be within "
                f"the environment's [min_interval, max_interval] = [{low}, {high}], "
                f"got {self.spec.interval_minutes}"
            )
        try:
            self.core = ScriptSchedulerCore(
                1,
                **kwargs,
                step_minutes=self.step_seconds / self.seconds_per_minute,
                initial_interval=self.spec.interval_minutes,
                reward_mode="seed",
            )
        except (TypeError, ValueError) as err:
            raise UserError(f"env_kwargs for the scheduler adapter: {err}") from None
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space

        self.folder = Path(workdir) / self.spec.name
        self._work, self._runs = self.folder / "work", self.folder / "runs"
        self._commands = command_dir(workdir, self.spec.name)
        self._done = self._commands / "done"
        for folder in (self._work, self._runs, self._done):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = filelock.FileLock(str(self.folder / ".adapter.lock"))
        try:
            self._lock.acquire(timeout=0)
        except filelock.Timeout:
            raise UserError(
                f"another adapter is driving {self.spec.name!r} in {self.folder} (one at a time: "
                "commands must be applied once); stop it or use another workdir"
            ) from None
        self._journal_path = self.folder / "commands.jsonl"
        self._applied = _journalled(self._journal_path)
        numbers = [int(p.stem) for p in self._runs.glob("*.out") if p.stem.isdigit()]
        self._next_run = max(numbers, default=0) + 1
        self._resume = resume
        self._started = False
        self.decisions = 0
        self._episode_steps = 0

    # ------------------------------------------------------------------ the protocol
    def reset(self, seed: int | None = None) -> np.ndarray:
        """The first call starts the schedule (as if the script had just run, like the
        simulator); later calls begin a new episode of the same, continuing system."""
        del seed  # nothing is random: the world is real
        if not self._started:
            self._start()
        self.preference = 0
        self._episode_steps = 0
        return self._observe()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Rescale the interval, then run the script and apply commands for one epoch."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        a = int(action)
        if a not in (DECREASE, KEEP, INCREASE):
            raise ValueError(f"action must be 0 (decrease), 1 (keep) or 2 (increase), got {a}")
        core = self.core
        seen_gap = self.avg_gap
        self.interval = float(
            np.clip(self.interval * core.factors[a], core.min_interval, core.max_interval)
        )
        epoch = _Epoch()
        end = self.clock.now() + self.step_seconds
        while True:
            self._apply_commands(epoch)
            now = self.clock.now()
            if now >= end:
                break
            due = self._last_run + self.interval * self.seconds_per_minute
            if now >= due:
                self._launch("scheduled", None, epoch)
                continue
            self.clock.sleep(min(due, end, now + self.poll_seconds) - now)

        self.preference = epoch.preference
        self.manual_hist.append(1 if epoch.manual else 0)
        self.decisions += 1
        self._episode_steps += 1
        at_floor = self.interval <= core.min_interval
        stable = abs(self.interval - seen_gap) <= core.stability_tolerance
        reward = (
            core.manual_reward * (epoch.manual > 0)
            + core.preference_reward * (epoch.preference != 0)
            + core.floor_penalty * at_floor
            + core.stability_reward * stable
        )
        failures = sum(not r["success"] for r in epoch.runs)
        info: dict[str, Any] = {
            "interval": self.interval,
            "avg_gap": self.avg_gap,
            "preference": epoch.preference,
            "requests": int(epoch.preference != 0),
            "manual_runs": epoch.manual,
            "scheduled_runs": epoch.scheduled,
            "runs": len(epoch.runs),
            "at_floor": int(at_floor),
            "failures": failures,
            "run_records": epoch.runs,
            "commands": epoch.commands,
        }
        if epoch.runs:
            info["success"] = 1.0 - failures / len(epoch.runs)
        self._save_state()
        truncated = self._episode_steps >= core.horizon
        return self._observe(), float(reward), False, truncated, info

    def close(self) -> None:
        """Release the script (runs are synchronous: none is left running)."""
        if self._lock.is_locked:
            self._lock.release()

    # ------------------------------------------------------------------ internals
    def _start(self) -> None:
        core = self.core
        self.interval = self.spec.interval_minutes
        self.avg_gap = self.spec.interval_minutes
        self.manual_hist: deque[int] = deque([0] * core.manual_window, maxlen=core.manual_window)
        state_path = self.folder / "scheduler_state.json"
        if self._resume and state_path.exists():
            try:
                state = json.loads(state_path.read_text())
                self.interval = float(
                    np.clip(state["interval"], core.min_interval, core.max_interval)
                )
                self.avg_gap = float(state["avg_gap"])
                self.manual_hist.extend(int(bool(m)) for m in state["manual_hist"])
                self.decisions = int(state["decisions"])
            except (ValueError, KeyError, TypeError) as err:
                raise UserError(f"cannot resume from {state_path} ({first_line(err)}): delete "
                                "it to start the script's schedule afresh") from None  # fmt: skip
        self._last_run = self.clock.now()
        self._started = True

    def _observe(self) -> np.ndarray:
        gap, interval = self.core._log_scale(np.array([self.avg_gap, self.interval]))
        obs = [
            gap,
            (self.preference + 1) / 2.0,
            sum(self.manual_hist) / self.core.manual_window,
            interval,
        ]
        return np.clip(np.array(obs), 0.0, 1.0).astype(np.float32)

    def _apply_commands(self, epoch: _Epoch) -> None:
        """Apply each pending command once, oldest first (see :func:`send_command`)."""
        for path in sorted(self._commands.glob("*.cmd")):
            if path.stem not in self._applied:
                try:
                    verb = path.read_text().strip().lower()
                except FileNotFoundError:  # removed by hand meanwhile
                    continue
                record: dict[str, Any] = {"id": path.stem, "verb": verb, "ts": time.time(),
                                          "decision": self.decisions}  # fmt: skip
                if verb == "run":
                    record["run"] = self._launch("manual", path.stem, epoch)["n"]
                elif verb in VERBS:
                    epoch.preference = VERBS[verb]  # the latest of the epoch wins
                else:
                    record["ignored"] = f"unknown command; choose from {', '.join(VERBS)}"
                if verb in VERBS:
                    epoch.commands.append(verb)
                _append_line(self._journal_path, record)
                self._applied.add(path.stem)
            os.replace(path, self._done / path.name)

    def _launch(self, kind: str, command_id: str | None, epoch: _Epoch) -> dict[str, Any]:
        """Run the script once, now; the gap since the last run feeds the average gap."""
        b = self.core.gap_smoothing
        start = self.clock.now()
        gap = (start - self._last_run) / self.seconds_per_minute
        self.avg_gap = (1 - b) * self.avg_gap + b * gap
        self._last_run = start
        n, self._next_run = self._next_run, self._next_run + 1
        record = {"n": n, "script": self.spec.name, "kind": kind, "command": command_id,
                  "decision": self.decisions, "started": time.time(),
                  **self._execute(n)}  # fmt: skip
        _append_line(self.folder / "runs.jsonl", record)
        epoch.runs.append(record)
        if kind == "manual":
            epoch.manual += 1
        else:
            epoch.scheduled += 1
        return record

    def _execute(self, n: int) -> dict[str, Any]:
        """Run the argument list (no shell) in the working folder, output to files, with a
        timeout that kills the script's whole process group."""
        out_path, err_path = self._runs / f"{n}.out", self._runs / f"{n}.err"
        exit_code: int | None = None
        timed_out, error = False, None
        t0 = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            try:
                proc = subprocess.Popen(
                    list(self.spec.command), cwd=self._work, stdin=subprocess.DEVNULL,
                    stdout=out, stderr=err, start_new_session=True,
                )  # fmt: skip
            except OSError as exc:
                error = f"cannot start {self.spec.command[0]!r}: {exc.strerror or exc}"
                err.write(f"{error}\n".encode())
            else:
                try:
                    exit_code = proc.wait(timeout=self.timeout_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    error = f"timed out after {self.timeout_s:g} s: killed"
                finally:
                    if proc.poll() is None:  # timed out, or we are interrupted
                        _kill_group(proc)
                        exit_code = proc.wait()
        return {
            "duration_s": time.monotonic() - t0,
            "exit_code": exit_code,
            "timed_out": timed_out,
            "success": exit_code == 0 and not timed_out,
            "error": error,
            "stdout": str(out_path.relative_to(self.folder)),
            "stderr": str(err_path.relative_to(self.folder)),
        }

    def _save_state(self) -> None:
        state = {"interval": self.interval, "avg_gap": self.avg_gap,
                 "manual_hist": list(self.manual_hist), "decisions": self.decisions}  # fmt: skip
        tmp = self.folder / ".scheduler_state.json.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.folder / "scheduler_state.json")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the script and what it started (it leads its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def _append_line(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line and fsync it: a record that was acted on survives a crash."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _journalled(path: Path) -> set[str]:
    """The ids of the commands already applied (a torn last line is a command never done)."""
    ids = set()
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                ids.add(json.loads(line)["id"])
    return ids
