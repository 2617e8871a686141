"""``rlbench-train``: compose a config, train (or ``+reproduce`` a logged run), print the score.

    rlbench-train env=autoscaling env.load=spike algo=ppo seed=3
    rlbench-train -m algo=threshold,qlearning seed=0,1
    rlbench-train --cfg job                 # show the composed config
    rlbench-train +reproduce=<run id>       # rerun a logged run, say whether it matched

The job itself is :func:`rlbench.run.train.train`; this module is the Hydra app around it: the
score line, and mistakes as one line with an exit code (:mod:`rlbench.cli`).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from rlbench import cli
from rlbench.config import CONF_DIR
from rlbench.errors import UserError
from rlbench.run import divergence
from rlbench.run.train import in_multirun, train
from rlbench.tracking.links import ui_command
from rlbench.tracking.redaction import MaskingStream

#: what store hints suggest: rlbench-train can also run without a store
STORE_OPTIONS = cli.StoreOptions("tracking.uri", off="tracking.enabled=false")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def app(cfg: DictConfig) -> float:
    """Hydra task: train, print the score and the MLflow run id, return the score."""
    cli.set_store_options(STORE_OPTIONS)  # here: a joblib worker runs this, not main()
    try:
        if OmegaConf.select(cfg, "reproduce") is not None:
            return _reproduce(cfg)
        outcome = train(cfg)
    except (UserError, divergence.TrainingDiverged) as err:
        if in_multirun() or cli.wants_traceback():
            raise  # a sweep records the failed job and goes on
        print(f"error: {err}", file=sys.stderr)
        sys.exit(cli.exit_code(err))
    note = "  (pruned)" if outcome.pruned else "  (finished before)" if outcome.reused else ""
    print(
        f"score: {outcome.score:.6g}  steps: {outcome.steps}  "
        f"mlflow run: {outcome.run_id or '(tracking off)'}{note}"
    )
    if outcome.url and not in_multirun():  # a grid's hundred links would bury its scores
        print(f"open in MLflow: {outcome.url}  ({ui_hint(cfg)})")
    return outcome.score


def ui_hint(cfg: DictConfig) -> str:
    """How to start the UI the link points at, for a SQLite store (a server serves its own)."""
    from rlbench.tracking.store import resolve_uri

    uri = resolve_uri(cfg.tracking.uri or None)  # the store the run went to ("" is the default)
    if not uri.startswith("sqlite:"):
        return "the tracking server's UI"
    return f"start it with: {ui_command(uri)}"


def _reproduce(cfg: DictConfig) -> float:
    """``+reproduce=<run id>``: exit 0 when the rerun matched the logged run, else 1."""
    from rlbench.run.reproduce import reproduce

    if in_multirun():
        raise UserError("+reproduce reruns one logged run: drop -m/--multirun")
    result = reproduce(cfg)
    print(result.summary())
    if not result.matched:
        sys.exit(cli.EXIT_FAILED)
    return result.score


def main() -> None:
    """The ``rlbench-train`` console script."""
    from rlbench.run import timing

    timing.expect_startup()  # the first job's time/startup_s is this process's start-up
    cli.run_app(app, wrap_stdout=MaskingStream, config=(CONF_DIR, "train"))


def console() -> None:
    """The installed ``rlbench-train``: :func:`main`, then a quick exit (``cli.console``)."""
    cli.console(main)


if __name__ == "__main__":  # python -m: the ordinary exit (profilers write on it)
    main()
