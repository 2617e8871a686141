"""Serving capacity and resilience: ``rlbench-serve`` beside ``mlflow models serve``, one model.

    python -m benchmarks.serving [--quick] [--seconds 10]
    python -m benchmarks --only serving

Trains a small autoscaling PPO policy into a temporary store and registers it, then starts both
servers on loopback ports (one process each, one torch thread each) and drives them with the
same open-loop load from this process: requests at fixed rates (a ladder, 100 to 4000 per
second, ``--seconds`` each), each sent at its scheduled time whether or not earlier ones were
answered, as real callers do. Per rate: throughput, p50/p99 latency, drops (503), errors and the
load generator's own CPU share (it shares the 2 cores with the server). A server's capacity is
the highest rate answered with p99 <= 25 ms, no error and no drop. Then a burst at 10x our
capacity for 1 s (from a process of its own) while this one probes at our capacity's half:
every request must be answered (decision or 503), the server must stay up with bounded memory,
and p99 must be back under 25 ms within 1 s after the burst's last request went out. Each
ladder step first sends 1 s at its rate uncounted, so the client holds the connections the rate
needs (as callers do) before the figures are taken. After the burst a probe request answered
503 counts as not recovered (infinite latency), and "went out" is when a request was written to
its socket: the generator holds at most 1000 requests in flight, so a burst scheduled for 1 s
goes out over 1.5-3 s at the pace the server answers it.
Everything goes to 127.0.0.1 only and every loop is bounded in count and time.

Measured 2026-12-03 on the 2-core machine, idle: capacity 2000/s (p99 3.0 ms; 4000/s answered
with p99 5.1 ms but 42 shed) against ``mlflow models serve`` 200/s (500/s: p99 4.7 s): 10x.
Burst of 20,000 requests scheduled at 20,000/s: last written at 1.66 s, 5017 decided, 14,983
answered 503, no error, RSS 504 -> 506 MB, then p99 2.1 ms from 1 s after. Shedding in the HTTP
protocol (rlbench.serve.shedding) cut a shed request's marginal server CPU from ~71 to ~21 us
(all requests shed, 2000/s against 4000/s); with the generator allowed 3000 requests in flight
instead of 1000 the burst recovered as well (p99 1.6 and 3.6 ms from 1 s after, two runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Row, judged

RATES = (100, 200, 500, 1000, 2000, 4000)
P99_TARGET_MS = 25.0
PROBE_S = 6.0  # the probe at half capacity that starts with the burst
WARMUP_S = 1.0  # per ladder step, sent at the step's rate and not counted (see open_loop)
CAPACITY_RATIO_TARGET = 5.0
OBS = [0.5, 0.4, 0.1, 0.2, 0.5, 0.0, 0.3]
NAME = "bench-autoscaler"


@dataclass
class Load:
    """What one open-loop step measured."""

    rate: float
    seconds: float
    sent: int
    ok: int
    dropped: int
    errors: int
    p50_ms: float
    p99_ms: float
    throughput: float
    client_cpu: float  # this process's CPU seconds per wall second during the step
    latencies: np.ndarray  # per request, in send order (ms; NaN for errors)
    sent_at: np.ndarray  # seconds from the step's start
    codes: np.ndarray  # per request, its HTTP status (-1: no answer)
    server_cpu_us: float = float("nan")  # the server's CPU per request sent (ladder steps)
    total_sent: int = 0  # requests sent, the warm-up's included
    last_sent_s: float = 0.0  # when the last request actually went out (s from the start)


PER_REQUEST = ("latencies", "sent_at", "codes")  # Load's arrays: the burst process sends no arrays


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """Keep-alive HTTP/1.1 connections to one server, opened on demand (at most ``limit`` in
    flight), speaking just enough HTTP for POST + JSON answers.

    The load generator shares the 2 cores with the server it measures, so it must be cheap (about
    a fifth of a core at 1000 requests/s): a generator running behind its own schedule charges
    its lateness to the server as latency."""

    def __init__(self, url: str, limit: int = 1000) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path or "/"
        self.free: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.slots = asyncio.Semaphore(limit)
        self.opened: list[asyncio.StreamWriter] = []
        self.last_write = 0.0  # perf_counter() when the latest request went onto a socket

    def request(self, body: bytes) -> bytes:
        return (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def post(self, raw: bytes) -> int:
        """Send one prepared request; its HTTP status (-1 if the connection failed).

        A kept-alive connection the server has since closed (uvicorn closes idle ones after 5 s)
        fails before any answer arrives: like every HTTP client, send again on a new one."""
        async with self.slots:
            for reused in (bool(self.free), False):
                if reused:
                    reader, writer = self.free.pop()
                else:
                    try:
                        reader, writer = await asyncio.open_connection(self.host, self.port)
                    except OSError:
                        return -1
                    self.opened.append(writer)
                try:
                    writer.write(raw)
                    self.last_write = time.perf_counter()
                    head = (await reader.readuntil(b"\r\n\r\n")).lower()
                    break
                except (OSError, asyncio.IncompleteReadError) as err:
                    writer.close()
                    stale = not isinstance(err, asyncio.IncompleteReadError) or not err.partial
                    if not (reused and stale):
                        return -1
            try:
                status = int(head[9:12])
                if b"transfer-encoding: chunked" in head:
                    while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
                        await reader.readexactly(size + 2)
                    await reader.readuntil(b"\r\n")
                else:
                    at = head.index(b"content-length:") + 15
                    await reader.readexactly(int(head[at : head.index(b"\r\n", at)]))
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                writer.close()
                return -1
            if b"connection: close" in head:
                writer.close()
            else:
                self.free.append((reader, writer))
            return status

    def close(self) -> None:
        for writer in self.opened:
            writer.close()


def run_loop(coroutine: Any) -> Any:
    """``asyncio.run`` on uvloop when it is there (uvicorn brings it): a cheaper generator."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


async def open_loop(
    url: str,
    body: bytes,
    rate: float,
    seconds: float,
    on_start: Callable[[], None] | None = None,
    warmup: float = 0.0,
) -> Load:
    """Send ``rate`` requests per second for ``warmup + seconds``, each at its scheduled time
    (``on_start()`` is called as the first is due); figures count the last ``seconds`` only.

    The warm-up lets the client open the connections this rate needs, as a caller population
    already has them: at 1000/s the first 140 ms of a cold start opened ~100 connections at
    once and made the whole step's p99 (38 ms against 4-8 ms in every later half second)."""
    n = max(1, int(rate * (warmup + seconds)))
    latencies = np.full(n, np.nan)
    sent_at = np.arange(n) / rate
    codes = np.zeros(n, dtype=np.int64)
    client = Client(url)
    raw = client.request(body)
    start = time.perf_counter()
    cpu = time.process_time()
    if on_start is not None:
        on_start()

    async def one(i: int) -> None:
        delay = start + sent_at[i] - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        t0 = time.perf_counter()
        try:
            codes[i] = await asyncio.wait_for(client.post(raw), timeout=10)
        except TimeoutError:
            codes[i] = -1
        latencies[i] = 1000 * (time.perf_counter() - t0)

    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    client.close()
    counted = sent_at >= warmup
    codes, latencies = codes[counted], latencies[counted]
    ok = codes == 200
    good = latencies[ok]
    return Load(
        rate=rate,
        seconds=seconds,
        sent=int(counted.sum()),
        ok=int(ok.sum()),
        dropped=int((codes == 503).sum()),
        errors=int(((codes != 200) & (codes != 503)).sum()),
        p50_ms=float(np.percentile(good, 50)) if good.size else float("nan"),
        p99_ms=float(np.percentile(good, 99)) if good.size else float("nan"),
        throughput=float(ok.sum() / max(wall - warmup, 1e-9)),
        client_cpu=cpu / wall,
        latencies=np.where(ok, latencies, np.nan),
        codes=codes,
        sent_at=sent_at[counted] - warmup,
        total_sent=n,
        last_sent_s=client.last_write - start - warmup,
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds so far of process ``pid`` and its descendants (``mlflow models
    serve`` answers from a uvicorn child process)."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # ended meanwhile
                continue
            stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    tree, total = {pid}, 0
    for _ in range(8):  # a few levels deep is all a server spawns
        tree |= {p for p, (parent, _) in stats.items() if parent in tree}
    total = sum(stats[p][1] for p in tree if p in stats)
    return total / os.sysconf("SC_CLK_TCK")


def ladder(url: str, body: bytes, seconds: float, rates: tuple[int, ...], pid: int) -> list[Load]:
    """Every rate in turn; stops after the first rate that misses badly (p99 over 1 s).
    The server's CPU per request (process ``pid``) is the figure other load cannot inflate."""
    out = []
    for rate in rates:
        before = cpu_seconds(pid)
        step = run_loop(open_loop(url, body, rate, seconds, warmup=WARMUP_S))
        step.server_cpu_us = 1e6 * (cpu_seconds(pid) - before) / step.total_sent
        out.append(step)
        print(
            f"   {url.split('/')[-1]:12s} {rate:5d}/s: {step.throughput:7.0f}/s answered, "
            f"p50 {step.p50_ms:6.1f} ms, p99 {step.p99_ms:7.1f} ms, drops {step.dropped}, "
            f"errors {step.errors}, server CPU {step.server_cpu_us:.0f} us/request, "
            f"load generator CPU {100 * step.client_cpu:.0f}%",
            flush=True,
        )
        if step.errors > step.sent // 2 or not step.p99_ms < 1000:
            break
        time.sleep(0.5)
    return out


def capacity(steps: list[Load]) -> float:
    """The highest rate answered with p99 <= 25 ms, no error and no drop (0 if none)."""
    good = [s.rate for s in steps if s.p99_ms <= P99_TARGET_MS and not s.errors and not s.dropped]
    return max(good, default=0.0)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_up(url: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


def prepare(root: Path) -> dict[str, str]:
    """A store with a trained, registered autoscaling PPO policy; the environment that uses it."""
    uri = f"sqlite:///{root}/mlflow.db"
    bindir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "OMP_NUM_THREADS": "1",
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "rlbench.run.main", "algo=ppo", "train.total_steps=4096",
         "train.progress=off", f"tracking.register={NAME}", "eval.trajectory_plot=false"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return env


def run(quick: bool = False, seconds: float | None = None) -> list[Row]:
    seconds = seconds or (2.0 if quick else 10.0)
    rates = (100, 500, 2000) if quick else RATES
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="rlbench-bench-serving-") as tmp:
        root = Path(tmp)
        env = prepare(root)
        ours_port, theirs_port = free_port(), free_port()
        ours = subprocess.Popen(
            [sys.executable, "-m", "rlbench.serve.cli", f"models:/{NAME}@champion",
             "--port", str(ours_port), "--poll-interval", "0"],
            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        theirs = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m",
             f"models:/{NAME}/1", "--env-manager", "local", "--host", "127.0.0.1",
             "--port", str(theirs_port)],
            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            ours_url = f"http://127.0.0.1:{ours_port}"
            theirs_url = f"http://127.0.0.1:{theirs_port}"
            wait_up(ours_url + "/healthz", ours)
            wait_up(theirs_url + "/ping", theirs)
            ours_body = json.dumps({"observation": OBS}).encode()
            theirs_body = json.dumps({"inputs": [OBS]}).encode()
            ours_steps = ladder(ours_url + "/decide", ours_body, seconds, rates, ours.pid)
            theirs_steps = ladder(
                theirs_url + "/invocations", theirs_body, seconds, rates, theirs.pid
            )
            rows += _ladder_rows("rlbench-serve", ours_steps)
            rows += _ladder_rows("mlflow models serve", theirs_steps)
            ours_cap, theirs_cap = capacity(ours_steps), capacity(theirs_steps)
            ratio = ours_cap / theirs_cap if theirs_cap else float("inf")
            rows.append(
                Row(
                    "serving",
                    "capacity: rlbench-serve",
                    ours_cap,
                    "req/s",
                    reference="mlflow models serve",
                    reference_value=theirs_cap,
                    ratio=ratio,
                    target=f">= {CAPACITY_RATIO_TARGET:g}x mlflow models serve",
                    status=judged(ratio >= CAPACITY_RATIO_TARGET, quick),
                )
            )
            rows += _burst(ours_url, ours_body, ours, max(ours_cap, 100.0), quick)
        finally:
            for proc in (ours, theirs):
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return rows


def _ladder_rows(server: str, steps: list[Load]) -> list[Row]:
    return [
        Row(
            "serving",
            f"{server} at {s.rate:.0f}/s",
            s.p99_ms,
            "ms p99",
            details={
                "throughput": round(s.throughput, 1),
                "p50_ms": round(s.p50_ms, 2),
                "dropped": s.dropped,
                "errors": s.errors,
                "sent": s.sent,
                "load_generator_cpu": round(s.client_cpu, 2),
                "server_cpu_us_per_request": round(s.server_cpu_us),
            },
        )
        for s in steps
    ]


def _burst(url: str, body: bytes, proc: subprocess.Popen, cap: float, quick: bool) -> list[Row]:
    """10x capacity for 1 s, then half capacity: answered, alive, bounded, recovered."""
    rss_before = rss_kb(proc.pid)

    # the burst comes from a process of its own: sent from this one, a generator that cannot
    # keep up with 10x would delay the probe's own requests and charge that to the server
    burst_proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.serving", "--burst", url + "/decide", str(10 * cap)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    # the probe starts with the burst (not with its process: its imports take a while). The
    # burst ends when its last request went out: a generator sharing 2 cores with the server
    # sends 10x capacity later than scheduled, so "1 s after" counts from then, not from 1 s
    assert burst_proc.stdout is not None
    burst_proc.stdout.readline()  # "started"
    after = run_loop(open_loop(url + "/decide", body, cap / 2, PROBE_S))
    out, _ = burst_proc.communicate(timeout=120)
    burst = Load(**{**json.loads(out), **dict.fromkeys(PER_REQUEST)})
    rss_after = rss_kb(proc.pid)
    alive = proc.poll() is None
    # from 1 s after, a request answered 503 (shed) has not recovered: it counts as too slow
    late = after.sent_at >= burst.last_sent_s + 1.0
    recovered = np.where(after.codes[late] == 200, after.latencies[late], np.inf)
    p99_after = float(np.percentile(recovered, 99)) if recovered.size else float("nan")
    answered = burst.errors == 0 and after.errors == 0
    print(
        f"   burst {10 * cap:.0f}/s for 1 s (its last request sent at {burst.last_sent_s:.2f} s): "
        f"{burst.ok} decided, {burst.dropped} answered 503, "
        f"{burst.errors} errors; then p99 {p99_after:.1f} ms from 1 s after; RSS "
        f"{rss_before // 1024} -> {rss_after // 1024} MB; alive {alive}",
        flush=True,
    )
    details = {
        "burst_rate": 10 * cap,
        "decided": burst.ok,
        "answered_503": burst.dropped,
        "burst_last_sent_s": round(burst.last_sent_s, 2),
        "errors": burst.errors + after.errors,
        "rss_mb_before": rss_before // 1024,
        "rss_mb_after": rss_after // 1024,
    }
    ok = alive and answered and p99_after <= P99_TARGET_MS and rss_after < 2 * rss_before
    return [
        Row(
            "serving",
            "burst at 10x capacity: p99 from 1 s after",
            p99_after,
            "ms p99",
            target="all answered (decision or 503), alive, RSS < 2x, p99 <= 25 ms within 1 s",
            status=judged(ok, quick),
            details=details,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=None, help="per ladder rate (10)")
    parser.add_argument("--burst", nargs=2, metavar=("URL", "RATE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.burst:  # the burst's own process (see _burst): one second at RATE, then a summary
        url, rate = args.burst[0], float(args.burst[1])
        body = json.dumps({"observation": OBS}).encode()
        load = run_loop(
            open_loop(url, body, rate, 1.0, on_start=lambda: print("started", flush=True))
        )
        fields = {k: v for k, v in vars(load).items() if k not in PER_REQUEST}
        fields.pop("server_cpu_us")
        print(json.dumps(fields))
        return 0
    from benchmarks.common import table

    print(table(run(quick=args.quick, seconds=args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
