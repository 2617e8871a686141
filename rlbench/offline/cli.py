"""``rlbench-collect`` (write an interaction log) and ``rlbench-ope`` (evaluate policies on one).

    rlbench-collect --env autoscaling --policy threshold --epsilon 0.2 --episodes 100 --out logs/as
    rlbench-collect --env recommender --policy models:/recommender@champion --out logs/rec \\
        --explore softmax --temperature 0.5 env.horizon=20
    rlbench-ope logs/as --env autoscaling --policy threshold --policy static --epsilon 0.05

Trailing ``key=value`` words are Hydra overrides of the composed config (``env.load=spike``,
``algo.upper=70``). Mistakes are one ``error:`` line and exit code 2; nothing half-written (a
collection that fails before its first decision leaves no log files).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlbench import cli
from rlbench.errors import UserError


class _Progress:
    """How far a long collection or bootstrap got, on stderr: a tqdm bar on a terminal (shown
    only after a second, so a quick command stays quiet), elsewhere a line once the work has
    run ``SLOW_AFTER_S`` seconds and then every ``REPEAT_S`` (as rlbench-report's phases)."""

    def __init__(self, total: int, desc: str, unit: str) -> None:
        import time

        from rlbench.results.progress import SLOW_AFTER_S, _is_terminal

        self.total, self.desc, self.unit, self.done = total, desc, unit, 0
        self._clock = time.monotonic
        self._start, self._next = self._clock(), SLOW_AFTER_S
        self._bar = None
        if _is_terminal():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, delay=1.0, leave=False)

    def advance(self, n: int) -> None:
        """``n`` more units done."""
        from rlbench.results.progress import REPEAT_S

        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        elapsed = self._clock() - self._start
        if elapsed >= self._next and self.done < self.total:
            print(f"{self.desc}: {self.done}/{self.total} {self.unit} ({elapsed:.0f} s)",
                  file=sys.stderr, flush=True)  # fmt: skip
            self._next = elapsed + REPEAT_S

    def say(self, text: str, err: bool = False) -> None:
        """Print a line (to stderr with ``err``) without tearing the bar."""
        out = sys.stderr if err else sys.stdout
        if self._bar is not None:
            self._bar.write(text, file=out)
        else:
            print(text, file=out)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _compose(env: str, algo: str | None, overrides: Sequence[str]) -> Any:
    from rlbench.offline.collect import compose

    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise UserError(f"{bad[0]!r} is not an override: write key=value (env.load=spike)")
    return compose([f"env={env}", *([f"algo={algo}"] if algo else []), *overrides])


def collect_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="rlbench-collect",
        description="Write an interaction log: a policy under known exploration in an env.",
    )
    p.add_argument(
        "--env", default="autoscaling", help="env option (conf/env), default autoscaling"
    )
    p.add_argument(
        "--policy",
        required=True,
        help="an algo option (threshold, recommender_rule, ...), a model file, "
        "models:/NAME@ALIAS or runs:/<run id>",
    )
    p.add_argument(
        "--explore", default="epsilon", help="epsilon | softmax | none (the policy's own pi)"
    )
    p.add_argument("--epsilon", type=float, default=0.1)
    p.add_argument("--temperature", type=float, default=1.0, help="softmax: Q / temperature")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--out", required=True, help="the log folder (appended to if it exists)")
    p.add_argument("--seed", type=int, default=0, help="fixes the collection")
    p.add_argument("--copies", type=int, default=8, help="env copies stepped together")
    p.add_argument("--batch-size", type=int, default=100, help="records per fsynced flush")
    p.add_argument("--start", default=None, help="time of the first decision (ISO; default now)")
    p.add_argument("--seconds-per-step", type=float, default=1.0, help="time between decisions")
    p.add_argument("--tracking-uri", default=None, help="MLflow store for models:/ and runs:/")
    p.add_argument("overrides", nargs="*", help="Hydra overrides: env.load=spike algo.upper=70")
    return p


def _refuse_env_settings(policy: str, argv: Sequence[str], overrides: Sequence[str]) -> None:
    """A registered policy is collected in the env its version records (its forecaster
    pinned): ``--env`` or ``env.*`` given with it is one line, not silently another env (its
    log would hold decisions the policy never made, or it failed in its network)."""
    given = [a for a in argv if a == "--env" or a.startswith("--env=")]
    given += [o for o in overrides if o.lstrip("+~").startswith("env.")]
    if given:
        raise UserError(
            f"--policy {policy} acts in the env its version was registered with (its settings "
            f"and forecaster are stored with it): drop {', '.join(given)}"
        )


def _check_exploration(explore: str, epsilon: float, temperature: float) -> None:
    from rlbench.offline.collect import EXPLORE

    if explore not in EXPLORE:
        raise UserError(f"--explore must be one of {', '.join(EXPLORE)}, got {explore!r}")
    if not 0.0 <= epsilon <= 1.0:
        raise UserError(f"--epsilon must be in [0, 1], got {epsilon}")
    if not temperature > 0.0:
        raise UserError(f"--temperature must be > 0, got {temperature}")


def collect_command(argv: Sequence[str] | None = None) -> None:
    """Parse, check everything, then write the log and print a one-line summary."""
    from rlbench.config import env_spec
    from rlbench.envs import make_vec
    from rlbench.offline.collect import (
        Behaviour,
        collect,
        is_model_spec,
        load_policy,
        parse_time,
        registered_policy,
    )
    from rlbench.offline.log import COLLECTION_KEY, LogWriter, collections_in

    args = collect_parser().parse_intermixed_args(argv)
    for key in ("episodes", "copies", "batch_size"):
        if getattr(args, key) < 1:
            raise UserError(f"--{key.replace('_', '-')} must be a positive integer")
    if args.seed < 0:
        raise UserError("--seed must be an integer >= 0")
    if not 0 <= args.seconds_per_step < float("inf"):
        raise UserError(f"--seconds-per-step must be a number >= 0, got {args.seconds_per_step}")
    _check_exploration(args.explore, args.epsilon, args.temperature)
    start = parse_time(args.start)
    cfg = _compose(args.env, None if is_model_spec(args.policy) else args.policy, args.overrides)
    env_id, env_kwargs = env_spec(cfg.env)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the log")
    # A collection added to a log folder gets episode ids of its own (-c2, -c3, ...): with the
    # same ids, two collections' episodes would be read back as one, twice as long. It also
    # draws its own episodes (a seed derived from --seed and its number): the same command
    # rerun after a kill would otherwise log the killed run's episodes a second time.
    earlier = collections_in(out)
    nth = f"-c{earlier + 1}" if earlier else ""
    seed = args.seed if not earlier else collection_seed(args.seed, earlier + 1)
    from rlbench.envs.forecasters import with_local_model

    registered = None
    if args.policy.startswith("models:/"):  # it acts in the env it was registered with
        _refuse_env_settings(args.policy, argv or sys.argv[1:], args.overrides)
        registered = registered_policy(args.policy, args.tracking_uri)
        env_id, env_kwargs = registered[3], registered[4]
    try:  # a registered forecaster is looked up in this command's store
        env_kwargs = with_local_model(env_kwargs, args.tracking_uri)
        venv = make_vec(env_id, args.copies, seed=seed, **env_kwargs)
    except (ValueError, TypeError) as err:
        raise UserError(f"env ({env_id}): {err}") from None
    if registered is not None:
        name, version, agent = registered[0], registered[1], registered[2]
    else:
        agent, name, version = load_policy(args.policy, cfg.algo, venv, seed, args.tracking_uri)
    behaviour = Behaviour(agent, args.explore, args.epsilon, args.temperature, name, version)
    behaviour.action_probabilities(venv.reset())  # softmax without Q-values fails here, early
    from omegaconf import OmegaConf

    from rlbench.tracking.provenance import code_version, git_tags, package_versions

    # everything that made these decisions: a log read back months later says how it was made
    meta = {"env_kwargs": env_kwargs, "behaviour": name, "explore": args.explore}
    meta |= {COLLECTION_KEY: earlier + 1, "seed": seed, "base_seed": args.seed}
    meta |= {"epsilon": args.epsilon, "temperature": args.temperature, "copies": args.copies}
    meta |= {"policy": args.policy, "policy_version": version, "overrides": list(args.overrides)}
    meta |= {"algo": OmegaConf.to_container(cfg.algo, resolve=True)}
    meta |= {"code": code_version(), **git_tags(), "versions": package_versions()}
    writer = LogWriter(
        out, env_id=env_id, obs_shape=venv.observation_space.shape,
        n_actions=int(venv.action_space.n), batch_size=args.batch_size, meta=meta,
    )  # fmt: skip
    progress = _Progress(args.episodes, f"collecting {name}", "episodes")
    try:
        with writer:
            result = collect(
                venv, behaviour, writer, episodes=args.episodes, seed=seed, start_ts=start,
                seconds_per_step=args.seconds_per_step, run_name=f"{name}-s{args.seed}{nth}",
                progress=progress.advance,
            )  # fmt: skip
    finally:
        progress.close()
    returns = result["returns"]
    more = f"; collection {earlier + 1} there, seed {seed}" if earlier else ""
    print(
        f"logged {writer.flushed} decisions of {len(returns)} episodes to {out} "
        f"(mean return {sum(returns) / len(returns):.4g}; {len(writer.files)} file(s){more})"
    )


def collection_seed(seed: int, nth: int) -> int:
    """The seed of collection ``nth`` (2, 3, ...) into one log folder with ``--seed seed``:
    fixed by the two (a rerun of the same commands gives the same log), other episodes."""
    import numpy as np

    return int(np.random.SeedSequence([seed, nth]).generate_state(1)[0])


def _whole_episodes(data: Any) -> Any:
    """The episodes the log holds whole (step 0 to a done record, no step missing), with a
    warning naming how many others were left out: an episode cut by ``--window-days`` or by a
    collection killed mid-episode would bias every trajectory estimator."""
    import numpy as np

    n = data.n_episodes
    count = np.bincount(data.episode, minlength=n)
    first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first, data.episode, data.step)
    last = np.full(n, -1)
    np.maximum.at(last, data.episode, data.step)
    ends = np.zeros(n, dtype=bool)  # its last step is a done record
    ends[data.episode[data.done & (data.step == last[data.episode])]] = True
    whole = (first == 0) & (count == last + 1) & ends
    if whole.all():
        return data
    if not whole.any():
        raise UserError(
            "the log holds no whole episode (each lacks its first step or its end): collect "
            "more, or widen --window-days"
        )
    print(
        f"warning: left out {int((~whole).sum())} of {n} episodes the log does not hold whole "
        "(cut by --window-days, or a collection stopped mid-episode)",
        file=sys.stderr,
    )
    return data.subset(whole[data.episode])


def collect_main() -> None:
    """The ``rlbench-collect`` console script."""
    _run(collect_command)


def _run(command: Any) -> None:
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one torch thread: small nets, shared cores
    cli.run_app(lambda: command(sys.argv[1:]))


def ope_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="rlbench-ope", description="Off-policy evaluation of policies on a log."
    )
    p.add_argument("log", help="the interaction log (a folder or a part file)")
    p.add_argument("--env", default="autoscaling", help="env option the log is from")
    p.add_argument("--policy", action="append", required=True,
                   help="target policy (repeat; the first two are also compared, paired): an algo "
                   "option, a model file, models:/NAME@ALIAS or runs:/<run id>")  # fmt: skip
    p.add_argument("--epsilon", type=float, default=0.0, help="targets act epsilon-greedy")
    p.add_argument("--estimators", default=None,
                   help="comma-separated (default: the sequential ones, or the bandit ones for "
                   "one-decision episodes)")  # fmt: skip
    p.add_argument("--gamma", type=float, default=1.0)
    p.add_argument(
        "--clip",
        type=float,
        default=None,
        help="bounds estimators: largest importance weight counted (default sqrt(n))",
    )
    p.add_argument("--reward-range", default=None, metavar="LOW,HIGH",
                   help="bounds estimators: the range every reward lies in (default: the "
                   "logged range)")  # fmt: skip
    p.add_argument("--boot", type=int, default=200, help="bootstrap replicates")
    p.add_argument("--seed", type=int, default=0, help="fixes the bootstrap")
    p.add_argument("--window-days", type=float, default=None, help="only the last N days")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--no-track", action="store_true", help="do not record an MLflow run")
    p.add_argument("overrides", nargs="*", help="Hydra overrides: env.load=spike algo.upper=70")
    return p


def ope_command(argv: Sequence[str] | None = None) -> None:
    """Evaluate each ``--policy`` on the log, print the table, record it in MLflow."""
    import warnings

    import numpy as np

    from rlbench.config import env_spec
    from rlbench.envs import make_vec
    from rlbench.offline import ope
    from rlbench.offline.collect import Behaviour, policy_from_spec
    from rlbench.offline.log import read_log

    args = ope_parser().parse_intermixed_args(argv)
    if args.boot < 2:
        raise UserError("--boot must be at least 2")
    _check_exploration("epsilon", args.epsilon, 1.0)
    if not 0.0 <= args.gamma <= 1.0:
        raise UserError(f"--gamma must be in [0, 1], got {args.gamma}")
    names_given = [n.strip() for n in (args.estimators or "").split(",") if n.strip()]
    for name in names_given:
        if name not in ope.ESTIMATORS:
            raise UserError(f"unknown estimator {name!r}; choose from {', '.join(ope.ESTIMATORS)}")
    reward_range = _reward_range(args.reward_range)
    if args.seed < 0:
        raise UserError(f"--seed must be an integer >= 0, got {args.seed}")
    if not args.no_track:  # a store that cannot be used is said now, not after the bootstrap
        from rlbench.tracking.store import check_store, resolve_uri

        check_store(resolve_uri(args.tracking_uri))
    cfg = _compose(args.env, None, args.overrides)
    from rlbench.envs.forecasters import with_local_model

    env_id, env_kwargs = env_spec(cfg.env)
    env_kwargs = with_local_model(env_kwargs, args.tracking_uri)  # in this command's store
    venv = make_vec(env_id, 1, seed=0, **env_kwargs)
    data = read_log(args.log, env_id=env_id, obs_shape=venv.observation_space.shape,
                    n_actions=int(venv.action_space.n))  # fmt: skip
    if args.window_days is not None:
        if not args.window_days > 0:
            raise UserError("--window-days must be > 0")
        keep = data.ts > data.ts.max() - 86400.0 * args.window_days
        data = data.subset(keep)
    data = _whole_episodes(data)
    lengths = np.bincount(data.episode)
    names = names_given or list(ope.BANDIT if lengths.max() == 1 else ope.SEQUENTIAL)
    targets, resolved = {}, {}
    for spec in args.policy:
        agent, name, version = policy_from_spec(spec, args.env, venv, 0, args.tracking_uri,
                                                args.overrides)  # fmt: skip
        label = name if name not in targets else f"{name}-{len(targets)}"
        targets[label] = Behaviour(agent, "epsilon", args.epsilon, name=label)
        named = version in (None, "file", "config")  # a rule, an algo option, a file
        resolved[f"policy.{label}"] = spec if named else f"{spec} -> version {version}"
    labels = list(targets)
    total = args.boot * (len(labels) + (2 if len(labels) >= 2 else 0))
    progress = _Progress(total, "bootstrap", "replicates")
    rows = []
    try:
        for label, target in targets.items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ope.SupportWarning)
                est, diag = ope.evaluate(data, target, names, gamma=args.gamma,
                                         n_boot=args.boot, seed=args.seed, clip=args.clip,
                                         reward_range=reward_range,
                                         progress=progress.advance)  # fmt: skip
            for w in caught:
                progress.say(f"warning: {label}: {w.message}", err=True)
            progress.say(f"{label}: {diag.n_decisions} decisions, {diag.n_episodes} episodes, "
                         f"ESS {diag.ess_episodes:.1f} episodes / {diag.ess_decisions:.0f} "
                         f"decisions, max ratio {diag.max_ratio:.3g}")  # fmt: skip
            rows += [(label, e) for e in est.values()]
        if len(labels) >= 2:
            diff = ope.compare(data, targets[labels[0]], targets[labels[1]], names,
                               gamma=args.gamma, n_boot=args.boot, seed=args.seed,
                               clip=args.clip, reward_range=reward_range,
                               progress=progress.advance)  # fmt: skip
            rows += [(f"{labels[0]} - {labels[1]}", e) for e in diff.values()]
    finally:
        progress.close()
    print_table(rows)
    if not args.no_track:
        from rlbench.offline.tracking import record_evaluation

        # an alias names another version after a promote: record the one evaluated
        settings = vars(args) | resolved
        run_id = record_evaluation(args.tracking_uri, data, args.log, rows, settings)
        print(f"mlflow run: {run_id}")


def print_table(rows: list) -> None:
    """The estimates, one line each: value, interval (or why there is none), the share of
    bootstrap replicates in which the estimator was undefined, and a ``!`` on a row whose
    notes (no interval, a value outside what the log's rewards allow) follow the table."""
    width = max(len(r[0]) for r in rows)
    print(f"{'policy'.ljust(width)}  {'estimator':11}  {'value':>10}  "
          f"{'95% interval':24}  undefined")  # fmt: skip
    for label, e in rows:
        value = f"{e.value:10.4g}" if e.value == e.value else f"{'undefined':>10}"
        interval = f"[{e.low:.4g}, {e.high:.4g}]" if e.low == e.low else "no interval"
        share = f"{100 * e.undefined_share:.0f}%" if e.undefined_share > 0 else "-"
        mark = "  !" if e.notes else ""
        print(f"{label.ljust(width)}  {e.name:11}  {value}  {interval:24}  {share:>9}{mark}")
    for label, e in rows:
        for note in e.notes:
            print(f"! {label} {e.name}: {note}")


def _reward_range(text: str | None) -> tuple[float, float] | None:
    """``--reward-range LOW,HIGH`` as two numbers (the estimator checks them against the log)."""
    if text is None:
        return None
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise UserError(
            f"--reward-range must be two numbers LOW,HIGH (e.g. -30,0), got {text!r}"
        ) from None
    return low, high


def ope_main() -> None:
    """The ``rlbench-ope`` console script."""
    _run(ope_command)
