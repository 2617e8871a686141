"""rlbench-collect and rlbench-ope: logs written reproducibly, evaluations tracked, and every
mistake one line with exit code 2 (docs/bad-input.md lists the same cases)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from rlbench.errors import UserError
from rlbench.offline.cli import collect_command, ope_command
from rlbench.offline.log import read_log

FAST = ["--episodes", "6", "--copies", "3", "--start", "2026-01-01", "env.horizon=16"]


def test_a_seed_fixes_the_collection(tmp_path):
    for name in ("a", "b"):
        collect_command(["--policy", "threshold", "--epsilon", "0.3", "--out",
                         str(tmp_path / name), "--seed", "4", *FAST])  # fmt: skip
    a, b = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert len(a) == 6 * 16 and a.n_episodes == 6
    for col in ("ts", "obs", "action", "propensity", "reward", "next_obs", "done"):
        assert np.array_equal(getattr(a, col), getattr(b, col)), col
    assert set(np.round(a.propensity, 6)) <= {0.8, 0.1}  # 0.7 + 0.3/3 greedy, 0.3/3 others
    assert a.done.sum() == 6 and not a.terminal.any()  # time-limit ends, not terminal
    # the header says how the log was made: exploration, copies, the policy's own settings, code
    import json

    part = next((tmp_path / "a").rglob("part-*.jsonl"))
    header = json.loads(part.read_text().splitlines()[0])
    assert header["epsilon"] == 0.3 and header["copies"] >= 1 and header["base_seed"] == 4
    assert header["algo"]["name"] == "threshold" and "upper" in header["algo"]
    assert header["git.commit"] and header["versions"]["numpy"]


def test_a_collection_added_to_a_log_folder_keeps_its_episodes_apart(tmp_path, capsys):
    """Two collections into one --out (the same seed, as people run them): four episodes of
    16 steps each, not two of 32; on-policy IS equals the logged mean return."""
    for _ in range(2):
        collect_command(["--policy", "threshold", "--epsilon", "0.3", "--out", str(tmp_path),
                         "--episodes", "2", "--copies", "2", "--start", "2026-01-01",
                         "env.horizon=16"])  # fmt: skip
    log = read_log(tmp_path)
    assert log.n_episodes == 4 and np.all(np.bincount(log.episode) == 16)
    first, second = (log.obs[log.episode == e] for e in (0, 2))  # copy 0 of each collection
    assert not np.array_equal(first, second)  # its own episodes, not the first's again
    capsys.readouterr()
    ope_command([str(tmp_path), "--policy", "threshold", "--epsilon", "0.3", "--no-track",
                 "--estimators", "is", "--boot", "20", "env.horizon=16"])  # fmt: skip
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    (value,) = [float(r[2]) for r in rows if len(r) > 2 and r[1] == "is"]
    returns = np.bincount(log.episode, weights=log.reward)
    assert value == pytest.approx(returns.mean(), abs=0.01)  # printed to 4 digits


def test_a_log_with_a_step_twice_is_refused(tmp_path):
    collect_command(["--policy", "threshold", "--out", str(tmp_path / "a"), *FAST])
    part = next((tmp_path / "a").rglob("*.jsonl"))
    lines = part.read_text().splitlines()
    part.write_text("\n".join([*lines, lines[1]]) + "\n")  # one record written twice
    with pytest.raises(UserError, match="is logged more than once"):
        read_log(tmp_path / "a")


def test_ope_leaves_out_episodes_the_log_does_not_hold_whole(tmp_path, capsys):
    """A collection killed mid-episode: the cut episode is left out with a warning."""
    collect_command(["--policy", "threshold", "--epsilon", "0.3", "--out", str(tmp_path),
                     *FAST])  # fmt: skip
    part = next(tmp_path.rglob("*.jsonl"))
    lines = part.read_text().splitlines()
    part.write_text("\n".join(lines[:-1]) + "\n")  # an episode's last step lost
    capsys.readouterr()
    ope_command([str(tmp_path), "--policy", "threshold", "--epsilon", "0.3", "--no-track",
                 "--estimators", "is", "--boot", "20", "env.horizon=16"])  # fmt: skip
    captured = capsys.readouterr()
    assert "left out 1 of 6 episodes the log does not hold whole" in captured.err
    assert "5 episodes" in captured.out


def test_softmax_exploration_records_the_softmax_probability(tmp_path):
    collect_command(["--policy", "qlearning", "--explore", "softmax", "--temperature", "2",
                     "--out", str(tmp_path), *FAST])  # fmt: skip
    log = read_log(tmp_path)
    assert np.allclose(log.propensity, 1 / 3)  # an untrained table: equal Q, uniform softmax


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--env", "autoscalin", "--policy", "threshold"],
         r"unknown env option 'autoscalin' \(did you mean 'autoscaling'\?\)"),
        (["--policy", "thresold"], r"unknown algo option 'thresold' \(did you mean 'threshold'"),
        (["--policy", "threshold", "--explore", "softmax"],
         r"softmax exploration needs action values; 'threshold' has none"),
        (["--policy", "threshold", "--explore", "boltzmann"],
         r"--explore must be one of epsilon, softmax, none, got 'boltzmann'"),
        (["--policy", "threshold", "--epsilon", "1.5"], r"--epsilon must be in \[0, 1\], got 1.5"),
        (["--policy", "threshold", "--episodes", "0"], r"--episodes must be a positive integer"),
        (["--policy", "threshold", "env.load"], r"'env.load' is not an override: write key=value"),
        (["--policy", "threshold", "env.lod=spike"],
         r"unknown config key 'env.lod' \(did you mean 'env.load'\?\)"),
        (["--policy", "threshold", "--start", "yesterday"],
         r"--start 'yesterday' is not an ISO date"),
        (["--policy", "missing.zip"], r"missing.zip: no such model file"),
        (["--policy", "threshold", "algo.cooldown=12"],
         r"has algo.cooldown=12: its decisions depend on its own past actions"),
    ],
)  # fmt: skip
def test_collect_mistakes_are_one_line_and_write_nothing(tmp_path, argv, message):
    out = tmp_path / "log"
    with pytest.raises(UserError, match=message):
        collect_command([*argv, "--out", str(out)])
    assert not out.exists()


def test_collect_refuses_a_file_as_its_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match=r"--out .*f is a file; give a folder for the log"):
        collect_command(["--policy", "threshold", "--out", str(tmp_path / "f")])


@pytest.fixture(scope="module")
def rec_log(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "log"
    collect_command(["--env", "recommender", "--policy", "random", "--epsilon", "1",
                     "--episodes", "300", "--out", str(out), "env.horizon=1"])  # fmt: skip
    return out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--env", "autoscaling", "--policy", "threshold"],
         r"the log is from rlbench/Recommender-v0 \(obs_shape \[8\], 27 actions\), not "
         r"env_id='rlbench/Autoscaling-v0'"),
        (["--policy", "recommender_rule", "--estimators", "ips,foo"],
         r"unknown estimator 'foo'; choose from is, wis"),
        (["--policy", "recommender_rule", "--gamma", "2"], r"--gamma must be in \[0, 1\]"),
        (["--policy", "recommender_rule", "--window-days", "0"], r"--window-days must be > 0"),
        (["--policy", "threshold"], r"threshold needs 3 actions"),
        (["--policy", "random", "--reward-range", "5"], r"--reward-range must be two numbers"),
        (["--policy", "random", "--reward-range", "5,6"],
         r"reward_range \[5, 6\] does not hold the logged rewards"),
        (["--policy", "random", "--clip", "-1"], r"clip must be a positive weight"),
    ],
)  # fmt: skip
def test_ope_mistakes_are_one_line(rec_log, argv, message):
    argv = argv if "--env" in argv else ["--env", "recommender", *argv]
    with pytest.raises(UserError, match=message):
        ope_command([str(rec_log), *argv, "--no-track", "env.horizon=1"])


def test_ope_records_a_run_with_the_log_as_its_evaluation_input(rec_log, mlflow_store, capsys):
    ope_command([str(rec_log), "--env", "recommender", "--policy", "recommender_rule",
                 "--policy", "random", "--boot", "20", "--tracking-uri", mlflow_store.uri,
                 "env.horizon=1"])  # fmt: skip
    out = capsys.readouterr().out
    assert "recommender_rule - random" in out and "dr_bandit" in out and "ips_bounds" in out
    (run,) = mlflow_store.runs()
    assert run.data.tags["rlbench.kind"] == "ope" and run.info.status == "FINISHED"
    assert "ope/recommender_rule/snips_low" in run.data.metrics
    # what was evaluated (an alias is recorded with the version it named) and by which code
    assert run.data.params["policy.recommender_rule"] == "recommender_rule"
    assert run.data.tags["git.commit"] and run.data.tags["version.rlbench"]
    assert "ope/recommender_rule_minus_random/dr_bandit" in run.data.metrics
    (inp,) = run.inputs.dataset_inputs
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "evaluation"
    assert inp.dataset.digest == read_log(rec_log).dataset_digest()


@pytest.mark.slow
def test_the_commands_exit_2_with_one_line(tmp_path):
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    bin_dir = os.path.dirname(sys.executable)
    for argv in (
        [f"{bin_dir}/rlbench-collect", "--policy", "thresold", "--out", str(tmp_path / "x")],
        [f"{bin_dir}/rlbench-ope", str(tmp_path / "nowhere"), "--policy", "threshold"],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert not (tmp_path / "x").exists()


def test_ope_shows_what_the_log_cannot_say(tmp_path, mlflow_store, capsys):
    """Logged with epsilon 0.3 over 16 steps, a greedy target has no whole episode of weight
    (0.8^16 per episode): IS is 0 with no interval, WIS undefined in every replicate, and the
    table says so (the share as a column and a metric, the notes under the table); 0 is also
    outside the (negative) returns the log can produce."""
    collect_command(["--policy", "threshold", "--epsilon", "0.3", "--out", str(tmp_path / "a"),
                     *FAST])  # fmt: skip
    capsys.readouterr()
    ope_command([str(tmp_path / "a"), "--policy", "threshold", "--estimators", "is,wis,pdis_bounds",
                 "--boot", "20", "--tracking-uri", mlflow_store.uri, "env.horizon=16"])  # fmt: skip
    out = capsys.readouterr().out
    rows = {r.split()[1]: r.split() for r in out.splitlines() if r.startswith("threshold  ")}
    assert rows["is"][2:] == ["0", "no", "interval", "-", "!"]
    assert rows["wis"][2:] == ["undefined", "no", "interval", "100%", "!"]
    assert rows["pdis_bounds"][-1] == "-"  # an interval, no note
    assert "! threshold is: no interval: no logged decision (at some step) has weight" in out
    assert "! threshold is: 0 is outside the returns the log can produce [" in out
    (run,) = mlflow_store.runs()
    assert run.data.metrics["ope/threshold/wis_undefined_share"] == 1.0
    assert "ope/threshold/is_undefined_share" not in run.data.metrics  # 0: not logged


def test_long_commands_say_how_far_they_got(tmp_path, capsys, monkeypatch):
    """Off a terminal, a line once the work has run SLOW_AFTER_S seconds (0 here); nothing
    when it is quicker than that (the default 10 s)."""
    from rlbench.results import progress

    argv = ["--policy", "threshold", "--epsilon", "0.3", *FAST]
    collect_command([*argv, "--out", str(tmp_path / "a")])
    ope_argv = [str(tmp_path / "a"), "--policy", "threshold", "--epsilon", "0.3", "--no-track",
                "--estimators", "is", "--boot", "130", "env.horizon=16"]  # fmt: skip
    ope_command(ope_argv)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(progress, "SLOW_AFTER_S", 0.0)
    collect_command([*argv, "--out", str(tmp_path / "b")])
    ope_command(ope_argv)
    err = capsys.readouterr().err
    assert "collecting threshold: 3/6 episodes (" in err  # three copies finish together
    assert "bootstrap: 64/130 replicates (" in err  # after the first chunk of 64
