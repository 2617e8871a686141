"""``rlbench-registry``: put trained policies in the MLflow Model Registry and move their aliases.

    rlbench-registry register RUN_ID NAME --reason "beats threshold on spike"
    rlbench-registry list [NAME]
    rlbench-registry promote NAME [VERSION] --reason "..."   # challenger (or VERSION) -> champion
    rlbench-registry rollback NAME --reason "..."            # champion -> the version it replaced

The store is ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///outputs/mlflow.db``.
Bad input is one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from rlbench import cli
from rlbench.cli import EXIT_USER_ERROR
from rlbench.errors import UserError

STORE_HELP = "MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db)"


def _parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="rlbench-registry",
        description="Register trained policies as MLflow models; promote and roll back versions.",
    )
    parser.add_argument("--tracking-uri", default=None, help=STORE_HELP)
    # the store may also follow the subcommand (rlbench-registry list --tracking-uri URI)
    store = cli.ArgumentParser(add_help=False)
    store.add_argument("--tracking-uri", default=argparse.SUPPRESS, help=STORE_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    reg = sub.add_parser(
        "register", parents=[store], help="register a run's final model as a new version"
    )
    reg.add_argument("run_id")
    reg.add_argument("name")
    reg.add_argument("--reason", default=None)
    listing = sub.add_parser("list", parents=[store], help="versions with their aliases")
    listing.add_argument("name", nargs="?")
    pro = sub.add_parser(
        "promote", parents=[store], help="make a version (default: the challenger) champion"
    )
    pro.add_argument("name")
    pro.add_argument("version", nargs="?")
    pro.add_argument("--reason", default=None)
    back = sub.add_parser(
        "rollback", parents=[store], help="make the replaced version champion again"
    )
    back.add_argument("name")
    back.add_argument("--reason", default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The console script; returns the exit code."""
    args = _parser().parse_args(argv)
    for noisy in ("mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from rlbench.tracking import registry

    uri = args.tracking_uri
    try:
        if args.command == "register":
            done = [registry.register(args.run_id, args.name, args.reason, uri)]
        elif args.command == "promote":
            done = [registry.promote(args.name, args.version, args.reason, uri)]
        elif args.command == "rollback":
            done = [registry.rollback(args.name, args.reason, uri)]
        else:
            done = registry.versions(args.name, uri)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    for v in done:
        aliases = ",".join(v.aliases) or "-"
        print(f"{v.name}  version {v.version}  {aliases:<20}  run {v.run_id}  {v.created}")
    return 0


def console() -> None:
    """The installed script: mistakes, Ctrl-C and failures as one line (``cli.run_app``)."""
    cli.run_app(lambda: sys.exit(main()))


if __name__ == "__main__":
    console()
