"""The drift experiment: does the live loop notice a load change, retrain, promote only what is
better, and recover the reward? And was each gate verdict right?

    .venv/bin/python experiments/continual-learning/drift.py --seeds 0,1,2,3,4
    .venv/bin/python experiments/continual-learning/drift.py --analyse-only
    .venv/bin/python experiments/continual-learning/drift.py --variant canary --seeds 0,1,2,3,4

Per seed, one ``rlbench-live experiment=drift seed=S`` session (its own session folder, model
name and the shared MLflow store under ``--work``), timed as a process. ``--variant`` picks the
gate: ``dr`` (the preset as it is, the DR gate alone, as the README first measured it) or
``canary`` (the gate ``rlbench-live`` ships: ``gate.estimator=pdis_bounds`` and
``canary.episodes=10``, so a challenger the calibrated gate cannot judge is tried on-policy in
half the episodes); each variant has its own ``--work`` folder, tables and figure, so one never
overwrites the other's. A canary's verdict takes effect when it ends, not at the retraining:
its decision (``decided_at``) is counted from the episodes both arms played. Then, in simulation,
where the truth is known: for every retraining, the true values of the champion and the
challenger at that moment (mean return over ``--truth-episodes`` on-policy episodes of the
environment the session was in then: the drifted one once the drift had reached the
episodes), so each gate interval can be checked against the true difference. And per decision
on the drifted load, without exploration: the first champion (no loop), the last promoted
challenger, and the threshold rule (an adaptive policy nobody trained on this load).

Writes ``results/retrainings.csv`` (one row per retraining: gate interval, verdict, truth),
``results/sessions.csv`` (per seed: wall time, reward before/after, promotions) and
``figures/drift.png`` (the rolling live reward of every seed, with the drift and the verdicts).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DRIFT_AT = 1500  # conf_live/experiment/drift.yaml
ROLL = 250  # decisions in the rolling mean of the figure
# variant: (overrides after experiment=drift, default --work, suffix of its tables and figure)
VARIANTS = {
    "dr": ((), "outputs/continual-learning", ""),
    "canary": (
        ("gate.estimator=pdis_bounds", "canary.episodes=10"),
        "outputs/continual-learning-canary",
        "-canary",
    ),
}


def run_sessions(seeds: list[int], work: Path, overrides: tuple[str, ...]) -> pd.DataFrame:
    """One session per seed (skipped when its state says it finished), timed as a process."""
    rows = []
    store = f"sqlite:///{(work / 'mlflow.db').resolve()}"
    for seed in seeds:
        folder = work / f"drift-s{seed}"
        state_file = folder / "session.json"
        done = state_file.exists() and json.loads(state_file.read_text())["decisions"] >= 9000
        t0 = time.perf_counter()
        if not done:
            cmd = [sys.executable, "-m", "rlbench.live.cli", "experiment=drift", f"seed={seed}",
                   f"session=drift-s{seed}", f"model=autoscaling-drift-s{seed}",
                   f"folder={folder}", f"tracking.uri={store}", "dashboard=log",
                   f"tracking.artifact_location={work / 'mlartifacts'}", *overrides]  # fmt: skip
            print(" ".join(cmd[2:]), flush=True)
            subprocess.run(cmd, check=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
        rows.append({"seed": seed, "wall_s": time.perf_counter() - t0 if not done else np.nan})
    return pd.DataFrame(rows)


def truth(seeds: list[int], work: Path, episodes: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The gate's verdicts against the simulated truth, and each session's rewards."""
    from omegaconf import OmegaConf

    from rlbench.config import CONF_LIVE_DIR, env_spec, override_value
    from rlbench.offline.collect import compose, load_policy, on_policy_returns
    from rlbench.offline.log import read_log
    from rlbench.run.train import build_env

    preset = OmegaConf.load(Path(CONF_LIVE_DIR) / "experiment" / "drift.yaml")
    env_args = [f"env.{k}={override_value(v)}" for k, v in preset.env_args.items()]
    base = compose(["env=autoscaling", *env_args])
    env_id, before_kw = env_spec(base.env)
    after_kw = before_kw | dict(preset.source.drift_args)
    horizon = int(before_kw["horizon"])
    uri = f"sqlite:///{(work / 'mlflow.db').resolve()}"
    venvs = {
        k: build_env(env_id, kw, 8, 0) for k, kw in (("before", before_kw), ("after", after_kw))
    }
    cache: dict[tuple[str, str, str], float] = {}

    def value(model: str, version: str, when: str) -> float:
        key = (model, version, when)
        if key not in cache:
            agent = load_policy(f"models:/{model}/{version}", None, venvs[when], 0, uri)[0]
            cache[key] = float(on_policy_returns(venvs[when], agent, episodes, 12345).mean())
        return cache[key]

    from rlbench.agents import build_agent

    rule = build_agent(
        compose(["env=autoscaling", "algo=threshold"]).algo, venvs["after"], 0, "cpu"
    )
    threshold = float(on_policy_returns(venvs["after"], rule, episodes, 12345).mean()) / horizon
    rows, sessions = [], []
    for seed in seeds:
        model, folder = f"autoscaling-drift-s{seed}", work / f"drift-s{seed}"
        state = json.loads((folder / "session.json").read_text())
        log = read_log(folder / "log")
        order = np.argsort(log.ts, kind="stable")
        reward, acted = log.reward[order], np.asarray(log.policy)[order]
        seed_rows = []
        for h in state["history"]:
            if h.get("verdict") == "skipped":
                continue
            when = "after" if h["at"] >= DRIFT_AT + horizon else "before"
            v_champ, v_chal = value(model, h["champion"], when), value(model, h["version"], when)
            g, c = h["gate"], h.get("canary", {})
            decided = _decided_at(h, horizon)
            seed_rows.append({
                "seed": seed, "k": h["k"], "at": h["at"], "load": when,
                "trigger": h["trigger"].split(":")[0],
                "champion": h["champion"], "challenger": h["version"], "verdict": h["verdict"],
                "by": _decided_by(h), "decided_at": decided,
                "gate_diff": g["diff"], "gate_low": g["low"], "gate_high": g["high"],
                "canary_diff": c.get("diff", np.nan), "canary_p": c.get("p", np.nan),
                "canary_episodes": c.get("challenger_episodes", 0) + c.get("champion_episodes", 0),
                "challenger_acted": _challenger_acted(acted, h, decided, model),
                "true_diff": v_chal - v_champ,
                "covered": g["low"] <= v_chal - v_champ <= g["high"],
                "right": (h["verdict"] in ("promoted", "rolled_back")) == (v_chal > v_champ)
                if h["verdict"] != "canary" else np.nan,
                "seconds": h.get("seconds", np.nan),
            })  # fmt: skip
        rows += seed_rows
        static = value(model, "1", "after") / horizon
        final = [h for h in state["history"] if h.get("verdict") == "promoted"]
        promoted = value(model, final[-1]["version"], "after") / horizon if final else np.nan
        first = min((r["decided_at"] for r in seed_rows if r["verdict"] == "promoted"),
                    default=len(reward))  # fmt: skip
        sessions.append({
            "seed": seed, "decisions": len(reward), "reward_before_drift": reward[:DRIFT_AT].mean(),
            "reward_drift_to_first_promotion": _mean_between(reward, DRIFT_AT, first),
            "first_promotion_at": first if first < len(reward) else np.nan,
            "reward_after_drift": reward[DRIFT_AT:].mean(),
            "reward_last_3000": reward[-3000:].mean(), "static_champion_after_drift": static,
            "last_promoted_after_drift": promoted, "threshold_rule_after_drift": threshold,
            "promotions": sum(h.get("verdict") == "promoted" for h in state["history"]),
            "rollbacks": sum(h.get("verdict") == "rolled_back" for h in state["history"]),
            "retrainings": len(state["history"]),
            "to_canary": sum(r["by"] != "gate" for r in seed_rows),
            "stopped_early": sum(r["by"] == "canary stopped" for r in seed_rows),
            "canary_unfinished": sum(r["by"] == "canary unfinished" for r in seed_rows),
            "rejected_challenger_acted": sum(
                r["challenger_acted"] for r in seed_rows if r["verdict"] == "rejected"
            ),
        })  # fmt: skip
    return pd.DataFrame(rows), pd.DataFrame(sessions)


def _mean_between(reward: np.ndarray, start: int, end: int) -> float:
    return float(reward[start : int(end)].mean()) if end > start else float("nan")


def _decided_by(h: dict) -> str:
    """What decided a retraining: the gate, a canary run to its end, one stopped early (the
    challenger shown worse), or one the session ended during."""
    if h["verdict"] == "canary":
        return "canary unfinished"
    if "canary" not in h:
        return "gate"
    return "canary stopped" if h["canary_why"].startswith("canary stopped") else "canary"


def _decided_at(h: dict, horizon: int) -> float:
    """The decision at which the verdict took effect: the retraining's for the gate; for a
    canary, the end of its last episode (it starts with the first episode after the
    retraining and, without kills, every episode it saw counted for an arm)."""
    if h["verdict"] == "canary":
        return float("nan")
    if "canary" not in h:
        return float(h["at"])
    c = h["canary"]
    start = -(-int(h["at"]) // horizon) * horizon
    return float(start + horizon * int(c["challenger_episodes"] + c["champion_episodes"]))


def _challenger_acted(acted: np.ndarray, h: dict, decided: float, model: str) -> int:
    """Decisions the challenger made before its verdict (a canary's exposure; 0 for the gate)."""
    if "canary" not in h and h["verdict"] != "canary":
        return 0
    end = len(acted) if math.isnan(decided) else int(decided)
    return int((acted[int(h["at"]) : end] == f"{model}:{h['version']}").sum())


def figure(seeds: list[int], work: Path, out: Path, retrainings: pd.DataFrame, title: str) -> None:
    """Rolling live reward per seed; the drift, and each verdict coloured, where it took
    effect (a canary: shaded from its retraining to its end)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlbench.offline.log import read_log

    colours = {"promoted": "tab:green", "rejected": "tab:gray", "rolled_back": "tab:red",
               "refused": "tab:orange"}  # fmt: skip
    fig, axes = plt.subplots(len(seeds), 1, figsize=(9, 1.9 * len(seeds) + 0.6), sharex=True)
    for ax, seed in zip(np.atleast_1d(axes), seeds, strict=True):
        folder = work / f"drift-s{seed}"
        log = read_log(folder / "log")
        reward = log.reward[np.argsort(log.ts, kind="stable")]
        roll = np.convolve(reward, np.ones(ROLL) / ROLL, mode="valid")
        ax.plot(np.arange(ROLL, len(reward) + 1), roll, lw=1.2, color="tab:blue")
        ax.axvline(DRIFT_AT, color="black", ls="--", lw=1)
        for h in json.loads((folder / "session.json").read_text())["history"]:
            if h.get("verdict") == "skipped":
                continue
            row = retrainings[(retrainings.seed == seed) & (retrainings.k == h["k"])].iloc[0]
            end = len(reward) if math.isnan(row.decided_at) else row.decided_at
            colour = colours.get(h.get("verdict"), "tab:purple")
            if row.by != "gate":
                ax.axvspan(h["at"], end, color=colour, alpha=0.15, lw=0)
            ax.axvline(end, color=colour, lw=2, alpha=0.8)
        ax.set_ylabel(f"seed {seed}")
        ax.grid(alpha=0.3)
    axes = np.atleast_1d(axes)
    axes[0].set_title(
        f"{title}: live reward per decision (rolling mean of {ROLL}); dashed: the load drifts;\n"
        "verdicts: green promoted, grey rejected, red rolled back (shaded: a canary running)",
        fontsize=9,
    )  # fmt: skip
    axes[-1].set_xlabel("decision")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument(
        "--variant",
        choices=sorted(VARIANTS),
        default="dr",
        help="dr: the preset's DR gate alone; canary: pdis_bounds and the canary",
    )
    ap.add_argument("--work", default=None, help="default: the variant's folder in VARIANTS")
    ap.add_argument("--truth-episodes", type=int, default=400)
    ap.add_argument("--analyse-only", action="store_true")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides, default_work, suffix = VARIANTS[args.variant]
    work = Path(args.work or default_work)
    work.mkdir(parents=True, exist_ok=True)
    (HERE / "results").mkdir(exist_ok=True)
    if not args.analyse_only:
        timing = run_sessions(seeds, work, overrides)
        timing.to_csv(work / "timing.csv", index=False)
    retrainings, sessions = truth(seeds, work, args.truth_episodes)
    timing_file = work / "timing.csv"
    if timing_file.exists():
        sessions = sessions.merge(pd.read_csv(timing_file), on="seed", how="left")
    retrainings.to_csv(HERE / "results" / f"retrainings{suffix}.csv", index=False)
    sessions.to_csv(HERE / "results" / f"sessions{suffix}.csv", index=False)
    title = {"dr": "DR gate", "canary": "pdis_bounds gate + canary"}[args.variant]
    figure(seeds, work, HERE / "figures" / f"drift{suffix}.png", retrainings, title)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(retrainings.round(3).to_string(index=False))
        print(sessions.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
