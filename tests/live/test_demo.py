"""rlbench-live-demo: policies side by side on one load, the figure, and one-line mistakes."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from rlbench.agents import build_agent
from rlbench.envs import make_vec
from rlbench.errors import UserError
from rlbench.live.demo import (
    ENV_ID,
    build_policies,
    command,
    live_table,
    main,
    run_demo,
    write_figure,
)

SINE = {"load": "sine_curve"}


def demo(names, env_kwargs, steps, seed=0):
    return run_demo(build_policies(names, {}, env_kwargs, seed), steps, env_kwargs, seed)


def test_every_policy_sees_the_same_load_also_across_episodes():
    """A random-walk load (drawn from the env's generator) over 2.4 episodes of 50 steps."""
    kwargs = {"load": "random", "horizon": 50}
    result = demo(["threshold", "random", "static", "always_up"], kwargs, steps=120, seed=3)
    load = result.info["influx"]
    assert load.shape == (4, 120)
    assert (load == load[0]).all()
    assert np.ptp(result.load[:50]) > 100  # a moving load, not a constant
    assert not np.array_equal(result.load[:50], result.load[50:100])  # a new episode's draw
    instances = result.info["instances"]
    assert len({tuple(row) for row in instances}) == 4  # the policies did differ


def test_a_seed_fixes_the_run():
    kwargs = {"load": "poisson"}
    a, b = (demo(["threshold", "random"], kwargs, steps=60, seed=7) for _ in range(2))
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.reward, b.reward)
    for key, values in a.info.items():
        np.testing.assert_array_equal(values, b.info[key], err_msg=key)
    other = demo(["random"], kwargs, steps=60, seed=8)
    assert not np.array_equal(other.load, a.load)


@pytest.fixture(scope="module")
def sine_day():
    return demo(["threshold", "random", "static"], SINE, steps=288, seed=0)


def test_threshold_beats_random_by_far_on_a_sine_day(sine_day):
    """Measured (seeds 0-2): threshold -241, random -1624 ... -1817, static -2089."""
    totals = {row["policy"]: row["reward"] for row in sine_day.summary()}
    assert [row["policy"] for row in sine_day.summary()] == ["threshold", "random", "static"]
    assert totals["threshold"] > totals["random"] + 1000
    assert totals["threshold"] > totals["random"] / 3


def test_the_live_table_shows_every_policy(sine_day):
    from rich.console import Console

    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(live_table(sine_day, 99))
    text = console.file.getvalue()
    assert "step 100/288" in text
    for name in ("threshold", "random", "static"):
        assert name in text


def test_a_png_is_the_final_frame(sine_day, tmp_path):
    assert write_figure(sine_day, tmp_path / "day.png", title="t") == 1
    with Image.open(tmp_path / "day.png") as im:
        assert im.format == "PNG"


def test_out_gif_is_an_animation(tmp_path, capsys):
    out = tmp_path / "demo.gif"
    main(["--policy", "threshold,random", "--steps", "60", "--load-pattern", "SPIKE",
          "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert "60 steps, best first" in printed and f"wrote {out}" in printed
    with Image.open(out) as im:
        assert im.format == "GIF" and im.n_frames > 1
    assert [p.name for p in tmp_path.iterdir()] == ["demo.gif"]  # no partial file left


def test_a_saved_qlearning_model_joins_the_demo(tmp_path, capsys):
    agent = build_agent({"name": "qlearning"}, make_vec(ENV_ID, 8, seed=0), seed=0)
    agent.learn(20_000)
    path = tmp_path / "q.npz"
    agent.save(path)
    main(["--policy", "threshold", "--model", f"qlearning={path}", "--steps", "40",
          "--no-render"])  # fmt: skip
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert sorted(row[1] for row in rows) == ["qlearning", "threshold"]


def test_ppo_without_a_model_exits_2_saying_how_to_supply_one():
    done = subprocess.run([sys.executable, "-m", "rlbench.live.demo", "--policy", "ppo"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: --policy ppo needs")
    assert "--model ppo=models:/autoscaling@champion" in done.stderr
    assert "rlbench-train env=autoscaling algo=ppo tracking.register=autoscaling" in done.stderr
    assert done.stdout == ""


def test_an_unknown_policy_exits_2_naming_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--policy", "threshold,thresold", "--no-render"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown policy 'thresold'" in err
    for name in ("all", "threshold", "static", "random", "qlearning", "dqn", "ppo"):
        assert name in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "ppo"], r"--model 'ppo': write NAME=SPEC"),
        (["--model", "ppo=champion"], r"'champion' is not a model file"),
        (["--model", "ppo=missing.zip"], r"missing.zip: no such model file"),
        (["--load-pattern", "wave"], r"--load-pattern must be one of steady, sine_curve"),
        (["--out", "demo.avi"], r"write a .gif \(animated\), .mp4 \(video\) or .png"),
        (["--out", "no/such/folder/demo.gif"], r"no folder no/such/folder"),
        (["--steps", "0"], r"--steps must be a positive integer"),
        (["algo.upper=70"], r"only env.KEY=VALUE overrides apply"),
        (["env.horizon=0"], r"horizon must be an integer >= 1"),
    ],
)
def test_mistakes_are_one_user_error(argv, message):
    with pytest.raises(UserError, match=message):
        command([*argv, "--no-render"])


def test_an_mp4_without_ffmpeg_is_refused_before_the_run(monkeypatch, tmp_path):
    from matplotlib import animation

    monkeypatch.setattr(animation.writers, "is_available", lambda name: False)
    with pytest.raises(UserError, match=r"an .mp4 needs ffmpeg on PATH"):
        command(["--out", str(tmp_path / "demo.mp4"), "--no-render"])
    assert not list(tmp_path.iterdir())
