"""``rlbench-forecast``: train, evaluate and register the LSTM load forecaster.

    rlbench-forecast train                                   # ~30 s; tracked in MLflow
    rlbench-forecast train --traces day.csv --register load-forecaster --alias production
    rlbench-forecast train --no-tracking --out /tmp/f1 --epochs 3
    rlbench-forecast evaluate outputs/forecasters/<stamp>    # or models:/load-forecaster@latest

``train`` fits the LSTM on the training series (:mod:`rlbench.forecast.data`), scores it and
the seasonal-naive and last-value baselines on the held-out seeds, writes the forecaster folder
(``--out``), and records an MLflow run in experiment ``forecasting`` (params, the epochs' loss,
every MAE/MAPE, the folder as artifacts); ``--register NAME`` makes that folder a new version
of a registered model. ``evaluate`` prints the same table for any forecaster. Mistakes are one
``error:`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlbench import cli
from rlbench.config import SEED_MAX
from rlbench.errors import UserError

DEFAULT_OUT = Path("outputs") / "forecasters"


def parser() -> argparse.ArgumentParser:
    from rlbench.forecast import data, lstm

    defaults = lstm.TrainConfig()
    p = cli.ArgumentParser(
        prog="rlbench-forecast",
        description="Train, evaluate and register the LSTM load forecaster (docs/forecasting.md).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,evaluate}")
    t = sub.add_parser("train", help="train a forecaster, score it, track and register it")
    t.add_argument(
        "--patterns",
        nargs="+",
        default=list(data.PATTERNS),
        metavar="PATTERN",
        help=f"built-in load patterns to learn (default: {' '.join(data.PATTERNS)})",
    )
    _traces_option(t)
    t.add_argument("--window", type=int, default=defaults.window, help="past loads read")
    t.add_argument("--steps", type=int, default=defaults.steps, help="future loads predicted")
    t.add_argument("--hidden", type=int, default=defaults.hidden, help="LSTM units")
    t.add_argument(
        "--epochs",
        type=int,
        default=defaults.epochs,
        help=f"passes over the training windows (default {defaults.epochs}, ~30 s)",
    )
    t.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="also stop at the first epoch's end after this many seconds "
        "(the result then depends on the machine's speed)",
    )
    t.add_argument("--batch-size", type=int, default=defaults.batch_size)
    t.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    t.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="fixes the initialisation and the shuffling (the data's seeds are fixed)",
    )
    t.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"the forecaster folder (default {DEFAULT_OUT}/<date-time>)",
    )
    t.add_argument(
        "--register",
        metavar="NAME",
        nargs="?",
        const=_schema().FORECAST_MODEL_NAME,
        default=None,
        help="register the forecaster as a new version of model NAME "
        f"(default {_schema().FORECAST_MODEL_NAME})",
    )
    t.add_argument("--alias", default=None, help="with --register: point this alias at it")
    t.add_argument("--experiment", default=_schema().FORECAST_EXPERIMENT, help="MLflow experiment")
    store = t.add_mutually_exclusive_group()
    store.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db)",
    )
    store.add_argument("--no-tracking", action="store_true", help="record no MLflow run")
    e = sub.add_parser("evaluate", help="MAE/MAPE of a forecaster against the baselines")
    e.add_argument("model", help="a forecaster folder or models:/NAME@ALIAS, models:/NAME/VERSION")
    e.add_argument("--patterns", nargs="+", default=list(data.PATTERNS), metavar="PATTERN")
    _traces_option(e)
    e.add_argument("--tracking-uri", default=None, help="the MLflow store of a models:/ name")
    return p


def _traces_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--traces",
        nargs="+",
        default=[],
        metavar="CSV",
        help="request-count traces, one number per row (as env.trace_path)",
    )


def _schema() -> Any:
    from rlbench.tracking import schema

    return schema


def _check(args: argparse.Namespace) -> None:
    from rlbench.forecast.data import PERIOD

    for key in ("window", "steps", "hidden", "epochs", "batch_size"):
        if getattr(args, key) < 1:
            raise UserError(f"--{key.replace('_', '-')} must be an integer >= 1")
    if args.steps > PERIOD:
        raise UserError(f"--steps must be <= {PERIOD} (the period the baselines need)")
    from rlbench.forecast.data import EVAL_PERIODS, TRAIN_PERIODS

    longest = min(TRAIN_PERIODS, EVAL_PERIODS) * PERIOD - args.steps  # held-out series too
    if args.window > longest:
        raise UserError(
            f"--window {args.window} leaves no window to learn or score: the series are "
            f"{min(TRAIN_PERIODS, EVAL_PERIODS) * PERIOD} steps, so --window + --steps must be "
            f"at most that (--window <= {longest})"
        )
    if not 0 <= args.seed <= SEED_MAX:  # rlbench's seed range (torch's ends at 2**64-1)
        raise UserError(f"--seed must be an integer from 0 to 2**63-1, got {args.seed}")
    if args.hidden > 4096:  # 4096 units: 64M weights per gate matrix, far past a load series
        raise UserError(f"--hidden must be at most 4096, got {args.hidden}")
    if not 0 < args.learning_rate <= 1:
        raise UserError(f"--learning-rate must be in (0, 1], got {args.learning_rate}")
    if args.seconds is not None and not args.seconds > 0:
        raise UserError("--seconds must be > 0")
    if args.register is not None and args.no_tracking:
        raise UserError("--register needs the MLflow run: drop --no-tracking")
    if args.alias is not None and args.register is None:
        raise UserError("--alias needs --register NAME")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file; give a folder")
    if args.out is not None:  # checked before minutes of training, not after
        existing = cli.nearest_existing(args.out)
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            raise UserError(f"--out {args.out}: cannot create it under {existing}; give a "
                            "writable folder")  # fmt: skip


def _progress(epoch: int, epochs: int, loss: float, elapsed: float) -> None:
    print(f"epoch {epoch}/{epochs}  loss {loss:.4f}  {elapsed:.1f} s", file=sys.stderr, flush=True)


def train_command(args: argparse.Namespace) -> int:
    from rlbench.envs.lstm_forecaster import LSTMForecaster, save_forecaster
    from rlbench.forecast import data, lstm, metrics
    from rlbench.forecast.registry import check_alias

    _check(args)
    check_alias(args.alias)
    patterns = data.check_patterns(args.patterns)
    traces = data.read_traces(args.traces)
    tracker = _tracker(args)  # MLflow warms up in a helper process while the model trains
    config = lstm.TrainConfig(
        window=args.window,
        steps=args.steps,
        hidden=args.hidden,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        max_seconds=args.seconds,
        period=float(data.PERIOD),
    )
    series = data.training_series(patterns, traces)
    result = lstm.train(series, config, _progress if sys.stderr.isatty() else None)
    meta = _meta(config, patterns, args.traces, result)
    forecaster = LSTMForecaster(result.weights, meta)
    scores = metrics.score(
        _contenders(forecaster), data.held_out_series(patterns, traces), args.steps
    )
    meta["metrics"] = metrics.as_dict(scores)
    out = args.out or DEFAULT_OUT / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    save_forecaster(out, result.weights, meta)
    print(metrics.table(scores))
    print(
        f"trained in {result.seconds:.1f} s ({result.epochs} epochs, {result.updates} updates, "
        f"{result.windows} windows); forecaster: {out}"
    )
    if tracker is not None:
        run_id = _record(tracker, args, config, meta, result, scores, out)
        print(f"MLflow run {run_id} (experiment {args.experiment!r})")
        if args.register:
            from rlbench.forecast.registry import register_forecaster

            version = register_forecaster(run_id, args.register, args.alias, tracker.uri)
            alias = f" (alias {args.alias})" if args.alias else ""
            print(f"registered models:/{args.register}/{version}{alias}")
    return 0


def _contenders(forecaster: Any) -> dict[str, Any]:
    from rlbench.envs.forecasters import LastValue, SeasonalNaive
    from rlbench.forecast.data import PERIOD

    steps = forecaster.steps
    return {
        "lstm": forecaster,
        "naive": SeasonalNaive(steps, PERIOD),
        "last_value": LastValue(steps),
    }


def _meta(config: Any, patterns: Sequence[str], traces: Sequence[str], result: Any) -> dict:
    from importlib.metadata import version

    from rlbench.forecast import data, lstm

    return {
        "window": config.window,
        "steps": config.steps,
        "hidden": config.hidden,
        "period": config.period,
        "scale": {"kind": "window mean", "floor": lstm.SCALE_FLOOR},
        "training": {
            "patterns": list(patterns),
            "traces": [str(Path(t).resolve()) for t in traces],
            "seeds": list(data.TRAIN_SEEDS),
            "noise": {
                "0": list(data.TRAIN_SEEDS),
                str(data.NOISY): list(data.TRAIN_SEEDS[: data.NOISY_TRAIN_SEEDS]),
            },
            "periods_per_series": data.TRAIN_PERIODS,
            "held_out_seeds": list(data.HELD_OUT_SEEDS),
            "epochs": result.epochs,
            "updates": result.updates,
            "windows": result.windows,
            "batch_size": config.batch_size,
            "learning_rate": config.learning_rate,
            "seed": config.seed,
            "seconds": round(result.seconds, 2),
            "final_loss": result.losses[-1] if result.losses else None,
            "torch": version("torch"),
        },
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _tracker(args: argparse.Namespace) -> Any:
    if args.no_tracking:
        return None
    from rlbench.tracking import make_tracker

    return make_tracker({"enabled": True, "uri": args.tracking_uri, "experiment": args.experiment})


def _record(
    tracker: Any,
    args: argparse.Namespace,
    config: Any,
    meta: dict,
    result: Any,
    scores: Sequence[Any],
    out: Path,
) -> str:
    from rlbench.tracking import schema

    training = meta["training"]
    params = {
        "window": config.window,
        "steps": config.steps,
        "hidden": config.hidden,
        "epochs": config.epochs,
        "max_seconds": config.max_seconds,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "seed": config.seed,
        "period": config.period,
        "patterns": " ".join(training["patterns"]),
        "traces": " ".join(training["traces"]),
        "train_seeds": json.dumps(training["seeds"]),
        "noise": json.dumps(training["noise"]),
        "held_out_seeds": json.dumps(training["held_out_seeds"]),
        "windows": result.windows,
    }
    tags = {schema.KIND_TAG: schema.FORECAST_KIND, schema.SEED_TAG: str(config.seed)}
    name = f"lstm-w{config.window}-k{config.steps}-h{config.hidden}-seed{config.seed}"
    with tracker:
        run_id = tracker.start(name, params, tags)
        for epoch, loss in enumerate(result.losses, start=1):
            tracker.log_metrics({schema.train_metric("loss"): loss}, step=epoch)
        tracker.log_metrics(
            {
                schema.train_metric("seconds"): result.seconds,
                schema.train_metric("updates"): result.updates,
            },
            step=result.epochs,
        )
        for s in scores:
            label = s.label.replace("/", "_")
            tracker.log_metrics(
                {
                    schema.forecast_metric(label, s.forecaster, "mae"): s.mae,
                    schema.forecast_metric(label, s.forecaster, "mape"): s.mape,
                },
                step=0,
            )
            for step, value in enumerate(s.mae_by_step, start=1):
                key = schema.forecast_metric(label, s.forecaster, "mae_by_step")
                tracker.log_metrics({key: value}, step=step)
        tracker.log_artifact(out, schema.FORECASTER_DIR)
    return run_id


def evaluate_command(args: argparse.Namespace) -> int:
    from rlbench.envs.lstm_forecaster import load_forecaster
    from rlbench.forecast import data, metrics

    patterns = data.check_patterns(args.patterns)
    traces = data.read_traces(args.traces)
    if args.model.startswith("models:/"):
        from rlbench.forecast.registry import local_model_dir

        folder = local_model_dir(args.model, args.tracking_uri)
    else:
        folder = Path(args.model).expanduser()
    forecaster = load_forecaster(folder)
    scores = metrics.score(
        _contenders(forecaster), data.held_out_series(patterns, traces), forecaster.steps
    )
    print(metrics.table(scores))
    return 0


COMMANDS = {"train": train_command, "evaluate": evaluate_command}


def main(argv: Sequence[str] | None = None) -> int:
    """The console script; returns the exit code (2: a mistake, said in one line)."""
    try:
        args = parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return cli.EXIT_INTERRUPTED
    except Exception as err:
        if cli.wants_traceback():
            raise
        code = cli.exit_code(err)
        print(f"error: {cli.describe(err)}", file=sys.stderr)
        if code == cli.EXIT_FAILED:
            print("(set HYDRA_FULL_ERROR=1 for the full traceback)", file=sys.stderr)
        return code


def console() -> None:
    """The installed command: :func:`main`, then a quick exit (:func:`rlbench.cli.console`)."""
    cli.console(main)


if __name__ == "__main__":  # python -m: the ordinary exit (profilers write on it)
    sys.exit(main())
