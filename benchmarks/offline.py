"""Interaction logs and off-policy evaluation: writer throughput and estimator times (issue 17).

- writer: 50,000 autoscaling-shaped decisions through :class:`LogWriter` at the default batch
  (100) with fsync; target >= 50,000 records/s. Batch 1000 and no fsync as references.
- estimators: 100,000 logged decisions, each estimator with its 200-replicate bootstrap interval
  over episodes, timed alone; target <= 10 s, FQE and the DRs (model refitted per replicate)
  <= 60 s. Sequential: rlbench/Autoscaling-v0 (288-step episodes, threshold rule with
  epsilon 0.2 logging, target the rule with epsilon 0.05). Bandit: rlbench/Recommender-v0 with
  one-decision sessions (uniform logging, target the recommender rule with epsilon 0.1).

Measured 2026-12-02 on the shared 2-core machine (load ~3): the writer MISSED its target at
30.8k records/s; every estimator passed (IS family 0.03-0.05 s, FQE 4.6 s, DR 5.2 s, WDR
6.5 s, DM 6.9 s, DR-bandit 8.8 s, IPS/SNIPS 0.2 s on 100k decisions with 200 replicates).

Measured 2026-12-03 after the writer change (one reused C JSON encoder; a batch's fsync on a
helper thread while the next batch is encoded) and the time-to-go features of the sequential
model. ``python -m benchmarks.offline --writer-ab 29e0094 9`` (the writer before the change
against this one, alternating, 9 rounds of 50k records, batch 100, fsync): at load 9-13,
median 9.5k -> 27.5k records/s (2.88x: the old writer waited for every fsync, 5-10 ms each
under that load), per main-thread CPU second 49k -> 67k (1.37x); at load ~2, 41k -> 45k
records/s (1.09x; fsync 0.3 ms). The target is still a MISS on this machine: the benchmark's
own row read 30.5k records/s at load 13. What is left is encoding: 11 of the ~13 us a record
costs are the 17 float reprs JSON text needs (obs and next_obs of 7, ts, propensity, reward),
so about 65-85k records/s is JSONL's ceiling on a free core. A binary record batch is the
way past it (a prototype of Arrow IPC stream batches cost 5 us a record, context as JSON
text), but it is neither of the issue's two formats (Parquet cannot be appended safely per
batch): not built. Estimators at load 7-10, after the model's per-episode sums (a replicate's
system is its episode counts times per-episode sums of the decisions; CPU s in brackets,
close to an idle machine's wall time): IS family 0.15-0.27 s (0.03-0.07), FQE 15.2 s (2.0),
DR 9.5 s (2.7), WDR 14.6 s (2.2), DM 19.8 s (5.4: a wall MISS from contention only; its code
did not change), IPS 0.9 s, SNIPS 0.6 s, DR-bandit 11.4 s (5.1). Without the sums the time
features (twice the features per action) had made FQE/DR/WDR 11.7-12.7 CPU s.

Measured 2026-12-04 after orjson encoding and group commit (one fsync on the helper thread
covers every batch written since the last one; the writer waits only when 10 batches are
unsynced): ``python -m benchmarks.offline --writer-ab 1527129 5`` alternating, median 38.4k ->
350k records/s (9.1x; 49.6k -> 356k per main-thread CPU second, 7.2x) at load ~1; the
benchmark's own row (50,000 records, batch 100, fsync) 213k records/s: target PASS. Encoding
alone is 2x (orjson against the reused C encoder); the rest is no longer waiting for each
batch's fsync before writing the next.

``python -m benchmarks.offline [--quick]`` prints the table; ``python -m benchmarks --only
offline`` runs it with the others.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from benchmarks.common import Row, judged, table, time_call

WRITER_TARGET = 50_000.0
N_DECISIONS = 100_000
N_BOOT = 200
FAST_S, MODEL_S = 10.0, 60.0


def _records(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    obs = rng.random((1000, 7))
    return [
        {
            "ts": 1.767e9 + i, "episode": f"e{i // 288}", "step": i % 288,
            "obs": obs[i % 1000].tolist(), "action": int(i % 3), "propensity": 0.8,
            "reward": -1.25, "next_obs": obs[(i + 1) % 1000].tolist(), "done": i % 288 == 287,
            "terminal": False, "policy": "threshold", "policy_version": "1",
            "context": {"user_id": f"u{i % 50}"},
        }
        for i in range(n)
    ]  # fmt: skip


def _write(root: str, records: list[dict], batch: int, fsync: bool) -> None:
    from rlbench.offline.log import LogWriter

    with LogWriter(
        root, env_id="x", obs_shape=(7,), n_actions=3, batch_size=batch, fsync=fsync
    ) as w:
        for r in records:
            w.append(r)


def writer_rows(quick: bool) -> list[Row]:
    n = 10_000 if quick else 50_000
    records = _records(n)
    rows = []
    for batch, fsync in ((100, True), (1000, True), (100, False)):
        with tempfile.TemporaryDirectory() as tmp:
            wall, cpu, _ = time_call(lambda t=tmp, b=batch, f=fsync: _write(t, records, b, f))
        rate = n / wall
        main = batch == 100 and fsync
        rows.append(
            Row(
                group="offline-writer",
                case=f"{n} records, batch {batch}, {'fsync' if fsync else 'no fsync'}",
                value=rate,
                unit="records/s",
                cpu_seconds=cpu,
                target=f">= {WRITER_TARGET:.0f}" if main else "",
                status=judged(rate >= WRITER_TARGET, quick) if main else "-",
            )
        )
        print(f"  writer batch {batch} fsync={fsync}: {rate:,.0f} records/s", flush=True)
    return rows


def writer_ab(rev: str, rounds: int = 9) -> None:
    """The writer of git revision ``rev`` against this one, alternating in one process (50,000
    records, batch 100, fsync): each side's median records/s and records per main-thread CPU
    second (what an idle core would do), and the ratios."""
    import importlib.util
    import statistics
    import subprocess

    from rlbench.offline import log as new

    src = subprocess.run(
        ["git", "show", f"{rev}:rlbench/offline/log.py"], capture_output=True, text=True, check=True
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "old_log.py")
        with open(path, "w") as f:
            f.write(src)
        spec = importlib.util.spec_from_file_location("old_log", path)
        old = importlib.util.module_from_spec(spec)
        sys.modules["old_log"] = old  # dataclasses look their module up
        spec.loader.exec_module(old)
    records = _records(50_000)
    rates: dict[str, list[tuple[float, float]]] = {rev: [], "this": []}
    for i in range(rounds):
        for name, mod in ((rev, old), ("this", new)):
            with tempfile.TemporaryDirectory() as tmp:
                wall, main = time.perf_counter(), time.thread_time()
                with mod.LogWriter(tmp, env_id="x", obs_shape=(7,), n_actions=3) as w:
                    for r in records:
                        w.append(r)
                wall, main = time.perf_counter() - wall, time.thread_time() - main
            rates[name].append((len(records) / wall, len(records) / main))
            print(f"  round {i} {name}: {rates[name][-1][0]:,.0f} records/s, "
                  f"{rates[name][-1][1]:,.0f} per main-thread CPU s", flush=True)  # fmt: skip
    (o_wall, o_cpu), (n_wall, n_cpu) = (
        (statistics.median(r[0] for r in rates[k]), statistics.median(r[1] for r in rates[k]))
        for k in (rev, "this")
    )
    print(f"median records/s: {rev} {o_wall:,.0f}, this {n_wall:,.0f} ({n_wall / o_wall:.2f}x); "
          f"per main-thread CPU s: {o_cpu:,.0f}, {n_cpu:,.0f} ({n_cpu / o_cpu:.2f}x)")  # fmt: skip


def _log(env_id: str, env_kwargs: dict, algo: dict, epsilon: float, n: int, seed: int = 0):
    """``n`` logged decisions (whole episodes) of ``algo`` under epsilon-greedy, in memory."""
    from rlbench.agents import build_agent
    from rlbench.envs import make_vec
    from rlbench.offline.collect import Behaviour, collect, rows_to_log

    venv = make_vec(env_id, 64, seed=seed, **env_kwargs)
    horizon = int(env_kwargs.get("horizon", 1))
    behaviour = Behaviour(build_agent(algo, venv, seed=seed), "epsilon", epsilon)
    out = collect(venv, behaviour, None, episodes=-(-n // horizon), seed=seed, start_ts=1.767e9)
    return rows_to_log(out["rows"], env_id, venv), venv


def estimator_rows(quick: bool) -> list[Row]:
    from rlbench.agents import build_agent
    from rlbench.offline import ope
    from rlbench.offline.collect import Behaviour

    n = 20_000 if quick else N_DECISIONS
    rows = []
    cases = [
        ("rlbench/Autoscaling-v0", {"horizon": 288}, {"name": "threshold"}, 0.2, 0.05,
         ope.SEQUENTIAL),
        ("rlbench/Recommender-v0", {"horizon": 1}, {"name": "random"}, 1.0, 0.1, ope.BANDIT),
    ]  # fmt: skip
    for env_id, kwargs, algo, eps, target_eps, names in cases:
        log, venv = _log(env_id, kwargs, algo, eps, n)
        rule = "threshold" if "Autoscaling" in env_id else "recommender_rule"
        target = Behaviour(build_agent({"name": rule}, venv, seed=0), "epsilon", target_eps)
        for name in names:
            wall, cpu, (est, _) = time_call(
                lambda n=name, lg=log, tg=target: ope.evaluate(
                    lg, tg, [n], n_boot=N_BOOT, warn=False
                )
            )
            limit = MODEL_S if name in {"fqe", "dr", "wdr", "dr_bandit"} else FAST_S
            e = est[name]
            print(f"  {env_id} {name}: {wall:.2f} s  ({e.value:.4g} [{e.low:.4g}, {e.high:.4g}])")
            rows.append(
                Row(
                    group="offline-ope",
                    case=f"{name} on {len(log)} decisions ({env_id.split('/')[1]}), {N_BOOT} boot",
                    value=wall,
                    unit="s",
                    cpu_seconds=cpu,
                    reference=f"estimate {e.value:.4g} [{e.low:.4g}, {e.high:.4g}]",
                    target=f"<= {limit:.0f} s",
                    status=judged(wall <= limit, quick),
                )
            )
    return rows


def run(quick: bool = False) -> list[Row]:
    import torch

    torch.set_num_threads(1)
    return writer_rows(quick) + estimator_rows(quick)


if __name__ == "__main__":
    if "--writer-ab" in sys.argv:  # python -m benchmarks.offline --writer-ab REV [ROUNDS]
        args = sys.argv[sys.argv.index("--writer-ab") + 1 :]
        writer_ab(args[0], int(args[1]) if len(args) > 1 else 9)
        sys.exit(0)
    t0 = time.perf_counter()
    found = run(quick="--quick" in sys.argv)
    print(table(found))
    print(f"total {time.perf_counter() - t0:.0f} s")
