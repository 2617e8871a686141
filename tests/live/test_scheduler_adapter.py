"""The scheduler adapter runs real scripts at the policy's intervals and hears the user.

Scripts are tiny ``/bin/sh`` files in ``tmp_path``; a :class:`FakeClock` makes the schedule's
hours pass in no time (the scripts still run for real), so nothing here waits on wall time but
the timeout test's 0.3 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import rlbench  # noqa: F401  (registers the environments)
from rlbench.errors import UserError
from rlbench.live.adapters import Adapter
from rlbench.live.control import main as ctl
from rlbench.live.scheduler import (
    DECREASE,
    INCREASE,
    KEEP,
    FakeClock,
    SchedulerAdapter,
    load_schedule,
    send_command,
)

STEP = 1800.0  # the simulator's 30-minute decision
POLL = 300.0  # fake seconds between looks at the command folder


def write_scripts(tmp_path: Path) -> dict[str, list[str]]:
    """Shell scripts: ok (appends a line, prints its cwd and to stderr), fail (exit 3), slow."""
    bodies = {
        "ok": f'echo "ran in $(pwd -P)"\necho warning >&2\necho line >> "{tmp_path}/ok.log"\n',
        "fail": "echo broken >&2\nexit 3\n",
        "slow": "sleep 30\n",
    }
    commands = {}
    for name, body in bodies.items():
        path = tmp_path / f"{name}.sh"
        path.write_text(body)
        commands[name] = ["/bin/sh", str(path)]
    return commands


@pytest.fixture
def schedule(tmp_path: Path) -> Path:
    commands = write_scripts(tmp_path)
    path = tmp_path / "schedule.yaml"
    path.write_text(
        "scripts:\n"
        f"  - {{name: ok, command: {json.dumps(commands['ok'])}, interval_minutes: 60}}\n"
        f"  - {{name: fail, command: {json.dumps(commands['fail'])}, interval_minutes: 60}}\n"
        f"  - name: slow\n    command: {json.dumps(commands['slow'])}\n"
        "    interval_minutes: 60\n    timeout_s: 0.3\n"
    )
    return path


@pytest.fixture
def make(schedule: Path, tmp_path: Path):
    """Adapters on the schedule, in ``tmp_path/work`` (or ``workdir=``), on a fake clock;
    closed afterwards."""
    made: list[SchedulerAdapter] = []

    def make_adapter(script: str = "ok", workdir: str = "work", **kwargs) -> SchedulerAdapter:
        kwargs = {"step_seconds": STEP, "poll_seconds": POLL, "clock": FakeClock(), **kwargs}
        adapter = SchedulerAdapter(schedule, tmp_path / workdir, script=script, **kwargs)
        made.append(adapter)
        return adapter

    yield make_adapter
    for adapter in made:
        adapter.close()


def runs_of(adapter: SchedulerAdapter) -> list[dict]:
    path = adapter.folder / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def total_runs(adapter: SchedulerAdapter, action: int, steps: int) -> tuple[int, list[float]]:
    adapter.reset()
    runs, intervals = 0, []
    for _ in range(steps):
        _, _, _, _, info = adapter.step(action)
        runs += info["runs"]
        intervals.append(info["interval"])
    return runs, intervals


def test_the_adapter_speaks_the_simulators_spaces_and_units(make):
    adapter = make()
    assert isinstance(adapter, Adapter)
    env = gym.make("rlbench/ScriptScheduler-v0")
    assert adapter.env_id == "rlbench/ScriptScheduler-v0"
    assert adapter.action_space == env.action_space
    obs = adapter.reset()
    assert env.observation_space.contains(obs)
    # both start at a 60-minute interval, no manual runs, no preference: the same observation
    np.testing.assert_allclose(obs, env.reset(seed=0)[0], rtol=1e-6)
    for action in (DECREASE, KEEP, INCREASE, DECREASE):
        obs, reward, terminated, truncated, _ = adapter.step(action)
        assert env.observation_space.contains(obs)
        assert isinstance(reward, float) and not terminated and not truncated
    with pytest.raises(ValueError, match="action must be"):
        adapter.step(3)


def test_runs_follow_the_interval_the_policy_chooses(make, tmp_path):
    kept, kept_intervals = total_runs(make("ok", workdir="kept"), KEEP, 12)
    assert kept_intervals == [60.0] * 12
    assert kept == 5  # at 60, 120, ..., 300 minutes of the 6 hours (360 opens the next epoch)
    decreased_adapter = make("ok", workdir="decreased")
    decreased, intervals = total_runs(decreased_adapter, DECREASE, 12)
    assert intervals == pytest.approx([60 * 0.85**k for k in range(1, 13)])
    assert decreased > kept + 3  # runs come more often as the interval shrinks
    assert len((tmp_path / "ok.log").read_text().splitlines()) == kept + decreased
    assert all(r["kind"] == "scheduled" and r["success"] for r in runs_of(decreased_adapter))


def test_output_duration_and_exit_code_are_recorded(make, tmp_path):
    ok, fail = make("ok"), make("fail")
    for adapter in (ok, fail):
        adapter.reset()
        infos = [adapter.step(KEEP)[4] for _ in range(3)]  # a run at 60 minutes
        (info,) = [i for i in infos if i["runs"]]
        assert all("success" not in i for i in infos if not i["runs"])
    (record,) = runs_of(ok)
    assert record["exit_code"] == 0 and record["success"] and record["duration_s"] >= 0
    work = (tmp_path / "work" / "ok" / "work").resolve()
    assert (ok.folder / record["stdout"]).read_text() == f"ran in {work}\n"  # its own cwd
    assert (ok.folder / record["stderr"]).read_text() == "warning\n"
    (record,) = runs_of(fail)
    assert record["exit_code"] == 3 and not record["success"] and not record["timed_out"]
    assert (fail.folder / "runs" / "1.err").read_text() == "broken\n"
    assert info["failures"] == 1 and info["success"] == 0.0
    assert info["run_records"][0]["exit_code"] == 3


def test_a_run_past_its_timeout_is_killed_and_recorded_as_a_failure(make, tmp_path):
    adapter = make("slow")
    adapter.reset()
    send_command(tmp_path / "work", "slow", "run")
    _, _, _, _, info = adapter.step(KEEP)
    (record,) = info["run_records"]
    assert record["timed_out"] and not record["success"] and record["exit_code"] != 0
    assert record["duration_s"] < 20  # killed, not waited for (the script sleeps 30 s)
    assert "timed out" in record["error"]
    assert info["failures"] == 1 and info["success"] == 0.0
    assert runs_of(adapter) == [record]


def test_ctl_run_makes_a_manual_run_and_the_observation_and_reward_react(make, tmp_path, capsys):
    adapter = make("ok")
    adapter.reset()
    _, quiet_reward, _, _, info = adapter.step(KEEP)
    assert info["runs"] == 0
    ctl(["run", "ok", "--workdir", str(tmp_path / "work")])
    assert "queued run for ok" in capsys.readouterr().out
    obs, reward, _, _, info = adapter.step(KEEP)
    assert info["manual_runs"] == 1 and info["commands"] == ["run"]
    assert obs[2] == pytest.approx(1 / 8)  # one decision of the last manual_window (8)
    assert reward == pytest.approx(quiet_reward + 1.0)  # the seed's manual-run reward
    (record,) = runs_of(adapter)
    assert record["kind"] == "manual" and record["command"] is not None
    assert (tmp_path / "ok.log").read_text() == "line\n"
    # applied once: the command is done, the next decision sees no new manual run
    assert not list((adapter.folder / "commands").glob("*.cmd"))
    assert len(list((adapter.folder / "commands" / "done").glob("*.cmd"))) == 1
    _, _, _, _, info = adapter.step(KEEP)
    assert info["manual_runs"] == 0


@pytest.mark.parametrize(
    ("verbs", "expected"),
    [(["increase"], 1.0), (["decrease"], 0.0), ([], 0.5), (["decrease", "increase"], 1.0)],
)
def test_preferences_follow_the_simulators_sign(make, tmp_path, verbs, expected):
    """increase = +1 "run more often" -> (1 + 1) / 2; the latest of an epoch wins."""
    adapter = make("ok")
    adapter.reset()
    for verb in verbs:
        send_command(tmp_path / "work", "ok", verb)
    obs, reward, _, _, info = adapter.step(KEEP)
    assert obs[1] == expected
    assert info["requests"] == int(bool(verbs))
    assert reward == pytest.approx(0.2 + 0.5 * bool(verbs))  # stability + preference
    obs, _, _, _, _ = adapter.step(KEEP)
    assert obs[1] == 0.5  # a preference is a signal of its decision only


def test_a_command_found_journalled_after_a_kill_is_not_applied_again(make, schedule, tmp_path):
    adapter = make("ok")
    adapter.reset()
    send_command(tmp_path / "work", "ok", "run")
    assert adapter.step(KEEP)[4]["manual_runs"] == 1
    adapter.close()
    # killed after journalling, before moving the file to done/: the file is still pending
    (done,) = (adapter.folder / "commands" / "done").glob("*.cmd")
    done.rename(adapter.folder / "commands" / done.name)
    send_command(tmp_path / "work", "ok", "increase")  # sent while the adapter was down
    again = make("ok")
    obs = again.reset()
    assert obs[2] == pytest.approx(1 / 8)  # the manual history resumed from scheduler_state.json
    obs, _, _, _, info = again.step(KEEP)
    assert info["manual_runs"] == 0 and info["commands"] == ["increase"] and obs[1] == 1.0
    assert len(runs_of(again)) == 1
    assert not list((again.folder / "commands").glob("*.cmd"))


def test_real_time_paces_the_epochs(make):
    """With the real clock a decision lasts at least ``step_seconds``; an accelerated schedule
    (a minute is 1 ms, so the 60-minute interval is 0.06 s) runs within three decisions."""
    adapter = make("ok", clock=None, step_seconds=0.05, poll_seconds=0.01,
                   seconds_per_minute=0.001)  # fmt: skip
    adapter.reset()
    start = time.monotonic()
    runs = sum(adapter.step(KEEP)[4]["runs"] for _ in range(3))
    assert time.monotonic() - start >= 0.15
    assert runs >= 1


def test_a_restarted_adapter_resumes_the_interval(make):
    adapter = make("ok")
    adapter.reset()
    for _ in range(3):
        obs, *_ = adapter.step(DECREASE)
    adapter.close()
    again = make("ok")
    np.testing.assert_allclose(again.reset()[3], obs[3])
    assert again.interval == pytest.approx(60 * 0.85**3)
    again.close()
    assert make("ok", resume=False).reset()[3] == make("fail").reset()[3]  # 60 minutes


def test_one_adapter_drives_a_script_at_a_time(make):
    make("ok")
    with pytest.raises(UserError, match="another adapter is driving 'ok'"):
        make("ok")


def write(tmp_path: Path, text: str, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_shell_string_command_is_refused_with_one_clear_message(tmp_path):
    text = "scripts:\n  - {name: x, command: 'rm -rf ~/tmp', interval_minutes: 5}\n"
    path = write(tmp_path, text)
    with pytest.raises(UserError) as caught:
        SchedulerAdapter(path, tmp_path / "work", clock=FakeClock())
    message = str(caught.value)
    assert str(path) in message and "script 'x'" in message and "argument list" in message
    assert "\n" not in message
    assert not (tmp_path / "work").exists()  # nothing set up for a refused schedule


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("scripts: []\n", "expected 'scripts:'"),
        ("scripts:\n  - {name: x, command: [a], interval_minutes: 5, every: 3}\n",
         "unknown key 'every'"),
        ("scripts:\n  - {name: ../x, command: [a], interval_minutes: 5}\n", "name must be"),
        ("scripts:\n  - {name: x, command: [], interval_minutes: 5}\n", "non-empty list"),
        ("scripts:\n  - {name: x, command: [a], interval_minutes: 0}\n", "interval_minutes"),
        ("scripts:\n  - {name: x, command: [a], interval_minutes: 9999}\n", "min_interval"),
        ("scripts:\n  - {name: x, command: [a], interval_minutes: 5, timeout_s: -1}\n",
         "timeout_s"),
        ("scripts:\n  - {name: x, command: [a], interval_minutes: 5}\n"
         "  - {name: x, command: [b], interval_minutes: 5}\n", "listed twice"),
        ("scripts:\n  - {name: x, command: [a], interval_minutes: 5}\n"
         "  - {name: y, command: [b], interval_minutes: 5}\n", "pass script="),
        ("scripts: [\n", "not valid YAML"),
    ],
)  # fmt: skip
def test_bad_schedules_get_one_clear_message(tmp_path, text, match):
    with pytest.raises(UserError, match=match) as caught:
        SchedulerAdapter(write(tmp_path, text), tmp_path / "work", clock=FakeClock())
    assert "\n" not in str(caught.value)


def test_json_schedules_and_bad_arguments(tmp_path):
    path = write(tmp_path, json.dumps({"scripts": [
        {"name": "x", "command": ["/bin/true", 1], "interval_minutes": 5}]}), "s.json")  # fmt: skip
    (spec,) = load_schedule(path)
    assert spec.command == ("/bin/true", "1") and spec.timeout_s is None
    with pytest.raises(UserError, match="'regret' needs the user's hidden ideal"):
        SchedulerAdapter(path, tmp_path / "work", reward_mode="regret")
    with pytest.raises(UserError, match="step_seconds must be"):
        SchedulerAdapter(path, tmp_path / "work", step_seconds=0)
    with pytest.raises(UserError, match="no script 'y'; scripts: x"):
        SchedulerAdapter(path, tmp_path / "work", script="y")
    with pytest.raises(UserError, match="cannot read the schedule file"):
        load_schedule(tmp_path / "missing.yaml")


def test_ctl_refuses_an_unknown_script_or_verb_in_one_line(make, schedule, tmp_path, capsys):
    make("ok")
    workdir = str(tmp_path / "work")
    with pytest.raises(SystemExit) as caught:
        ctl(["run", "okk", "--workdir", workdir])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: unknown script 'okk' (did you mean 'ok'?); scripts in --workdir " \
        f"{workdir}: ok\n"  # fmt: skip
    # with --schedule, a command can be queued for a script no adapter has started yet
    ctl(["increase", "fail", "--workdir", workdir, "--schedule", str(schedule)])
    assert len(list((tmp_path / "work" / "fail" / "commands").glob("*.cmd"))) == 1
    # the console script's path: a verb it does not know
    proc = subprocess.run(
        [sys.executable, "-m", "rlbench.live.control", "faster", "ok", "--workdir", workdir],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: ") and "'faster'" in line
    assert all(v in line for v in ("run", "increase", "decrease"))
