"""The live session's decisions, records and verdicts, with a fake registry and fake trainings
(the real registry, MLflow and training are in test_live_e2e.py).

Each test runs a real :class:`~rlbench.live.adapters.SimAdapter` (autoscaling, one-hour episodes)
and real off-policy gates; only the registry is a dict and "training" hands over a prepared
policy, so the tests check the loop's logic in a second or two each.
"""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import rlbench  # noqa: F401  (registers the environments)
from rlbench.config import CONF_LIVE_DIR
from rlbench.live import loop as loop_module
from rlbench.live.adapters import SimAdapter
from rlbench.live.loop import LiveSession
from rlbench.offline.log import read_log
from rlbench.tracking import schema
from rlbench.tracking.tracker import Tracker

ENV = {"horizon": 12, "provision_delay": 0, "load": "steady", "base_load": 800.0, "noise": 0.05}


class Fixed:
    """Always ``action`` (0 remove, 1 hold, 2 add)."""

    def __init__(self, action: int) -> None:
        self.action = action

    def action_probabilities(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        out = np.zeros((len(obs), 3))
        out[:, self.action] = 1.0
        return out

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return np.full(len(obs), self.action)


class Scaler(Fixed):
    """Add while requests wait, remove when utilisation is low, else hold (a threshold rule)."""

    def __init__(self) -> None:
        super().__init__(1)

    def action_probabilities(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        act = np.where(obs[:, 3] > 0, 2, np.where(obs[:, 2] < 0.5, 0, 1))
        return np.eye(3)[act]

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return self.action_probabilities(obs).argmax(axis=1)


class FakeRegistry:
    """Versions as a dict, aliases as two fields, every record kept for the asserts."""

    def __init__(self, champion: Any) -> None:
        self.agents = {"1": champion}
        self.champion, self.replaced = "1", {}
        self.challenger: str | None = None  # the alias a registered version gets
        self.run_versions: dict[str, str] = {}
        self.notes: dict[str, dict[str, Any]] = {}
        self.moves: list[tuple[str, str]] = []
        self.trainings: list[list[str]] = []  # the rlbench-train overrides of each retraining
        self.files: dict[str, Path] = {}  # version -> its saved model

    def exists(self, model: str) -> bool:
        return True

    def resolve_alias(self, uri: str) -> str:
        return self.champion

    def promote(self, model: str, version: str, why: str) -> None:
        self.replaced[version] = self.champion
        self.champion = version
        self.moves.append(("promote", version))
        if self.challenger == version:
            self.challenger = None

    def clear_challenger(self, model: str, version: str) -> bool:
        if self.challenger != version:
            return False
        self.challenger = None
        return True

    def rollback(self, model: str, why: str) -> None:
        self.champion = self.replaced[self.champion]
        self.moves.append(("rollback", self.champion))

    def version_of_run(self, model: str, run_id: str) -> str:
        return self.run_versions[run_id]

    def annotate_run(self, run_id: str, tags: dict, metrics: dict) -> None:
        note = self.notes.setdefault(run_id, {"tags": {}, "metrics": {}})
        note["tags"].update(tags)
        note["metrics"].update(metrics)

    def model_file(self, model: str, version: str, folder: Path) -> Path:
        from rlbench.errors import UserError

        if version not in self.files:
            raise UserError(f"version {version} has no file")
        return self.files[version]

    def load(self, spec: str) -> Any:
        if spec.startswith("models:/"):
            return self.agents[spec.rsplit("/", 1)[1]]
        return Fixed(1)  # the fallback rule: hold


@pytest.fixture
def make_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``make_session(champion, challengers, *overrides)``: a session whose k-th retraining
    "trains" ``challengers[k-1]``. The canary is off unless a test turns it on
    (``canary.episodes=N``): most tests check the off-policy gate's own verdicts."""

    def make(champion: Any, challengers: list[Any], *overrides: str, drift: bool = False):
        registry = FakeRegistry(champion)
        trained = iter(challengers)

        def fake_training(train_overrides: list[str]) -> tuple[str, float]:
            registry.trainings.append(train_overrides)
            version = str(len(registry.agents) + 1)
            registry.agents[version] = next(trained)
            registry.challenger = version  # registered beside a champion
            run_id = f"run-{version}"
            registry.run_versions[run_id] = version
            return run_id, 0.0

        monkeypatch.setattr(loop_module, "run_training", fake_training)
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONF_LIVE_DIR, version_base="1.3"):
            cfg = compose(
                "live",
                overrides=[
                    f"folder={tmp_path / 'session'}", "session=t", "retrain.algo=threshold",
                    "triggers.drift.enabled=false", "report_every=100", "retrain.window=1200",
                    "rollback.window=300", "gate.n_boot=50", "canary.episodes=0", *overrides,
                ],
            )  # fmt: skip
        adapter = SimAdapter(
            "rlbench/Autoscaling-v0", ENV, seed=0,
            drift_at=300 if drift else None, drift_kwargs={"base_load": 2000.0},
        )  # fmt: skip
        return LiveSession(cfg, adapter, Path(cfg.folder), Tracker(), registry,
                           registry.load), registry  # fmt: skip

    return make


EVERY_600 = ("triggers.count.enabled=true", "triggers.count.min_decisions=600",
             "triggers.count.max_success_rate=null")  # fmt: skip


def test_every_decision_is_logged_with_its_exact_propensity(make_session):
    session, _ = make_session(Fixed(1), [], "decisions=500", "explore.epsilon=0.3")
    state = session.run()
    log = read_log(session.folder / "log")
    assert state.decisions == len(log) == 500
    hold = log.action == 1
    assert np.allclose(log.propensity[hold], 0.8) and np.allclose(log.propensity[~hold], 0.1)
    assert 0.1 < (~hold).mean() < 0.3  # about epsilon * 2/3 explored
    assert set(log.policy) == {"autoscaling-live:1"}


def test_a_worse_challenger_is_rejected_with_its_numbers(make_session):
    session, registry = make_session(
        Scaler(), [Fixed(0)], "decisions=700", *EVERY_600, drift=True
    )  # from decision 300 the load needs 20 instances: removing them all is far worse
    state = session.run()
    (entry,) = state.history
    assert entry["verdict"] == "rejected" and registry.champion == "1" and not registry.moves
    gate = entry["gate"]
    # the log cannot show that always removing is better: the interval's lower bound is not
    # above zero (its point estimate is unreliable where the weights are this degenerate)
    assert gate["low"] <= 0 < gate["high"] - gate["low"]
    tags, metrics = registry.notes["run-2"]["tags"], registry.notes["run-2"]["metrics"]
    assert tags[schema.LIVE_GATE_TAG] == "rejected" and tags[schema.LIVE_ROLE_TAG] == "retraining"
    assert "count" in tags[schema.LIVE_TRIGGER_TAG]
    assert metrics[schema.gate_metric("diff")] == pytest.approx(gate["diff"])


def test_a_promoted_champion_that_does_worse_live_is_rolled_back(make_session):
    session, registry = make_session(
        Scaler(), [Fixed(0)], "decisions=1000", "gate.margin=-1e9", *EVERY_600, drift=True
    )
    state = session.run()
    assert registry.moves == [("promote", "2"), ("rollback", "1")]
    assert state.history[0]["verdict"] == "rolled_back"
    assert registry.notes["run-2"]["tags"][schema.LIVE_GATE_TAG] == "rolled_back"
    log = read_log(session.folder / "log")
    versions = [p.rsplit(":", 1)[1] for p in log.policy]
    assert versions[600:900] == ["2"] * 300 and set(versions[900:]) == {"1"}


def test_a_champion_as_good_as_the_old_one_is_not_rolled_back(make_session):
    """The same rule promoted again. With seed 3 its live mean came out 0.0016 below the old
    one's, which rolled it back when any shortfall did: only a significant one does now."""
    session, registry = make_session(
        Scaler(), [Scaler()], "decisions=1000", "gate.margin=-1e9", "seed=3", *EVERY_600
    )
    state = session.run()
    assert registry.moves == [("promote", "2")] and state.history[0]["verdict"] == "promoted"
    assert "kept" in session.last_event and "rollback.alpha=0.05" in session.last_event


def test_the_rollback_test_errs_at_its_level_on_autocorrelated_rewards():
    """Equally good champions, rewards an AR(1) series (consecutive decisions share a load):
    rolled back about alpha of the time (a comparison of means: half); a champion worse by
    far more than the noise, nearly always; the margin is the shortfall forgiven."""
    from rlbench.live.loop import worse_live
    from rlbench.live.triggers import block_means

    rng = np.random.default_rng(0)

    def rewards(mean: float, n: int = 2000) -> np.ndarray:
        x, out = 0.0, np.empty(n)
        for i in range(n):
            x = 0.9 * x + rng.normal()
            out[i] = mean + x
        return out

    def verdict(a: np.ndarray, b: np.ndarray, margin: float = 0.0) -> bool:
        return worse_live(list(block_means(a, 200)), list(block_means(b, 200)), margin, 0.05)[0]

    trials = [(rewards(0.0), rewards(0.0)) for _ in range(300)]
    assert np.mean([verdict(a, b) for a, b in trials]) <= 0.09
    assert 0.4 < np.mean([b.mean() < a.mean() for a, b in trials]) < 0.6  # the old rule
    assert all(verdict(rewards(0.0), rewards(-2.0)) for _ in range(20))
    assert not any(verdict(rewards(0.0), rewards(-2.0), margin=5.0) for _ in range(20))
    assert worse_live([1.0], [0.0, 0.0], 0.0, 0.05) == (False, "1 and 2 blocks: too few to test")


def test_shadow_decisions_are_logged_then_the_challenger_is_promoted(make_session):
    session, registry = make_session(
        Fixed(1), [Fixed(2)], "decisions=1000", "gate.margin=-1e9", "shadow.decisions=200",
        "rollback.margin=1e9", *EVERY_600,
    )  # fmt: skip
    session.run()
    log = read_log(session.folder / "log")
    shadow = [c.get("shadow_action") for c in log.context]
    assert shadow[:600] == [None] * 600 and shadow[600:800] == [2] * 200
    assert set(log.policy[600:800]) == {"autoscaling-live:1"}  # the champion still acts
    assert registry.moves == [("promote", "2")] and registry.champion == "2"


def test_manual_approval_refused_keeps_the_champion(make_session):
    """Only an answer given after the challenger passed counts: an approve file left from
    before is no approval (it would promote the next challenger unseen)."""
    session, registry = make_session(
        Fixed(1), [Fixed(2)], "decisions=700", "gate.margin=-1e9", "gate.approval=true",
        "gate.approval_timeout_s=60", *EVERY_600,
    )  # fmt: skip
    (session.control / "approve").touch()  # stale: sent while nothing waited
    awaiting = session.control / schema.LIVE_AWAITING_FILE

    def reject_when_asked() -> None:
        while not awaiting.exists():
            time.sleep(0.02)
        (session.control / "reject").touch()

    threading.Thread(target=reject_when_asked, daemon=True).start()
    state = session.run()
    assert state.history[0]["verdict"] == "refused" and not registry.moves
    assert not (session.control / "reject").exists()  # consumed
    assert not awaiting.exists()  # nothing waits any more


def test_the_kill_switch_hands_decisions_to_the_fallback_rule(make_session):
    session, _ = make_session(Scaler(), [], "decisions=300", "explore.epsilon=0")
    (session.control / "kill").touch()
    session.run()
    log = read_log(session.folder / "log")
    assert set(log.policy) == {"fallback:threshold:rule"} and set(log.action) == {1}


class KillsAt(Scaler):
    """The threshold rule that, deciding its ``at``-th decision, creates ``control/kill`` and
    takes ``seconds`` over it (a system whose decisions are that far apart)."""

    def __init__(self, kill: Path, at: int, seconds: float) -> None:
        super().__init__()
        self.kill, self.at, self.seconds, self.calls = kill, at, seconds, 0
        self.created = 0.0

    def action_probabilities(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        self.calls += 1
        if self.calls == self.at:
            self.kill.touch()
            self.created = time.time()
            time.sleep(self.seconds)
        return super().action_probabilities(obs)


def test_a_kill_mid_session_acts_at_the_next_decision(make_session, tmp_path):
    """Decisions further apart than the control period: the very next one is the fallback's
    (the switch was looked at every 50 decisions: 50 half-hour decisions of a scheduler)."""
    session, _ = make_session(Fixed(1), [], "decisions=200", "explore.epsilon=0")
    champion = KillsAt(session.control / "kill", at=101, seconds=2 * loop_module.CONTROL_EVERY_S)
    session.load_policy = lambda spec: champion if spec.startswith("models:/") else Fixed(1)
    session.run()
    policy = list(read_log(session.folder / "log").policy)
    assert set(policy[:101]) == {"autoscaling-live:1"}  # decision 101 was decided, then killed
    assert set(policy[101:]) == {"fallback:threshold:rule"}


def test_a_kill_in_a_fast_session_acts_within_the_control_period(make_session):
    """Decisions faster than the control period: every decision that started a period after the
    kill file appeared is the fallback's."""
    session, _ = make_session(Fixed(1), [], "decisions=3000", "explore.epsilon=0")
    champion = KillsAt(session.control / "kill", at=1010, seconds=0.0)
    session.load_policy = lambda spec: champion if spec.startswith("models:/") else Fixed(1)
    session.run()
    log = read_log(session.folder / "log")
    order = np.argsort(log.ts, kind="stable")
    ts, policy = log.ts[order], np.asarray(log.policy)[order]
    late = np.flatnonzero(ts[:-1] >= champion.created + loop_module.CONTROL_EVERY_S) + 1
    assert len(late) > 0 and set(policy[late]) == {"fallback:threshold:rule"}


def test_the_dashboard_rate_is_measured_from_the_first_refresh(make_session):
    """The decisions/s the view shows before the first live/* report (report_every=500: it
    showed 0 for the first 500 decisions, a whole scheduler session)."""
    session, _ = make_session(Fixed(1), [], "decisions=300", "report_every=100000")
    shown: list[float] = []
    session.view = lambda snap: shown.append(snap["rate"])
    session.run()
    assert shown and all(rate > 0 for rate in shown), shown


def test_too_little_data_skips_a_retraining_and_the_session_goes_on(make_session):
    session, registry = make_session(
        Fixed(1), [], "decisions=20", "triggers.count.enabled=true",
        "triggers.count.min_decisions=5", "triggers.count.max_success_rate=null",
        "retrain.min_interval=100",
    )  # fmt: skip
    state = session.run()
    assert state.decisions == 20 and state.history[0]["verdict"] == "skipped"
    why = state.history[0]["why"]
    assert "at least 2" in why and not registry.moves
    # 20 decisions, a window of 1200: the remedy is time, not a wider window
    assert "wait for more decisions" in why and "raise retrain.window" not in why


def test_a_window_narrower_than_two_episodes_says_to_raise_it(tmp_path):
    from rlbench.errors import UserError
    from rlbench.live.retrain import split_window
    from rlbench.offline.log import LogWriter

    with LogWriter(tmp_path / "log", env_id="t/T-v0", obs_shape=(1,), n_actions=2) as w:
        for i in range(40):  # 4 episodes of 10 decisions
            w.append({"ts": 1e9 + i, "episode": f"e{i // 10}", "step": i % 10, "obs": [0.0],
                      "action": 0, "propensity": 1.0, "reward": 0.0, "next_obs": [0.0],
                      "done": i % 10 == 9, "terminal": False, "policy": "p",
                      "policy_version": "1", "context": {}})  # fmt: skip
    log = read_log(tmp_path / "log")
    with pytest.raises(UserError, match=r"raise retrain\.window$"):
        split_window(log, 5, 0.3, 0)  # 40 decisions, the last 5 inside one episode
    with pytest.raises(UserError, match="wait for more decisions"):
        split_window(log.subset(log.episode == 0), 100, 0.3, 0)


def test_messages_name_the_keys_a_user_sets(tmp_path):
    """Every setting a message names is the key in conf_live/live.yaml (there is no live.)."""
    from rlbench.errors import UserError
    from rlbench.live.champion import ServedPolicy
    from rlbench.live.gate import paired_gate
    from rlbench.live.retrain import split_window
    from rlbench.live.triggers import CountTrigger, DriftTrigger, ElapsedTrigger, build_triggers

    cases = {
        "triggers.count.min_decisions": lambda: CountTrigger(0),
        "triggers.count.max_success_rate": lambda: CountTrigger(1, 2.0),
        "triggers.elapsed_s": lambda: ElapsedTrigger(0),
        "triggers.drift": lambda: DriftTrigger(5, 10),
        "triggers.foo": lambda: build_triggers({"foo": 1}, tmp_path),
        "retrain.holdout": lambda: split_window(None, 10, 1.5, 0),
        "gate.estimator": lambda: paired_gate(None, None, None, estimator="xx", features="x"),
        "serve_url": lambda: ServedPolicy("ftp://x", 3),
    }
    for key, call in cases.items():
        with pytest.raises(UserError) as err:
            call()
        assert str(err.value).startswith(key), (key, str(err.value))


def test_a_rerun_resumes_counts_triggers_and_unique_episode_ids(make_session, tmp_path):
    session, _ = make_session(Fixed(1), [], "decisions=250", *EVERY_600)
    session.run()
    again, _ = make_session(Fixed(1), [], "decisions=400", *EVERY_600)
    state = again.run()
    saved = json.loads((tmp_path / "session" / schema.LIVE_STATE_FILE).read_text())
    assert state.decisions == saved["decisions"] == 400 and state.starts == 2
    assert saved["triggers"]["count"]["decisions"] == 400  # the count went on over the resume
    log = read_log(tmp_path / "session" / "log")
    assert len(log) == 400
    starts = {i.rsplit("-", 1)[0] for i in log.episode_ids}
    assert starts == {"t-1", "t-2"}  # episode ids carry the start: none is shared by two runs
    assert np.bincount(log.episode).max() <= 12  # no id gathers decisions of two episodes


def test_the_loop_drives_real_scripts_and_a_user_command_is_its_feedback(tmp_path, monkeypatch):
    """The scheduler adapter in a session: a real script runs at the policy's interval, and
    `rlbench-live-ctl run` before the session becomes a manual run in the first decision
    (+1.0, the seed's reward) and in the next observation (manual-run entry)."""
    from rlbench.live.scheduler import FakeClock, SchedulerAdapter, send_command

    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/sh\necho ran >> {tmp_path / 'ran.txt'}\n")
    script.chmod(0o755)
    schedule = tmp_path / "jobs.yaml"
    schedule.write_text(f"scripts:\n  - name: job\n    command: [{script}]\n"
                        "    interval_minutes: 60\n")  # fmt: skip
    adapter = SchedulerAdapter(schedule, tmp_path / "work", step_seconds=1800, clock=FakeClock())
    send_command(tmp_path / "work", "job", "run")
    registry = FakeRegistry(Fixed(1))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_LIVE_DIR, version_base="1.3"):
        cfg = compose("live", overrides=[f"folder={tmp_path / 's'}", "session=s", "env=scheduler",
                                         "decisions=20", "explore.epsilon=0",
                                         "triggers.drift.enabled=false"])  # fmt: skip
    LiveSession(cfg, adapter, tmp_path / "s", Tracker(), registry, registry.load).run()
    log = read_log(tmp_path / "s" / "log")
    assert len(log) == 20 and log.env_id == "rlbench/ScriptScheduler-v0"
    assert log.reward[0] >= 1.0 and log.next_obs[0, 2] > 0  # the manual run, seen and rewarded
    runs = (tmp_path / "ran.txt").read_text().splitlines()
    assert len(runs) >= 20 * 30 // 60  # every 60 minutes over 20 half-hour decisions, and more


def test_the_dashboard_shows_the_session(make_session):
    """The rich view renders what a user watches: decisions, reward, the acting version, the
    triggers and the last retraining's verdict."""
    from rich.console import Console

    from rlbench.live.dashboard import RichView

    session, _ = make_session(Scaler(), [Fixed(0)], "decisions=700", *EVERY_600, drift=True)
    session.run()
    console = Console(record=True, width=120)
    console.print(RichView.render(session.snapshot()))
    text = console.export_text()
    for expected in ("decisions", "700", "champion v1", "count", "rejected", "fsynced"):
        assert expected in text, expected


def test_a_simulated_retraining_starts_from_the_champions_model(make_session, tmp_path):
    """retrain.algo=<online algo>: the challenger is trained in simulation from the champion's
    saved model when the champion is that algorithm (init_from=), from scratch otherwise."""
    from rlbench.agents import build_agent
    from rlbench.offline.collect import compose as train_compose
    from rlbench.run.train import build_env

    venv = build_env("rlbench/Autoscaling-v0", ENV, 1, 0)
    ppo = build_agent(train_compose(["algo=ppo"]).algo, venv, seed=0, device="cpu")
    ppo.save(tmp_path / "champion.zip")
    session, registry = make_session(ppo, [Fixed(1)], "decisions=700", "retrain.algo=ppo",
                                     *EVERY_600)  # fmt: skip
    registry.files["1"] = tmp_path / "champion.zip"
    session.run()
    (overrides,) = registry.trainings
    from rlbench.config import override_value

    champion = override_value(str(tmp_path / "champion.zip"))
    assert f"init_from={champion}" in overrides and "algo=ppo" in overrides


def test_a_simulated_retraining_from_a_rule_champion_starts_from_scratch(make_session):
    session, registry = make_session(Fixed(1), [Fixed(1)], "decisions=700", "retrain.algo=ppo",
                                     *EVERY_600)  # fmt: skip
    session.run()
    (overrides,) = registry.trainings
    assert not any(o.startswith("init_from=") for o in overrides)


# ---------------------------------------------------------------------- rlbench-serve deciding
class FakeServe:
    """``rlbench-serve`` in a thread: ``POST /decide`` answered by the registry's champion (it
    follows the alias, as the real server does), ``policy.version`` naming it. ``drop`` answers
    close the connection afterwards without saying so (uvicorn's idle keep-alive timeout);
    ``busy`` answers are 503 (overloaded); ``at`` maps a request number to a callable run
    first (a promotion by hand while the session runs)."""

    def __init__(self, registry: FakeRegistry, drop: int = 0, busy: int = 0) -> None:
        import http.server

        self.registry, self.drop, self.busy = registry, drop, busy
        self.requests, self.connections = 0, 0
        self.at: dict[int, Any] = {}
        serve = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # kept alive, as uvicorn's
            disable_nagle_algorithm = True  # one answer, one packet: no 40 ms delayed ACK

            def setup(self) -> None:
                super().setup()
                serve.connections += 1

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                serve.requests += 1
                serve.at.pop(serve.requests, lambda: None)()
                if serve.busy:
                    serve.busy -= 1
                    return self._send(503, {"error": "overloaded: this request waited; retry"})
                version = serve.registry.champion
                agent = serve.registry.agents[version]
                actions = agent.predict(np.asarray(body["observations"], dtype=np.float32))
                self._send(200, {"actions": [int(a) for a in actions],
                                 "policy": {"version": version}})  # fmt: skip
                if serve.drop:
                    serve.drop -= 1
                    self.close_connection = True  # closed, though the answer said keep-alive

            def _send(self, status: int, answer: dict) -> None:
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_serve():
    servers: list[FakeServe] = []

    def start(registry: FakeRegistry, **kw: int) -> FakeServe:
        servers.append(FakeServe(registry, **kw))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_each_served_decision_names_the_version_that_answered(make_session, fake_serve):
    """A promotion by hand (rlbench-registry promote) while a serve_url session runs: the
    server follows the alias, and every decision from then on is logged as the new version's
    (all were logged as the version the session started with), and the view shows it."""
    session, registry = make_session(Fixed(1), [], "decisions=400", "explore.epsilon=0")
    registry.agents["2"] = Fixed(2)
    server = fake_serve(registry)
    session.cfg.serve_url = server.url
    server.at[150] = lambda: setattr(registry, "champion", "2")
    shown: list[str] = []
    session.view = lambda snap: shown.append(snap["champion"])
    session.run()
    log = read_log(session.folder / "log")
    versions = [p.rsplit(":", 1)[1] for p in log.policy]
    assert versions == ["1"] * 149 + ["2"] * 251
    assert list(log.action[149:]) == [2] * 251  # the answer's action and its version agree
    assert shown[-1] == "2" and session.champion.version == "2"


def test_a_served_session_keeps_deciding_through_the_server_after_a_promotion(
    make_session, fake_serve
):
    """The live loop promotes a challenger: the server follows the alias and goes on answering
    (the session swapped in its own copy of the challenger and left the server)."""
    session, registry = make_session(
        Fixed(1), [Fixed(2)], "decisions=1000", "gate.margin=-1e9", "rollback.margin=1e9",
        "explore.epsilon=0", *EVERY_600,
    )  # fmt: skip
    server = fake_serve(registry)
    session.cfg.serve_url = server.url
    state = session.run()
    assert registry.moves == [("promote", "2")] and state.history[0]["verdict"] == "promoted"
    assert server.requests == 1000  # every decision, and the gate's champion in process
    log = read_log(session.folder / "log")
    versions = [p.rsplit(":", 1)[1] for p in log.policy]
    assert versions == ["1"] * 600 + ["2"] * 400 and set(log.action[600:]) == {2}
    assert state.watch is None and "v2 kept" in session.last_event  # the watch saw v2 decide


def test_a_dropped_connection_is_reconnected_and_a_503_retried(fake_serve):
    """uvicorn closes a kept-alive connection idle for 5 s (a retraining's pause): the next
    decision died of a broken pipe; one 503 (overloaded) ended the session too."""
    from rlbench.live.champion import ServedPolicy

    registry = FakeRegistry(Fixed(2))
    server = fake_serve(registry, drop=3, busy=0)
    served = ServedPolicy(server.url, 3, version="1")
    obs = np.zeros((1, 4), dtype=np.float32)
    for _ in range(5):
        assert served.predict(obs)[0] == 2
    assert server.connections >= 4  # a new connection after each dropped one
    server.busy = 2
    assert served.predict(obs)[0] == 2 and server.requests == 8  # two 503s, then the answer


def test_a_server_that_stays_overloaded_or_away_is_one_error(fake_serve):
    from rlbench.errors import UserError
    from rlbench.live.champion import ServedPolicy

    server = fake_serve(FakeRegistry(Fixed(2)), busy=100)
    served = ServedPolicy(server.url, 3, delays=(0.0, 0.01, 0.02))
    obs = np.zeros((1, 4), dtype=np.float32)
    with pytest.raises(UserError, match=r"answered 503: .*overloaded.*asked 3 times") as err:
        served.predict(obs)
    assert server.requests == 3 and "\n" not in str(err.value)
    server.close()
    away = ServedPolicy(server.url, 3, delays=(0.0, 0.01))
    with pytest.raises(UserError, match=r"did not answer: .*asked 2 times.*start it"):
        away.predict(obs)


# ---------------------------------------------------------------------- kills and restarts
class Killed(BaseException):
    """SIGKILL, as far as the session can tell: no except clause of its own catches it."""


def test_an_interrupted_retraining_is_redone_however_often_the_restart_is_killed(
    make_session, monkeypatch
):
    """Retraining 1 killed mid-training; the next start marks it interrupted and is killed
    before the redo runs; a third start must still redo it (it saw a verdict and skipped it)."""
    session, _ = make_session(Fixed(1), [], "decisions=700", *EVERY_600)

    def killed_training(overrides: list[str]) -> tuple[str, float]:
        raise Killed

    monkeypatch.setattr(loop_module, "run_training", killed_training)
    with pytest.raises(Killed):
        session.run()
    for _ in range(2):  # two starts killed during startup, before their first decision
        again, registry = make_session(Fixed(1), [], "decisions=800", *EVERY_600)
        monkeypatch.setattr(registry, "resolve_alias", killed_training)
        with pytest.raises(Killed):
            again.run()
    saved = json.loads((session.state_path).read_text())
    assert saved["history"][0]["verdict"] == "interrupted" and saved["history"][0]["redo"]
    last, _ = make_session(Fixed(1), [Fixed(1)], "decisions=800", *EVERY_600)
    state = last.run()
    assert len(state.history) == 2, state.history
    redo = state.history[1]
    assert redo["trigger"].startswith("again, after an interrupted retraining 1")
    assert redo["at"] == 601 and redo["verdict"] in ("promoted", "rejected")
    assert not any("redo" in entry for entry in state.history)  # owed no more
    assert len(make_session(Fixed(1), [], "decisions=850")[0].run().history) == 2  # done once


def test_decisions_logged_after_the_last_state_save_are_counted_on_resume(make_session):
    """A kill between a batch written to the log and session.json replaced: the log held 50
    decisions the state never counted (not in the reward, the triggers or the target)."""
    counting = ("log.batch=50", "triggers.count.enabled=true", "triggers.count.min_decisions=5000",
                "triggers.count.max_success_rate=null")  # fmt: skip
    session, _ = make_session(Fixed(1), [], "decisions=1000", *counting)
    real_save = session._save

    def save(durable: bool = False) -> None:
        if session.state.decisions >= 650 and not durable:
            session._save = lambda durable=False: None  # nothing more: the process is gone
            raise Killed
        real_save(durable)

    session._save = save
    with pytest.raises(Killed):
        session.run()
    saved = json.loads(session.state_path.read_text())
    assert saved["decisions"] == 600 and len(read_log(session.folder / "log")) == 650
    again, _ = make_session(Fixed(1), [], "decisions=700", *counting)
    state = again.run()
    log = read_log(session.folder / "log")
    assert state.decisions == len(log) == 700
    assert state.reward_sum == pytest.approx(float(log.reward.sum()))
    assert state.triggers["count"]["decisions"] == 700
    assert state.episodes == int(log.done.sum())


def test_a_resumed_session_watches_its_next_promotion_against_the_logs_recent_rewards(
    make_session,
):
    """The rollback watch's reference window lived in memory: after a restart the owed (or
    next) promotion was compared with one decision's reward and never rolled back."""
    first, _ = make_session(Fixed(1), [], "decisions=400")
    first.run()
    again, _ = make_session(Fixed(1), [], "decisions=401")
    again.run()
    log = read_log(again.folder / "log")
    newest = log.reward[np.argsort(log.ts, kind="stable")][-300:]  # rollback.window=300
    assert len(again.recent) == 300
    assert list(again.recent) == pytest.approx(list(newest))  # the log's 300 newest


# ---------------------------------------------------------------------- what a user sees
def test_a_rejected_challenger_is_no_longer_the_registrys_challenger(make_session):
    """rlbench-registry promote NAME promotes the challenger by default: a rejected one kept
    the alias and was promoted by it, without a word."""
    session, registry = make_session(Scaler(), [Fixed(0)], "decisions=700", *EVERY_600,
                                     drift=True)  # fmt: skip
    state = session.run()
    assert state.history[0]["verdict"] == "rejected" and registry.challenger is None


def test_the_views_count_every_retraining_and_show_a_wait_for_approval(make_session, caplog):
    from rich.console import Console

    from rlbench.live.dashboard import LogView, RichView

    session, registry = make_session(
        Fixed(1), [Fixed(2)] * 8, "decisions=800", "gate.margin=-1e9", "gate.approval=true",
        "gate.approval_timeout_s=60", "triggers.count.enabled=true", "retrain.min_interval=0",
        "triggers.count.min_decisions=100", "triggers.count.max_success_rate=null",
    )  # fmt: skip
    awaiting = session.control / schema.LIVE_AWAITING_FILE
    seen: list[str] = []
    done = threading.Event()

    def reject_when_asked() -> None:
        while not done.is_set():
            if awaiting.exists():
                console = Console(record=True, width=160, file=io.StringIO())
                console.print(RichView.render(session.snapshot()))
                seen.append(console.export_text() + awaiting.read_text())
                (session.control / "reject").touch()
                while awaiting.exists():
                    time.sleep(0.01)
            time.sleep(0.01)

    threading.Thread(target=reject_when_asked, daemon=True).start()
    try:
        state = session.run()
    finally:
        done.set()
    assert len(state.history) == 8 and "refused" in {e["verdict"] for e in state.history}
    assert seen and "waiting for approval" in seen[0] and "training" not in seen[0]
    from rlbench.tracking.provenance import process_tag

    assert seen[0].splitlines()[-1] == process_tag()  # who waits: rlbench-live-ctl checks it
    assert registry.challenger is None  # refused: not the challenger either
    caplog.set_level("INFO", logger="rlbench.live")
    view = LogView()
    view(session.snapshot())
    assert "8 retrainings" in caplog.text, caplog.text


def test_the_registry_clears_only_its_own_rejected_challenger(mlflow_store, tmp_path):
    """The session's Registry against a real store: the alias goes when it still names the
    rejected version, and stays when another version was registered since."""
    from rlbench.live.champion import Registry

    client = mlflow_store.client()
    client.create_registered_model("m")
    for _ in range(3):
        client.create_model_version("m", (tmp_path / "model").as_uri())
    client.set_registered_model_alias("m", schema.CHAMPION, "1")
    client.set_registered_model_alias("m", schema.CHALLENGER, "3")
    registry = Registry(mlflow_store.uri)
    assert not registry.clear_challenger("m", "2")  # v3 came since: not the session's to clear
    assert client.get_registered_model("m").aliases == {"champion": 1, "challenger": 3}
    assert registry.clear_challenger("m", "3")
    assert client.get_registered_model("m").aliases == {"champion": 1}
    assert not registry.clear_challenger("m", "3")  # nothing left to clear


# ---------------------------------------------------------------------- the canary
CANARY = ("canary.episodes=6", "canary.share=0.5", "rollback.margin=1e9")


def versions_of(log) -> list[str]:
    order = np.argsort(log.ts, kind="stable")
    return [log.policy[i].rsplit(":", 1)[1] for i in order]


def test_a_challenger_the_gate_cannot_judge_is_promoted_by_the_canary(make_session):
    """Hold everything on a load that needs twice the instances, against the threshold rule:
    pdis_bounds' interval is too wide to promote (the log rarely follows the rule for 12
    decisions), but in the episodes the canary gives it the rule is plainly better."""
    session, registry = make_session(
        Fixed(1), [Scaler()], "decisions=1400", *EVERY_600, *CANARY, drift=True
    )
    state = session.run()
    entry = state.history[0]
    assert entry["gate"]["low"] <= 0 <= entry["gate"]["high"]  # the gate could not tell
    assert entry["verdict"] == "promoted" and registry.moves == [("promote", "2")], entry
    assert entry["canary"]["challenger_episodes"] >= 6 <= entry["canary"]["champion_episodes"]
    assert entry["canary"]["p"] < 0.05 and "canary" in entry["canary_why"]
    tags, metrics = registry.notes["run-2"]["tags"], registry.notes["run-2"]["metrics"]
    assert tags[schema.LIVE_GATE_TAG] == "promoted" and tags[schema.LIVE_GATE_WHY_TAG].startswith(
        "canary: "
    )
    assert metrics[schema.canary_metric("diff")] == pytest.approx(entry["canary"]["diff"])
    episodes = int(entry["canary"]["challenger_episodes"] + entry["canary"]["champion_episodes"])
    versions = versions_of(read_log(session.folder / "log"))
    during = [versions[i : i + 12] for i in range(600, 600 + 12 * episodes, 12)]
    assert all(len(set(ep)) == 1 for ep in during)  # one policy acts in a canary episode
    assert {ep[0] for ep in during} == {"1", "2"}  # both acted, each record names its own
    assert sorted(ep[0] for ep in during).count("2") == entry["canary"]["challenger_episodes"]
    assert set(versions[600 + 12 * episodes :]) == {"2"} and state.canary is None


def test_a_challenger_the_gate_shows_worse_is_rejected_without_a_canary(make_session):
    session, registry = make_session(
        Fixed(1), [Scaler()], "decisions=800", "gate.margin=1e9", *EVERY_600, *CANARY
    )
    state = session.run()
    (entry,) = state.history
    assert entry["gate"]["high"] < 1e9 and entry["verdict"] == "rejected"
    assert state.canary is None and "canary" not in entry and registry.challenger is None
    assert set(versions_of(read_log(session.folder / "log"))) == {"1"}  # never acted


def test_a_canary_of_an_equally_good_challenger_rejects_it_and_clears_the_alias(make_session):
    session, registry = make_session(Fixed(1), [Fixed(1)], "decisions=1100", *EVERY_600, *CANARY)
    state = session.run()
    (entry,) = state.history
    assert entry["verdict"] == "rejected" and entry["canary"]["p"] >= 0.05, entry
    assert not registry.moves and registry.challenger is None and state.canary is None
    assert registry.notes["run-2"]["tags"][schema.LIVE_GATE_TAG] == "rejected"
    assert {"1", "2"} <= set(versions_of(read_log(session.folder / "log"))[612:])


def test_a_canary_stopped_midway_resumes_with_its_counts(make_session, tmp_path):
    """The session stops (decisions=) in the middle of a canary; the same command with more
    decisions goes on with the episodes already counted (not the one the stop cut short) and
    the same draws of the arms: it ends on the same episode as one uninterrupted run."""
    from rich.console import Console

    from rlbench.live.dashboard import RichView

    args = ("decisions=690", *EVERY_600, *CANARY)
    session, _ = make_session(Fixed(1), [Fixed(1)], *args)
    state = session.run()
    saved = json.loads(session.state_path.read_text())["canary"]
    before = (saved["challenger_returns"], saved["champion_returns"])
    assert state.history[0]["verdict"] == "canary" and sum(map(len, before)) == 7
    console = Console(record=True, width=160, file=io.StringIO())
    console.print(RichView.render(session.snapshot()))
    shown = f"canary v2: {len(before[0])}/6 challenger, {len(before[1])}/6 champion episodes"
    assert shown in console.export_text()  # the dashboard shows the canary's progress

    again, registry = make_session(Fixed(1), [], *args, "decisions=1400")
    registry.agents["2"] = Fixed(1)
    state = again.run()
    (entry,) = state.history
    assert entry["verdict"] == "rejected" and state.canary is None, entry
    whole, _ = make_session(Fixed(1), [Fixed(1)], *args, "decisions=1400",
                            f"folder={tmp_path / 'whole'}")  # fmt: skip
    (uninterrupted,) = whole.run().history
    for arm in ("challenger_episodes", "champion_episodes"):
        assert entry["canary"][arm] == uninterrupted["canary"][arm] >= 6
    cut = versions_of(read_log(session.folder / "log"))  # 6 decisions of episode 57 again
    assert len(cut) == 1400 and set(cut[684:690]) == set(cut[690:696])


def test_episodes_the_kill_switch_took_over_do_not_count_for_the_canary(make_session, monkeypatch):
    """The kill switch from the canary's first decision on: every episode ends with the
    fallback rule acting, none counts (not even in the champion's arm, though the rule and the
    champion both hold here), and the canary waits."""
    monkeypatch.setattr(loop_module, "CONTROL_EVERY_S", 0.0)  # looked at every decision
    session, _ = make_session(Fixed(1), [Fixed(1)], "decisions=800", *EVERY_600, *CANARY)
    real = session._canary_arm

    def arm_then_kill() -> str | None:
        arm = real()
        if arm is not None:  # the canary runs: from now on the fallback rule decides
            (session.control / "kill").touch()
        return arm

    session._canary_arm = arm_then_kill
    state = session.run()
    assert state.history[0]["verdict"] == "canary" and state.canary["skipped"] >= 10
    assert state.canary["challenger_returns"] == state.canary["champion_returns"] == []


def test_a_served_sessions_canary_runs_the_challenger_in_process(make_session, fake_serve):
    """serve_url=: the champion's canary episodes are answered by rlbench-serve, the
    challenger's decided in process (the server follows the alias: it has no challenger)."""
    session, registry = make_session(
        Fixed(1), [Fixed(2)], "decisions=1000", "explore.epsilon=0", *EVERY_600, *CANARY
    )
    server = fake_serve(registry)
    session.cfg.serve_url = server.url
    state = session.run()
    versions = versions_of(read_log(session.folder / "log"))
    assert state.history[0]["verdict"] == "rejected" and "canary" in state.history[0]
    assert "2" in versions[600:] and server.requests == versions.count("1")


def test_a_canary_complete_when_the_session_stopped_ends_at_the_resume(make_session):
    """Its last episode counted, the session stopped before the verdict: the resumed session
    decides it at its first decision and goes on with the champion in every episode (the
    episode that first decision began must not keep acting as a canary arm)."""
    args = ("decisions=690", *EVERY_600, *CANARY)
    session, _ = make_session(Fixed(1), [Fixed(1)], *args)
    session.run()
    saved = json.loads(session.state_path.read_text())
    saved["canary"]["challenger_returns"] = [-1.0] * 6
    saved["canary"]["champion_returns"] = [-1.0] * 6
    session.state_path.write_text(json.dumps(saved))

    # the challenger draws the resumed session's first episode
    again, registry = make_session(Fixed(1), [], *args, "decisions=720", "canary.share=0.999")
    registry.agents["2"] = Fixed(1)
    state = again.run()
    (entry,) = state.history
    assert entry["verdict"] == "rejected" and state.canary is None and state.decisions == 720
    assert set(versions_of(read_log(session.folder / "log"))[691:]) == {"1"}


def test_a_redo_of_a_redo_names_the_first_trigger_once(make_session):
    """Each kill during a redo wrapped the reason once more ("again, after ... 2 (again, after
    ... 1 (count ...))"); the reason names the latest interrupted retraining and the trigger."""
    session, _ = make_session(Fixed(1), [], "decisions=10")
    first = "count: success rate 0.5 < 0.8 (1000 decisions)"
    session.state.history = [
        {"k": 1, "trigger": first, "verdict": "interrupted"},
        {"k": 2, "trigger": f"again, after an interrupted retraining 1 ({first})",
         "verdict": "interrupted", "redo": True},
    ]  # fmt: skip
    assert session._pending_redo() == f"again, after an interrupted retraining 2 ({first})"


def test_a_clearly_worse_challenger_is_stopped_early_by_the_canary(make_session, tmp_path):
    """Hold everything against the threshold rule on a load that needs more instances: the
    challenger is worse in every episode it acts; the canary rejects it after a few episodes
    rather than giving it half the traffic for all of them (canary.stop_alpha)."""
    session, registry = make_session(
        Scaler(), [Fixed(1)], "decisions=1400", *EVERY_600, *CANARY, drift=True
    )
    state = session.run()
    (entry,) = state.history
    assert entry["verdict"] == "rejected" and state.canary is None, entry
    assert entry["canary_why"].startswith("canary stopped early"), entry["canary_why"]
    assert 3 <= entry["canary"]["challenger_episodes"] < 6  # CANARY: 6 an arm in full
    assert not registry.moves and registry.challenger is None
    assert registry.notes["run-2"]["tags"][schema.LIVE_GATE_TAG] == "rejected"
    # with the early stop off the same canary runs to its end and rejects it then
    whole, _ = make_session(Scaler(), [Fixed(1)], "decisions=1400", *EVERY_600, *CANARY,
                            "canary.stop_alpha=null", f"folder={tmp_path / 'whole'}",
                            drift=True)  # fmt: skip
    (full,) = whole.run().history
    assert full["verdict"] == "rejected" and full["canary"]["challenger_episodes"] >= 6


def test_a_canary_promotion_is_watched_against_the_champions_canary_episodes(make_session):
    """The rollback's reference after a canary is the champion's own canary episodes (the same
    load at the same time), not the window before the promotion, which can reach back across
    the drift that started the retraining."""
    session, _ = make_session(Fixed(1), [Scaler()], "decisions=1400", *EVERY_600, *CANARY,
                              "rollback.window=3000", drift=True)  # fmt: skip
    watched = []
    promote = session._promote

    def spy(challenger, why, reference=None):
        promote(challenger, why, reference)
        watched.append((reference, dict(session.state.watch)))

    session._promote = spy
    state = session.run()
    (entry,) = state.history
    assert entry["verdict"] == "promoted", entry
    ((reference, watch),) = watched
    assert len(reference) == entry["canary"]["champion_episodes"]
    assert watch["reference"] == reference
    # each the champion's mean reward per decision in a 12-decision episode
    assert np.mean(reference) * 12 == pytest.approx(entry["canary"]["champion"])
    assert watch["baseline"] == pytest.approx(np.mean(reference))


def test_a_kill_while_a_passed_canary_waits_for_approval_keeps_the_canary(make_session):
    """Ctrl-C during the approval wait after a canary passed: the canary (its episodes) was
    dropped from the saved state, the challenger never promoted nor rejected; now the resumed
    session asks again, and an approval promotes it."""
    args = ("decisions=1400", *EVERY_600, *CANARY, "gate.approval=true",
            "gate.approval_timeout_s=60")  # fmt: skip
    session, _ = make_session(Fixed(1), [Scaler()], *args, drift=True)

    def interrupted(version: str, by: str = "the gate") -> bool:
        raise KeyboardInterrupt

    session._approved = interrupted
    with pytest.raises(KeyboardInterrupt):
        session.run()
    saved = json.loads(session.state_path.read_text())
    assert saved["canary"] is not None and saved["history"][0]["verdict"] == "canary"

    again, registry = make_session(Fixed(1), [], *args, drift=True)
    registry.agents["2"] = Scaler()
    again._approved = lambda version, by="the gate": True
    state = again.run()
    assert state.history[0]["verdict"] == "promoted" and state.canary is None
    assert registry.moves == [("promote", "2")]


def test_a_canary_keeps_its_episode_count_and_stops_when_turned_off(make_session, tmp_path):
    """Resumed with a lower canary.episodes, a canary judged itself at once on 2 episodes an
    arm; with canary.episodes=0 ("off") it ran a Welch test all the same."""
    args = ("decisions=690", *EVERY_600, *CANARY)
    session, _ = make_session(Fixed(1), [Fixed(1)], *args)
    session.run()
    assert json.loads(session.state_path.read_text())["canary"]["episodes"] == 6
    lower, registry = make_session(Fixed(1), [], *args, "decisions=700", "canary.episodes=2")
    registry.agents["2"] = Fixed(1)
    state = lower.run()
    assert state.canary is not None and state.canary["episodes"] == 6  # still under way
    off, registry = make_session(Fixed(1), [], *args, "decisions=710", "canary.episodes=0")
    registry.agents["2"] = Fixed(1)
    state = off.run()
    (entry,) = state.history
    assert state.canary is None and entry["verdict"] == "rejected"
    assert entry["canary_why"].startswith("canary.episodes=0: the canary was turned off")
    assert not registry.moves
