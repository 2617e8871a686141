"""``rlbench-live-ctl``: a user's commands to a live session and to its script scheduler.

    rlbench-live-ctl run backup --session sched                 # run it now, by hand
    rlbench-live-ctl increase backup --session sched            # "run it more often"
    rlbench-live-ctl decrease backup --workdir live/scheduler   # "run it less often"
    rlbench-live-ctl kill --session demo       # the kill switch: the fallback rule acts
    rlbench-live-ctl release --session demo    # the champion acts again
    rlbench-live-ctl retrain --session demo    # a retraining now (the file trigger)
    rlbench-live-ctl approve --session demo    # promote the challenger waiting for approval
    rlbench-live-ctl reject --session demo     # or refuse it

Session verbs create or remove a file in the session's ``control/`` folder
(:data:`rlbench.live.loop.CONTROL_FILES`), which the session reads between decisions (the kill
switch every ``CONTROL_EVERY_S``: the next decision of any system slower than that obeys it).

What it owns: the command line. The protocol (a command is a file renamed into the script's
command folder; the adapter applies it exactly once) is :mod:`rlbench.live.scheduler`'s, which
writes and reads it (:func:`~rlbench.live.scheduler.send_command`). Layer 7
(:mod:`rlbench.live`): may import anything in rlbench.

``run`` counts as a manual run (the simulator's manual run); ``increase`` is the preference
signal +1 ("run more often"), ``decrease`` is -1 ("run less often"), the sign convention of
``rlbench/ScriptScheduler-v0``. Mistakes (an unknown verb or script) are one ``error:`` line and
exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rlbench import cli
from rlbench.errors import UserError
from rlbench.live.scheduler import VERBS, WORKDIR_ENV, known_scripts, load_schedule, send_command
from rlbench.tracking import schema
from rlbench.tracking.provenance import process_alive

LIVE_ROOT = "outputs/live"  # where sessions live (conf_live/live.yaml: folder)
#: session verb -> the control file it creates (release removes kill)
SESSION_VERBS = {"kill": "kill", "release": "kill", "retrain": "retrain", "approve": "approve",
                 "reject": "reject"}  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="rlbench-live-ctl",
        description="Send a command to a script of the live scheduler (rlbench-live).",
    )
    p.add_argument("verb", choices=list(VERBS) + list(SESSION_VERBS), help="run: run a "
                   "script now by hand; increase: run it more often; decrease: less often; "
                   "kill/release: the kill switch on/off; retrain: a retraining now; "
                   "approve/reject: the challenger waiting for approval")  # fmt: skip
    p.add_argument("script", nargs="?", help="the script's name (run, increase, decrease)")
    p.add_argument("--session", default=None, help="the session's name (its folder is "
                   f"{LIVE_ROOT}/NAME); the scheduler's working folder is inside it")  # fmt: skip
    p.add_argument("--folder", default=None, help="the session's folder, when not the default")
    p.add_argument(
        "--workdir",
        default=None,
        help=f"the scheduler's working folder (default: the session's, else ${WORKDIR_ENV} or .)",
    )
    p.add_argument("--schedule", default=None, help="the schedule file: lets a command be "
                   "queued before the adapter has started")  # fmt: skip
    return p


def command(argv: Sequence[str]) -> None:
    """Check the script exists, queue the command, say where it went."""
    args = parser().parse_args(argv)
    folder = Path(args.folder) if args.folder else (
        Path(LIVE_ROOT) / args.session if args.session else None
    )  # fmt: skip
    if args.verb in SESSION_VERBS:
        return _session_command(args.verb, folder)
    if not args.script:
        raise UserError(f"{args.verb} needs a SCRIPT: rlbench-live-ctl {args.verb} SCRIPT")
    if args.workdir is None:
        args.workdir = str(folder / "scheduler") if folder else os.environ.get(WORKDIR_ENV, ".")
    if args.schedule is not None:
        scripts = [spec.name for spec in load_schedule(args.schedule)]
        where = f"the schedule {args.schedule}"
    else:
        scripts = known_scripts(args.workdir)
        where = f"--workdir {args.workdir}"
        if not scripts:
            raise UserError(
                f"no scheduled scripts under --workdir {args.workdir}: start rlbench-live with "
                "the scheduler adapter there first, or pass --schedule FILE"
            )
    if args.script not in scripts:
        raise UserError(
            f"unknown script {args.script!r}{cli.did_you_mean(args.script, scripts)}; "
            f"scripts in {where}: {', '.join(scripts)}"
        )
    path = send_command(args.workdir, args.script, args.verb)
    print(f"queued {args.verb} for {args.script} ({path})")


def _session_command(verb: str, folder: Path | None) -> None:
    if folder is None:
        raise UserError(f"{verb} acts on a session: name it with --session NAME or --folder DIR")
    if not (folder / schema.LIVE_STATE_FILE).exists():
        raise UserError(f"{folder}: no live session there (no {schema.LIVE_STATE_FILE})")
    control = folder / "control"
    control.mkdir(exist_ok=True)
    if verb == "release":
        (control / "kill").unlink(missing_ok=True)
        print(f"kill switch off for {folder}: the champion acts again")
        return
    if verb in ("approve", "reject"):
        version = _awaiting(folder, control)
        verb_said = f"{verb} v{version}"
    else:
        verb_said = verb
    (control / SESSION_VERBS[verb]).touch()
    print(f"{verb_said}: {control / SESSION_VERBS[verb]}{_waits(verb, folder)}")


def _waits(verb: str, folder: Path) -> str:
    """Why a retraining asked for now waits (a challenger is on trial: one at a time), as the
    session's saved state says; "" when it does not."""
    if verb != "retrain":
        return ""
    try:
        state = json.loads((folder / schema.LIVE_STATE_FILE).read_text())
    except (OSError, ValueError):
        return ""
    for phase in ("canary", "shadow"):
        trial = state.get(phase) if isinstance(state, dict) else None
        if isinstance(trial, dict):
            return (
                f" (v{trial.get('version')} is in its {phase}: the retraining starts when that "
                "ends, one challenger at a time)"
            )
    return ""


def _awaiting(folder: Path, control: Path) -> str:
    """The version waiting for approval; UserError when none waits, or when the session that
    waited is no longer running (killed: the file outlived it, and an answer would be read by
    nobody; its next start runs the interrupted retraining again)."""
    try:
        version, _, owner = (control / schema.LIVE_AWAITING_FILE).read_text().partition("\n")
    except FileNotFoundError:
        raise UserError(
            f"{folder}: no challenger is waiting for approval (one waits only while its "
            "session runs with gate.approval=true and it has passed the gate)"
        ) from None
    owner = owner.strip()
    if owner and not process_alive(owner):  # a file of an older rlbench-live names no process
        raise UserError(
            f"{folder}: no session is running there (v{version.strip()} waited for approval in "
            f"process {owner.partition(':')[0]}, which has ended): rerun its rlbench-live "
            "command; the interrupted retraining runs again and its challenger waits anew"
        )
    return version.strip()


def main(argv: Sequence[str] | None = None) -> None:
    """The ``rlbench-live-ctl`` console script (``argv`` for in-process callers)."""
    cli.run_app(lambda: command(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
