"""OPE validation: every estimator's bias, RMSE, interval width and coverage against the truth.

    .venv/bin/python experiments/ope-validation/validate.py            # the grid of the README
    .venv/bin/python experiments/ope-validation/validate.py --logs 5 --sizes 500  # a smoke run

For each environment (autoscaling: 48-step episodes by default, ``--horizon 288`` for the env's
day, the sequential estimators; recommender:
one-decision sessions, the contextual-bandit estimators), 5 target policies, 2 behaviour
policies, the log sizes in ``--sizes`` (decisions) and ``--logs`` independent logs per cell:
collect a log with the behaviour (its own seed), estimate every target's value with every
estimator and a ``--boot``-replicate 95% bootstrap interval, and compare with the truth: the
target's mean return over ``--truth-episodes`` simulated on-policy episodes. Writes
``estimates.csv`` (one row per log x target x estimator), ``truth.csv`` and ``summary.md``
(the tables of README.md) into ``--out``.

The recommended estimator is chosen by a rule fixed before the runs: the smallest RMSE among
the estimators whose coverage is at least 85%, pooled over every cell of its environment.

``--estimators`` runs some of them only (the same logs: every log's seed depends only on
environment, behaviour, size and index), ``--truth-from`` reuses a finished run's truth, and
``--merge`` joins the folders into one table. The bounds estimators (``pdis_bounds``,
``ips_bounds``) run with ``ope.evaluate``'s defaults: clip sqrt(n), the logged reward range.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd

ENVS = {
    "autoscaling": ("rlbench/Autoscaling-v0", {"horizon": 48}),
    "recommender": ("rlbench/Recommender-v0", {"horizon": 1}),
}
# name -> (algo config, epsilon): epsilon-greedy around the algo's deterministic choice
TARGETS = {
    "autoscaling": {
        "threshold": ({"name": "threshold"}, 0.0),
        "threshold_eps0.1": ({"name": "threshold"}, 0.1),
        "hold_eps0.1": ({"name": "static"}, 0.1),
        "random": ({"name": "random"}, 1.0),
        "threshold_70_30_eps0.05": ({"name": "threshold", "upper": 70.0, "lower": 30.0}, 0.05),
    },
    "recommender": {
        "rule": ({"name": "recommender_rule"}, 0.0),
        "rule_eps0.2": ({"name": "recommender_rule"}, 0.2),
        "random": ({"name": "random"}, 1.0),
        "action13_eps0.1": ({"name": "static", "action": 13}, 0.1),
        "rule_1_3_eps0.1": ({"name": "recommender_rule", "low_bin": 1, "high_bin": 3}, 0.1),
    },
}
BEHAVIOURS = {
    "autoscaling": {
        "threshold_eps0.3": ({"name": "threshold"}, 0.3),
        "random": ({"name": "random"}, 1.0),
    },
    "recommender": {
        "random": ({"name": "random"}, 1.0),
        "rule_eps0.3": ({"name": "recommender_rule"}, 0.3),
    },
}
COVERAGE_RULE = 0.85
TIME_FEATURES: list[bool | None] = [None]  # --time-features (None: ope.evaluate's default)
FEATURES: list[str] = ["quadratic"]  # --features: the model's features (ope.FEATURES)


def policy(env_id: str, kwargs: dict, algo: dict, eps: float, name: str):
    from rlbench.agents import build_agent
    from rlbench.envs import make_vec
    from rlbench.offline.collect import Behaviour

    venv = make_vec(env_id, 1, seed=0, **kwargs)
    return Behaviour(build_agent(algo, venv, seed=0), "epsilon", eps, name=name)


def truth(env: str, episodes: int, seed: int) -> pd.DataFrame:
    from rlbench.envs import make_vec
    from rlbench.offline.collect import on_policy_returns

    env_id, kwargs = ENVS[env]
    rows = []
    for k, (name, (algo, eps)) in enumerate(TARGETS[env].items()):
        venv = make_vec(env_id, 256, seed=0, **kwargs)
        r = on_policy_returns(venv, policy(env_id, kwargs, algo, eps, name), episodes, seed + k)
        rows.append({"env": env, "target": name, "truth": r.mean(),
                     "truth_se": r.std(ddof=1) / np.sqrt(len(r)), "episodes": len(r)})  # fmt: skip
        print(f"truth {env} {name}: {r.mean():.4f} +- {rows[-1]['truth_se']:.4f}", flush=True)
    return pd.DataFrame(rows)


ONLY: list[str] = []  # --estimators: a subset of the env's estimators (empty: all)


def one_log(env: str, behaviour: str, size: int, index: int, boot: int) -> list[dict]:
    from rlbench.envs import make_vec
    from rlbench.offline import ope
    from rlbench.offline.collect import collect, rows_to_log

    env_id, kwargs = ENVS[env]
    horizon = int(kwargs["horizon"])
    seed = 1_000_003 * (list(ENVS).index(env) + 1) + 10_007 * list(BEHAVIOURS[env]).index(
        behaviour
    ) + 101 * size + index  # fmt: skip
    algo, eps = BEHAVIOURS[env][behaviour]
    venv = make_vec(env_id, 32, seed=seed, **kwargs)
    beh = policy(env_id, kwargs, algo, eps, behaviour)
    out = collect(venv, beh, None, episodes=-(-size // horizon), seed=seed, start_ts=0.0)
    log = rows_to_log(out["rows"], env_id, venv)
    names = ope.SEQUENTIAL if horizon > 1 else ope.BANDIT
    names = [n for n in names if n in ONLY] if ONLY else names
    rows = []
    for target, (t_algo, t_eps) in TARGETS[env].items():
        est, diag = ope.evaluate(
            log, policy(env_id, kwargs, t_algo, t_eps, target), names, n_boot=boot,
            seed=seed, warn=False, time_features=TIME_FEATURES[0], features=FEATURES[0],
        )  # fmt: skip
        for name, e in est.items():
            rows.append({
                "env": env, "behaviour": behaviour, "size": size, "log": index, "target": target,
                "estimator": name, "value": e.value, "low": e.low, "high": e.high,
                "ess_episodes": diag.ess_episodes, "ess_decisions": diag.ess_decisions,
            })  # fmt: skip
    return rows


def _rmse(e: pd.Series) -> float:
    e = e.dropna()
    return float(np.sqrt(np.mean(e**2))) if len(e) else float("nan")


def summarise(est: pd.DataFrame, tru: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per cell and pooled: bias and RMSE over the logs where the estimate is defined, mean
    width, coverage (an undefined estimate counts as NOT covering) and the undefined share."""
    df = est.merge(tru[["env", "target", "truth"]], on=["env", "target"])
    df["error"] = df["value"] - df["truth"]
    df["covered"] = (df["low"] <= df["truth"]) & (df["truth"] <= df["high"])
    df["width"] = df["high"] - df["low"]
    df["undefined"] = df["value"].isna()
    keys = ["env", "behaviour", "size", "estimator"]
    per_cell = (
        df.groupby([*keys, "target"])
        .agg(bias=("error", "mean"), rmse=("error", _rmse), width=("width", "mean"),
             coverage=("covered", "mean"), undefined=("undefined", "mean"), logs=("log", "nunique"))
        .reset_index()
    )  # fmt: skip
    pooled = (
        df.groupby(["env", "estimator"])
        .agg(rmse=("error", _rmse), abs_bias=("error", lambda e: float(abs(e.mean()))),
             width=("width", "mean"), coverage=("covered", "mean"),
             undefined=("undefined", "mean"), n=("error", "size"))
        .reset_index()
    )  # fmt: skip
    return per_cell, pooled


def recommend(pooled: pd.DataFrame) -> dict[str, str]:
    """The rule fixed before the runs: smallest RMSE among coverage >= 85% (per env)."""
    out = {}
    for env, g in pooled.groupby("env"):
        ok = g[(g["coverage"] >= COVERAGE_RULE) & g["rmse"].notna()]
        out[env] = ok.sort_values("rmse").iloc[0]["estimator"] if len(ok) else "(none)"
    return out


def md(df: pd.DataFrame) -> str:
    """A Markdown table (pandas' to_markdown needs tabulate, which rlbench does not install)."""

    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(df.columns) + " |"
    rule = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def markdown(per_cell: pd.DataFrame, pooled: pd.DataFrame, tru: pd.DataFrame, meta: dict) -> str:
    lines = [
        f"Generated by `{meta['command']}` in {meta['wall_s']:.0f} s on {meta['machine']}.",
        "",
    ]
    rec = recommend(pooled)
    lines += ["## Recommended (smallest RMSE among coverage >= 85%, pooled per environment)", ""]
    for env, name in rec.items():
        row = pooled[(pooled.env == env) & (pooled.estimator == name)]
        cov = f"{row.coverage.iloc[0]:.1%}" if len(row) else "-"
        lines.append(f"- {env}: **{name}** (pooled coverage {cov})")
    lines += [
        "",
        "## Truth (on-policy simulation)",
        "",
        md(tru),
    ]
    lines += ["", "## Pooled over behaviours, sizes and targets", ""]
    lines += [md(pooled)]
    lines += ["", "## By behaviour and log size (mean over targets)", ""]
    by = (
        per_cell.groupby(["env", "behaviour", "size", "estimator"])
        .agg(bias=("bias", "mean"), rmse=("rmse", "mean"), width=("width", "mean"),
             coverage=("coverage", "mean"), min_coverage=("coverage", "min"),
             undefined=("undefined", "mean"), logs=("logs", "min"))
        .reset_index()
    )  # fmt: skip
    lines += [md(by), ""]
    return "\n".join(lines)


def merge(args: argparse.Namespace) -> int:
    """Summarise finished runs' tables (each env's rows taken from the folder that ran it)."""
    ests, trus = [], []
    for folder in args.merge:
        est = pd.read_csv(Path(folder) / "estimates.csv")
        tru = pd.read_csv(Path(folder) / "truth.csv")
        envs = sorted(set(est["env"]))
        ests.append(est)
        trus.append(tru[tru["env"].isin(envs)])
    est, tru = pd.concat(ests, ignore_index=True), pd.concat(trus, ignore_index=True)
    tru = tru.drop_duplicates(["env", "target"])  # folders of one env: the first one's truth
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    est.to_csv(out / "estimates.csv", index=False)
    tru.to_csv(out / "truth.csv", index=False)
    per_cell, pooled = summarise(est, tru)
    per_cell.to_csv(out / "cells.csv", index=False)
    meta = {
        "command": "python experiments/ope-validation/validate.py " + " ".join(sys.argv[1:]),
        "wall_s": float(args.wall or 0.0),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        f"(shared), Python {platform.python_version()}",
    }
    (out / "summary.md").write_text(markdown(per_cell, pooled, tru, meta))
    print((out / "summary.md").read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    import torch

    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--logs", type=int, default=50, help="independent logs per cell")
    p.add_argument("--sizes", default="1000,5000,20000", help="decisions per log")
    p.add_argument("--boot", type=int, default=100, help="bootstrap replicates per interval")
    p.add_argument("--truth-episodes", type=int, default=20000)
    p.add_argument("--envs", default="autoscaling,recommender")
    p.add_argument(
        "--horizon",
        type=int,
        default=48,
        help="autoscaling episode length in 5-min steps (the env's default day: 288)",
    )
    p.add_argument("--time-features", choices=("auto", "on", "off"), default="auto",
                   help="the sequential model's time-to-go features (ope.evaluate's default: "
                   "auto, on for gamma 1)")  # fmt: skip
    p.add_argument("--features", choices=("quadratic", "poly2", "linear"), default="quadratic",
                   help="the model's features (fqe, dr, wdr, dm, dr_bandit)")  # fmt: skip
    p.add_argument(
        "--estimators", default="", help="comma-separated: only these (each env runs those it has)"
    )
    p.add_argument(
        "--truth-from",
        default=None,
        help="a finished run's folder: take its truth.csv instead of simulating",
    )
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--merge", nargs="+", default=None,
                   help="no runs: summarise the estimates.csv/truth.csv of these folders "
                   "(runs split over processes, one per env) into --out")  # fmt: skip
    p.add_argument("--wall", type=float, default=None, help="with --merge: the runs' wall s")
    p.add_argument(
        "--truth-only",
        action="store_true",
        help="only (re)compute truth.csv in --out (estimates do not depend on it)",
    )
    args = p.parse_args(argv)
    ENVS["autoscaling"] = ("rlbench/Autoscaling-v0", {"horizon": args.horizon})
    TIME_FEATURES[0] = {"auto": None, "on": True, "off": False}[args.time_features]
    FEATURES[0] = args.features
    from rlbench.offline import ope

    ONLY[:] = [n for n in args.estimators.split(",") if n]
    unknown = sorted(set(ONLY) - set(ope.ESTIMATORS))
    if unknown:
        p.error(
            f"unknown estimator(s) {', '.join(unknown)}; choose from {', '.join(ope.ESTIMATORS)}"
        )
    if args.truth_only:
        envs = [e for e in args.envs.split(",") if e]
        tru = pd.concat([truth(env, args.truth_episodes, 7) for env in envs], ignore_index=True)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        tru.to_csv(Path(args.out) / "truth.csv", index=False)
        return 0
    if args.merge:
        return merge(args)
    sizes = [int(s) for s in args.sizes.split(",")]
    envs = [e for e in args.envs.split(",") if e]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.truth_from:
        tru = pd.read_csv(Path(args.truth_from) / "truth.csv")
        tru = tru[tru["env"].isin(envs)]
    else:
        tru = pd.concat([truth(env, args.truth_episodes, 7) for env in envs], ignore_index=True)
    tru.to_csv(out / "truth.csv", index=False)
    rows: list[dict] = []
    for env in envs:
        for behaviour in BEHAVIOURS[env]:
            for size in sizes:
                t1 = time.perf_counter()
                for i in range(args.logs):
                    rows += one_log(env, behaviour, size, i, args.boot)
                print(f"{env} {behaviour} {size}: {args.logs} logs in "
                      f"{time.perf_counter() - t1:.0f} s", flush=True)  # fmt: skip
                pd.DataFrame(rows).to_csv(out / "estimates.csv", index=False)
    est = pd.DataFrame(rows)
    per_cell, pooled = summarise(est, tru)
    per_cell.to_csv(out / "cells.csv", index=False)
    meta = {
        "command": "python experiments/ope-validation/validate.py " + " ".join(sys.argv[1:]),
        "wall_s": time.perf_counter() - t0,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        f"(shared), Python {platform.python_version()}",
    }
    (out / "summary.md").write_text(markdown(per_cell, pooled, tru, meta))
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
