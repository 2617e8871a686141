"""``rlbench-serve``: a registered policy answers decisions over HTTP.

    rlbench-serve models:/autoscaler@champion                 # http://127.0.0.1:8000
    rlbench-serve models:/autoscaler@champion --port 9000 --capacity 100 --max-batch 64
    curl -s localhost:8000/decide -d '{"observation": [0.5, 0.4, 0.1, 0.2, 0.5, 0.0, 0.3]}'

Binds 127.0.0.1 unless ``--host`` says otherwise. Follows the alias: a version promoted while
it runs is loaded in the background and swapped in between two batches (``--poll-interval``).
Bad input (an unknown model or alias, a port in use) is one ``error:`` line and exit code 2.

SIGTERM (``kill``, a container stop) is a graceful stop: no new connections, requests in flight
are answered, exit 0. Ctrl-C does the same, then says ``interrupted`` and exits 130, as every
rlbench command does; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

from rlbench import cli
from rlbench.cli import EXIT_USER_ERROR
from rlbench.errors import UserError


def _parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="rlbench-serve", description="Serve a registered policy's decisions over HTTP."
    )
    parser.add_argument("model_uri", help="models:/NAME@ALIAS or models:/NAME/VERSION")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--capacity", type=int, default=100, help="waiting requests (100)")
    parser.add_argument("--max-batch", type=int, default=64, help="requests per forward pass")
    parser.add_argument("--max-rows", type=int, default=1024, help="observations per request")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="seconds; 0: never")
    parser.add_argument(
        "--shed-after-ms",
        type=float,
        default=10.0,
        help="answer 503 at once while requests wait longer than this (0: never)",
    )
    parser.add_argument(
        "--bounds-tolerance",
        type=float,
        default=0.1,
        help="refuse observations beyond the observation space by more than this share of "
        "its range (0.1; 0: exactly within; inf: never refuse)",
    )
    return parser


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except socket.gaierror as err:
            raise UserError(
                f"cannot listen on {host} ({err.strerror}): choose another --host"
            ) from None
        except OverflowError:
            raise UserError(f"--port {port} is not a port: choose one from 1 to 65535") from None
        except OSError as err:
            raise UserError(
                f"cannot listen on {host}:{port} ({err.strerror}): choose another --port"
            ) from None


def main(argv: Sequence[str] | None = None) -> int:
    """The console script; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from rlbench.serve.server import (
        OVERLOADED,
        DecisionServer,
        ServeSettings,
        load_policy,
        make_app,
    )

    settings = ServeSettings(
        model_uri=args.model_uri,
        tracking_uri=args.tracking_uri,
        host=args.host,
        port=args.port,
        capacity=args.capacity,
        max_batch=args.max_batch,
        max_rows=args.max_rows,
        poll_interval=args.poll_interval,
        shed_after_ms=args.shed_after_ms,
        bounds_tolerance=args.bounds_tolerance,
    )
    try:
        settings.check()
        _check_port(settings.host, settings.port)
        policy = load_policy(settings.model_uri, settings.tracking_uri)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    import torch
    import uvicorn

    from rlbench.serve.shedding import shedding_protocol

    torch.set_num_threads(1)
    server = DecisionServer(settings, policy)
    app = make_app(server)
    # everything loaded so far (MLflow, torch, the policy: millions of objects) lives as long
    # as the server: out of the collector's sight, a full collection no longer stalls answers
    gc.collect()
    gc.freeze()
    logging.getLogger(__name__).info(
        "serving %s version %s on http://%s:%d", policy.name, policy.version, args.host, args.port
    )
    # no proxy-header middleware (one more ASGI layer per request; we bind loopback by
    # default) and no access log: a burst is answered 503 by the thousand, cheaply
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        http=shedding_protocol(server, OVERLOADED),
    )
    stopping = _graceful_server(uvicorn)(config)
    stopping.run()
    if not stopping.started and stopping.stopped_by is None:  # uvicorn logged why
        raise UserError(f"the server did not start on {args.host}:{args.port} (see above)")
    if stopping.stopped_by == signal.SIGINT:
        raise KeyboardInterrupt  # "interrupted", exit 130 (cli.run_app)
    return 0


def _graceful_server(uvicorn: Any) -> type:
    """uvicorn's server, remembering the signal that stopped it instead of raising it again
    once stopped: uvicorn's run() swallows Ctrl-C (exit 0, no word) and re-raises SIGTERM at
    itself (exit 143, as if killed mid-request, after a clean stop)."""

    class GracefulServer(uvicorn.Server):
        stopped_by: int | None = None

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.stopped_by is None:
                self.stopped_by = sig
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C: stop waiting for requests
            else:
                self.should_exit = True

    return GracefulServer


def console() -> None:
    """The installed script: mistakes, Ctrl-C and failures as one line (``cli.run_app``)."""
    cli.run_app(lambda: sys.exit(main()))


if __name__ == "__main__":
    console()
