"""``rlbench-live-demo``: several autoscaling policies acting side by side on one load.

What it owns: the side-by-side demo of the live-loop issue (the autoscaler seed's
``demo_all_models.py``). Every policy gets its own copy of ``rlbench/Autoscaling-v0`` reset
with the same seed, so all of them see the identical request series and differ only by their
decisions. It shows a ``rich`` table refreshed every step, writes an animated figure (``.gif``,
or ``.mp4`` when ffmpeg exists; ``.png`` is the final frame), and ends with a ranked summary::

    rlbench-live-demo --policy all --steps 288 --load-pattern spike --out demo.gif
    rlbench-live-demo --policy threshold,random --model ppo=models:/autoscaling@champion
    rlbench-live-demo --model qlearning=outputs/.../model.npz --no-render env.noise=0.1

Rules (``threshold``, ``static`` = hold, ``random``, ``always_up``, ``always_down``) are built
from their ``conf/algo`` options; trained policies are never trained here: they come from a
model file, ``models:/NAME@ALIAS`` or ``runs:/<id>`` given as ``--model NAME=SPEC``.
:func:`run_demo` is the whole loop without the command line.

Layer 7 (``rlbench.live``): may import anything in rlbench.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlbench import cli
from rlbench.errors import UserError

ENV_ID = "rlbench/Autoscaling-v0"
#: rule policies by name (each a ``conf/algo`` option of the same name)
RULES = ("threshold", "static", "random", "always_up", "always_down")
#: what ``--policy all`` shows besides every ``--model``: the rules worth comparing against
ALL_RULES = ("threshold", "static", "random")
#: policies that must be trained first; the demo only loads them
TRAINED = ("qlearning", "dqn", "ppo")
#: per-step ``info`` entries of the environment kept for every policy
FIELDS = (
    "influx",
    "instances",
    "pending",
    "capacity",
    "utilisation",
    "queue",
    "dropped",
    "cost",
    "sla_violation",
    "scale_action",
)
OUT_SUFFIXES = (".gif", ".mp4", ".png")
LIVE_COLUMNS = ("policy", "action", "instances", "util", "queue", "reward", "total", "cost $")
ACTION_NAMES = ("remove", "hold", "add")  # the autoscaling env's actions 0, 1, 2
MAX_FRAMES = 48  # frames of an animation, whatever --steps: a day renders in seconds


@dataclass
class DemoResult:
    """What every policy did at every step: arrays of shape ``(policies, steps)``.

    ``info`` holds the environment's step info (:data:`FIELDS`); ``info["influx"]`` is the
    load each policy saw, identical across rows by construction.
    """

    names: list[str]
    actions: np.ndarray
    reward: np.ndarray
    info: dict[str, np.ndarray] = field(default_factory=dict)
    steps_done: int = 0

    @classmethod
    def empty(cls, names: Sequence[str], steps: int) -> DemoResult:
        shape = (len(names), steps)
        return cls(
            list(names),
            np.zeros(shape, dtype=np.int64),
            np.zeros(shape),
            {k: np.zeros(shape) for k in FIELDS},
        )

    @property
    def load(self) -> np.ndarray:
        """Requests per step (the shared load), shape ``(steps,)``."""
        return self.info["influx"][0]

    @property
    def cumulative(self) -> np.ndarray:
        """Cumulative reward per policy and step."""
        return self.reward.cumsum(axis=1)

    def summary(self) -> list[dict[str, Any]]:
        """One row per policy over the steps done, best total reward first."""
        n = self.steps_done
        rows = [
            {
                "policy": name,
                "reward": float(self.reward[i, :n].sum()),
                "cost": float(self.info["cost"][i, :n].sum()),
                "sla_violations": int(self.info["sla_violation"][i, :n].sum()),
                "scale_actions": int(self.info["scale_action"][i, :n].sum()),
                "dropped": float(self.info["dropped"][i, :n].sum()),
            }
            for i, name in enumerate(self.names)
        ]
        return sorted(rows, key=lambda r: (-r["reward"], r["policy"]))


def run_demo(
    policies: Mapping[str, Any],
    steps: int,
    env_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    *,
    env_id: str = ENV_ID,
    on_step: Callable[[DemoResult, int], None] | None = None,
) -> DemoResult:
    """Step every policy (an :class:`~rlbench.agents.Agent`) ``steps`` times in its own env.

    Each env is made and reset with the same ``seed`` and ``env_kwargs``, so the loads are
    identical (also after an episode ends at the horizon: every copy draws the next episode
    from the same generator state). Policies act greedily (``deterministic=True``).
    ``on_step(result, t)`` is called after step ``t`` of all policies (the live view). The
    agents keep their state across calls (a random policy's generator moves on): build fresh
    ones to repeat a run.
    """
    from rlbench.envs import make_vec

    if steps < 1:
        raise UserError(f"steps must be a positive integer, got {steps}")
    names = list(policies)
    if not names:
        raise UserError("no policy to run")
    venvs = [make_vec(env_id, 1, seed=seed, **dict(env_kwargs or {})) for _ in names]
    result = DemoResult.empty(names, steps)
    try:
        obs = [venv.reset() for venv in venvs]
        for t in range(steps):
            for i, name in enumerate(names):
                action = np.asarray(policies[name].predict(obs[i], deterministic=True))
                obs[i], reward, _, _ = venvs[i].step(action.reshape(1))
                result.actions[i, t] = action.reshape(1)[0]
                result.reward[i, t] = reward[0]
                for key in FIELDS:
                    result.info[key][i, t] = venvs[i].last_info[key][0]
            result.steps_done = t + 1
            if on_step is not None:
                on_step(result, t)
    finally:
        for venv in venvs:
            venv.close()
    return result


# --------------------------------------------------------------------------- the live view


def live_table(result: DemoResult, t: int) -> Any:
    """A ``rich`` table of every policy's state after step ``t``."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=f"step {t + 1}/{result.reward.shape[1]}   load {result.load[t]:,.0f} requests",
        title_justify="left",
        caption="reward: this step; total: cumulative reward; cost $: instances so far",
        caption_justify="left",
        box=box.SIMPLE_HEAD,  # few borders: eight columns fit an 80-column terminal
        pad_edge=False,
    )
    for header in LIVE_COLUMNS:
        left = header in ("policy", "action")
        table.add_column(header, justify="left" if left else "right", no_wrap=left)
    cumulative = result.reward[:, : t + 1].sum(axis=1)
    best = int(cumulative.argmax())
    for i, name in enumerate(result.names):
        info = {k: v[i] for k, v in result.info.items()}
        pending = int(info["pending"][t])
        table.add_row(
            Text(name, style="bold" if i == best else ""),  # Text: a name is not markup
            ACTION_NAMES[int(result.actions[i, t])],
            f"{info['instances'][t]:.0f}" + (f" (+{pending})" if pending else ""),
            f"{100 * info['utilisation'][t]:.0f}%",
            f"{info['queue'][t]:,.0f}",
            f"{result.reward[i, t]:+.3f}",
            f"{cumulative[i]:+.2f}",
            f"{info['cost'][: t + 1].sum():.2f}",
        )
    return table


# --------------------------------------------------------------------------- the figure


def check_out(path: Path) -> None:
    """``UserError`` now, not after the run, for an ``--out`` the demo cannot write."""
    suffix = path.suffix.lower()
    if suffix not in OUT_SUFFIXES:
        raise UserError(
            f"--out {path}: write a .gif (animated), .mp4 (video) or .png (the final frame)"
        )
    if not path.parent.is_dir():
        raise UserError(f"--out {path}: no folder {path.parent}")
    if suffix == ".mp4":
        from matplotlib import animation

        if not animation.writers.is_available("ffmpeg"):
            raise UserError(
                f"--out {path}: an .mp4 needs ffmpeg on PATH, which is not there; "
                "install ffmpeg or write a .gif"
            )


def frame_ends(steps: int, max_frames: int = MAX_FRAMES) -> list[int]:
    """Steps shown by each frame (the last is all of them): every few steps, at most
    ``max_frames`` frames."""
    return sorted({int(e) for e in np.linspace(1, steps, min(steps, max_frames)).round()})


def write_figure(result: DemoResult, path: str | Path, *, title: str = "", fps: int = 12) -> int:
    """Write the load, each policy's capacity and the cumulative rewards to ``path``:
    animated (``.gif``, ``.mp4``) or the final frame (``.png``). Returns the frame count.

    GIF frames are blitted (axes, ticks and legend drawn once, only the lines per frame), which
    makes a day of 288 steps a few seconds instead of a full redraw per frame. Written to a
    temporary file then renamed, so a failed write leaves nothing half-made.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    check_out(path)
    suffix = path.suffix.lower()
    ends = [result.steps_done] if suffix == ".png" else frame_ends(result.steps_done)
    fig, moving, show = _figure(result, title, dpi=100 if suffix == ".png" else 80)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        if suffix == ".mp4":
            from matplotlib import animation

            writer = animation.FFMpegWriter(fps=fps)
            with writer.saving(fig, str(tmp), dpi=fig.dpi):
                for end in ends:
                    show(end)
                    writer.grab_frame()
        else:
            images = _blitted_frames(fig, moving, show, ends)
            if suffix == ".png":
                images[-1].save(tmp, format="PNG")
            else:
                _save_gif(images, tmp, fps)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return len(ends)


def _save_gif(images: list[Any], path: Path, fps: int) -> None:
    """An endless GIF holding the last frame for two seconds. Every frame takes the palette of
    the last one (which shows every line): one quantisation instead of one per frame."""
    from PIL import Image

    palette = images[-1].quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    frames = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    durations = [int(1000 / fps)] * (len(frames) - 1) + [2000]
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:],
                   duration=durations, loop=0)  # fmt: skip


def _figure(result: DemoResult, title: str, dpi: int) -> tuple[Any, list[Any], Callable]:
    """The two-panel figure with empty lines, the artists that move, and ``show(end)`` that
    sets them to the first ``end`` steps. Axis limits are fixed from the whole run, so frames
    do not rescale."""
    import matplotlib.pyplot as plt

    n = result.steps_done
    x = np.arange(1, n + 1)
    load = result.load[:n]
    capacity = result.info["capacity"][:, :n]
    cumulative = result.cumulative[:, :n]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 6), dpi=dpi, sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    (load_line,) = top.plot([], [], color="black", lw=2.2, label="load")
    cap_lines, rew_lines = [], []
    for name in result.names:
        (cap,) = top.plot([], [], lw=1.3, drawstyle="steps-post", label=name)
        (rew,) = bottom.plot([], [], lw=1.5, color=cap.get_color())
        cap_lines.append(cap)
        rew_lines.append(rew)
    top.set_xlim(1, max(n, 2))
    top.set_ylim(0, 1.05 * max(float(load.max()), float(capacity.max()), 1.0))
    low, high = float(cumulative.min()), float(cumulative.max())
    pad = 0.05 * (high - low) or 1.0
    bottom.set_ylim(low - pad, high + pad)
    top.set_ylabel("requests per step\n(policies: instances x capacity)")
    bottom.set_ylabel("cumulative reward ($)")
    bottom.set_xlabel("step")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    stamp = top.set_title(title, fontsize=9, loc="left")
    fig.subplots_adjust(left=0.1, right=0.8, top=0.94, bottom=0.08, hspace=0.08)

    def show(end: int) -> None:
        load_line.set_data(x[:end], load[:end])
        for i in range(len(result.names)):
            cap_lines[i].set_data(x[:end], capacity[i, :end])
            rew_lines[i].set_data(x[:end], cumulative[i, :end])
        stamp.set_text(f"{title}   step {end}/{n}".strip())

    return fig, [load_line, *cap_lines, *rew_lines, stamp], show


def _blitted_frames(fig: Any, moving: list[Any], show: Callable, ends: list[int]) -> list[Any]:
    """RGB images of the figure at each of ``ends``: the still parts drawn once, the
    ``moving`` artists drawn over a copy of them per frame."""
    from PIL import Image

    for artist in moving:
        artist.set_animated(True)  # left out of the full draw below
    canvas = fig.canvas
    canvas.draw()
    background = canvas.copy_from_bbox(fig.bbox)
    size = canvas.get_width_height()
    images = []
    for end in ends:
        show(end)
        canvas.restore_region(background)
        for artist in moving:
            fig.draw_artist(artist)
        rgba = bytes(canvas.buffer_rgba())
        images.append(Image.frombuffer("RGBA", size, rgba, "raw", "RGBA", 0, 1).convert("RGB"))
    return images


# --------------------------------------------------------------------------- the command line


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="rlbench-live-demo",
        description="Several autoscaling policies side by side on one load (same seed, same "
        "requests): a live table, an animated figure, a ranked summary.",
    )
    p.add_argument(
        "--policy",
        action="append",
        default=None,
        help=f"repeat or comma-separate: all ({', '.join(ALL_RULES)} and every "
        f"--model), {', '.join(RULES)}, or a trained one ({', '.join(TRAINED)}) "
        "given by --model; default all",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="add a trained policy NAME from a model file (.zip/.npz), "
        "models:/NAME@ALIAS or runs:/<run id>",
    )
    p.add_argument("--steps", type=int, default=288, help="decisions per policy (288 = a day)")
    p.add_argument(
        "--load-pattern",
        default=None,
        help="steady | sine_curve | sinusoidal | spike | poisson | random | trace "
        "(default: the env config's, sine_curve)",
    )
    p.add_argument("--seed", type=int, default=0, help="fixes the load and the random policy")
    p.add_argument("--no-render", action="store_true", help="no live table: just the summary")
    p.add_argument(
        "--delay", type=float, default=0.05, help="seconds between steps while the live table shows"
    )
    p.add_argument(
        "--out",
        default=None,
        help="write the figure: .gif (animated), .mp4 (needs ffmpeg), .png (final)",
    )
    p.add_argument("--tracking-uri", default=None, help="MLflow store for models:/ and runs:/")
    p.add_argument("overrides", nargs="*", help="env overrides: env.noise=0.1 env.horizon=96")
    return p


def parse_models(specs: Sequence[str]) -> dict[str, str]:
    """``NAME=SPEC`` words as ``{NAME: SPEC}``; ``UserError`` on a malformed one."""
    from rlbench.offline.collect import is_model_spec

    models: dict[str, str] = {}
    for word in specs:
        name, eq, spec = word.partition("=")
        name, spec = name.strip(), spec.strip()
        if not eq or not name or not spec or "," in name or name.lower() == "all":
            raise UserError(f"--model {word!r}: write NAME=SPEC (ppo=models:/autoscaling@champion)")
        if not (is_model_spec(spec) or spec.endswith(".json") or Path(spec).is_file()):
            raise UserError(
                f"--model {word!r}: {spec!r} is not a model file (.zip, .npz), "
                "models:/NAME@ALIAS or runs:/<run id>"
            )
        models[name] = spec
    return models


def select_policies(asked: Sequence[str] | None, models: Mapping[str, str]) -> list[str]:
    """The policy names to show, in the order asked, then every ``--model`` not yet named.

    A trained policy without a model is a ``UserError`` saying how to supply one: the demo
    never trains silently.
    """
    words = [w.strip() for item in (asked or ["all"]) for w in item.split(",") if w.strip()]
    if not words:
        raise UserError("--policy is empty; give all or names such as threshold,random")
    names: list[str] = []
    for word in words:
        key = word if word in models else word.lower()
        if key == "all":
            names += [*ALL_RULES, *models]
        elif key in models or key in RULES:
            names.append(key)
        elif key in TRAINED:
            raise UserError(
                f"--policy {key} needs a trained model: pass --model {key}="
                "models:/autoscaling@champion (after rlbench-train env=autoscaling "
                f"algo={key} tracking.register=autoscaling) or --model {key}=path/to/model.zip"
            )
        else:
            raise UserError(
                f"unknown policy {word!r}; choose from all, {', '.join(RULES)}, or "
                f"a trained one ({', '.join(TRAINED)}) with --model NAME=SPEC"
            )
    names += list(models)
    return list(dict.fromkeys(names))


def build_policies(
    names: Sequence[str],
    models: Mapping[str, str],
    env_kwargs: Mapping[str, Any],
    seed: int,
    overrides: Sequence[str] = (),
    tracking_uri: str | None = None,
    env_id: str = ENV_ID,
) -> dict[str, Any]:
    """One agent per name: a rule built from its ``conf/algo`` option (with the env
    ``overrides``), or a loaded model, each on an env of its own."""
    from rlbench.envs import make_vec
    from rlbench.offline.collect import load_policy, policy_from_spec

    agents = {}
    for name in names:
        venv = make_vec(env_id, 1, seed=seed, **env_kwargs)
        if name in models:
            agents[name] = load_policy(models[name], None, venv, seed, tracking_uri)[0]
        else:
            agents[name] = policy_from_spec(name, "autoscaling", venv, seed, tracking_uri,
                                            overrides)[0]  # fmt: skip
    return agents


def format_summary(result: DemoResult) -> str:
    """The ranked summary as plain text (one line per policy)."""
    rows = result.summary()
    width = max(len("policy"), *(len(r["policy"]) for r in rows))
    lines = [
        f"{result.steps_done} steps, best first:",
        f"rank  {'policy'.ljust(width)}  total reward  instance $  SLA violations  "
        "scale actions  dropped requests",
    ]
    for rank, r in enumerate(rows, 1):
        lines.append(
            f"{rank:>4}  {r['policy'].ljust(width)}  {r['reward']:12.2f}  "
            f"{r['cost']:10.2f}  {r['sla_violations']:14d}  {r['scale_actions']:13d}  "
            f"{r['dropped']:16,.0f}"
        )
    return "\n".join(lines)


def command(argv: Sequence[str] | None = None) -> DemoResult:
    """Parse and check everything, run the demo (live when on a terminal), write and print."""
    from rlbench.config import env_spec
    from rlbench.envs import load_patterns, make_vec
    from rlbench.envs.forecasters import with_local_model
    from rlbench.offline.cli import _compose

    args = parser().parse_intermixed_args(argv)
    if args.steps < 1:
        raise UserError("--steps must be a positive integer")
    if args.seed < 0:
        raise UserError("--seed must be an integer >= 0")
    if not args.delay >= 0:
        raise UserError("--delay must be >= 0")
    bad = [o for o in args.overrides if not o.startswith("env.")]
    if bad:
        raise UserError(f"{bad[0]!r}: only env.KEY=VALUE overrides apply (env.noise=0.1)")
    models = parse_models(args.model)
    names = select_policies(args.policy, models)
    asked = {w.strip().lower() for item in args.policy or ["all"] for w in item.split(",")}
    out = Path(args.out) if args.out else None
    if out is not None:
        check_out(out)
    overrides = list(args.overrides)
    if args.load_pattern is not None:
        try:
            pattern = load_patterns.pattern_name(args.load_pattern)
        except ValueError:
            raise UserError(
                f"--load-pattern must be one of {', '.join(load_patterns.PATTERNS)}"
                f"; got {args.load_pattern!r}"
            ) from None
        overrides.append(f"env.load={pattern}")
    env_id, env_kwargs = env_spec(_compose("autoscaling", None, overrides).env)
    try:  # a registered forecaster: from --tracking-uri's store, the same for every policy
        env_kwargs = with_local_model(env_kwargs, args.tracking_uri)
        make_vec(env_id, 1, **env_kwargs).close()  # a bad env setting: one line, before the run
    except (ValueError, TypeError) as err:
        raise UserError(f"env ({env_id}): {err}") from None
    if "all" in asked and not models:  # said once the input is known good (one error line)
        print(f"note: trained policies ({', '.join(TRAINED)}) join with --model NAME=SPEC",
              file=sys.stderr)  # fmt: skip
    agents = build_policies(
        names, models, env_kwargs, args.seed, overrides, args.tracking_uri, env_id=env_id
    )
    title = f"{env_id} · load={env_kwargs.get('load')} · seed {args.seed}"
    if args.no_render or not sys.stdout.isatty():
        result = run_demo(agents, args.steps, env_kwargs, args.seed, env_id=env_id)
    else:
        result = _run_live(agents, args, env_kwargs, env_id)
    print(format_summary(result))
    if out is not None:
        frames = write_figure(result, out, title=title)
        print(f"wrote {out} ({frames} frame{'s' if frames != 1 else ''})")
    return result


def _run_live(agents: Mapping[str, Any], args: Any, env_kwargs: Any, env_id: str) -> DemoResult:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    with Live(console=console, auto_refresh=False) as live:

        def on_step(result: DemoResult, t: int) -> None:
            live.update(live_table(result, t), refresh=True)
            if args.delay:
                time.sleep(args.delay)

        return run_demo(agents, args.steps, env_kwargs, args.seed, env_id=env_id, on_step=on_step)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``rlbench-live-demo`` console script: mistakes are one ``error:`` line, exit 2."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one torch thread: small nets, shared cores
    words = list(sys.argv[1:] if argv is None else argv)
    cli.run_app(lambda: command(words))


if __name__ == "__main__":
    main()
