"""``rlbench-verify``: check that every model logged in an experiment still loads and acts.

    rlbench-verify                                   # every run of experiment rlbench
    rlbench-verify --filter "params.algo.name = 'ppo'" --tracking-uri sqlite:///outputs/mlflow.db

For every file under a run's ``model/`` artifacts: download it, rebuild the run's environment from
its logged ``config.yaml`` (else its ``env.*`` params), ``load_agent`` it, check that it predicts
one valid action per environment copy, and run an evaluation: the scored model (``model``: the
final weights, or with ``eval.policy=best`` the validation-selected ones) replays the run's
logged evaluation episodes (``eval/eval_episodes.csv``) and must reproduce their returns; other
models (``best_model``, ``last_model``) run one episode and must give a finite return. Prints a
pass/fail table with reasons; exit code 1 if any model fails, 2 when there is nothing to verify.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlbench import cli
from rlbench.errors import UserError, first_line
from rlbench.tracking.schema import (
    CONFIG_ARTIFACT,
    EPISODES_ARTIFACT,
    FORECASTER_TAG,
    MODEL_DIR,
    MODEL_STEM,
    PRUNED_TAG,
)

RETURN_TOLERANCE = 1e-6  # relative; the replay is the same computation, so it matches exactly


@dataclass
class Check:
    """The verdict on one model file."""

    run_id: str
    run_name: str
    algo: str
    task: str
    model: str
    ok: bool
    detail: str


def _parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="rlbench-verify",
        description="Load every model logged in an MLflow experiment, check it predicts valid "
        "actions and reproduces its logged evaluation; exit 1 if any fails.",
    )
    parser.add_argument("--experiment", default="rlbench", help="MLflow experiment (rlbench)")
    parser.add_argument(
        "--filter", default=None, help="MLflow filter string, e.g. \"tags.benchmark = 'quick'\""
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store; wins over MLFLOW_TRACKING_URI, which wins over the default "
        "sqlite:///outputs/mlflow.db",
    )
    parser.add_argument("--device", default="cpu", help="torch device for neural agents (cpu)")
    return parser


# --------------------------------------------------------------------------- one model
def _run_config(client: Any, run: dict[str, Any], tmp: Path) -> Any:
    """The run's resolved config: its ``config.yaml`` artifact, else rebuilt from its params."""
    import yaml
    from omegaconf import OmegaConf

    try:
        path = client.download_artifacts(run["run_id"], CONFIG_ARTIFACT, str(tmp))
        return OmegaConf.load(path)
    except Exception:  # no such artifact: fall back to the params (values as YAML scalars)
        pass
    tree: dict[str, Any] = {}
    for key, value in run.items():
        if not key.startswith("params.") or value is None or value != value:  # NaN: not logged
            continue
        node = tree
        *parents, leaf = key.removeprefix("params.").split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(str(value)) if isinstance(value, str) else value
    return OmegaConf.create(tree)


def _logged_episodes(client: Any, run_id: str, tmp: Path) -> Any:
    """The run's logged evaluation episodes; ``ValueError`` when the file is missing or
    unreadable (a scored model must reproduce what it logged, so there must be something)."""
    import pandas as pd

    try:
        path = client.download_artifacts(run_id, EPISODES_ARTIFACT, str(tmp))
    except Exception:
        raise ValueError(f"its logged evaluation {EPISODES_ARTIFACT} is missing") from None
    try:
        episodes = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise ValueError(f"{EPISODES_ARTIFACT} is unreadable ({first_line(err)})") from None
    if not {"seed", "return"} <= set(episodes.columns) or episodes.empty:
        raise ValueError(f"{EPISODES_ARTIFACT} has no seed and return columns or no rows")
    return episodes


def _eval_seeds(cfg: Any, logged: Any) -> list[int]:
    from rlbench.run.evaluate import evaluation_seeds

    if logged is not None and "seed" in logged and len(logged):
        return [int(s) for s in logged["seed"]]
    seed = int(cfg.get("seed", 0) or 0)
    offset = int(cfg.get("eval", {}).get("seed_offset", 1_000_000))
    return evaluation_seeds(seed, 1, offset)


def verify_model(client: Any, run: dict[str, Any], artifact: str, device: str = "cpu") -> str:
    """Check one model file; returns what passed, raises with the reason when it fails."""
    import numpy as np

    from rlbench.agents import load_agent
    from rlbench.config import env_spec
    from rlbench.envs import make_vec
    from rlbench.run.evaluate import evaluate

    with tempfile.TemporaryDirectory(prefix="rlbench-verify-") as tmp:
        tmp = Path(tmp)
        cfg = _run_config(client, run, tmp / "config")
        if "env" not in cfg:
            raise ValueError("the run logged neither config.yaml nor env.* params")
        env_id, env_kwargs = env_spec(cfg.env)
        env_kwargs = _trained_forecaster_env(client, run, env_kwargs)
        # a final model must reproduce what it logged; a pruned trial stopped before its test
        pruned = str(run.get(f"tags.{PRUNED_TAG}")).lower() == "true"
        final = Path(artifact).stem == MODEL_STEM and not pruned
        logged = _logged_episodes(client, run["run_id"], tmp / "episodes") if final else None
        seeds = _eval_seeds(cfg, logged)
        if logged is None:
            seeds = seeds[:1]
        path = client.download_artifacts(run["run_id"], artifact, str(tmp / "model"))
        venv = make_vec(env_id, len(seeds), seed=seeds[0], **env_kwargs)
        try:
            actions = np.asarray(load_agent(path, venv, device).predict(venv.reset()))
        except UserError as err:  # name the artifact, not the temporary download
            raise UserError(str(err).replace(str(path), artifact)) from None
        finally:
            venv.close()
        if actions.shape[:1] != (len(seeds),):
            raise ValueError(f"predict gave shape {actions.shape} for {len(seeds)} observations")
        bad = [a for a in actions if not venv.action_space.contains(a)]
        if bad:
            raise ValueError(f"invalid action {bad[0]!r} for action space {venv.action_space}")
        # a fresh copy for the replay: predicting advances state (random's generator, cooldowns)
        agent = load_agent(path, make_vec(env_id, 1, **env_kwargs), device)
        result = evaluate(agent, env_id, env_kwargs, seeds, deterministic=True)
        returns = np.asarray(result.returns, dtype=float)
        if not np.all(np.isfinite(returns)):
            raise ValueError(f"evaluation return is not finite: {returns.tolist()}")
        if logged is None:
            return f"valid actions; 1 episode, return {returns[0]:.6g} (no logged return to match)"
        expected = logged["return"].to_numpy(dtype=float)
        tol = RETURN_TOLERANCE * np.maximum(1.0, np.abs(expected))
        off = np.flatnonzero(np.abs(returns - expected) > tol)
        if off.size:
            i = int(off[0])
            raise ValueError(
                f"does not reproduce its logged evaluation: episode {i} (seed {seeds[i]}) "
                f"returned {returns[i]:.6g}, logged {expected[i]:.6g}"
            )
        return (
            f"valid actions; reproduces its {len(seeds)} logged evaluation episodes "
            f"(mean return {returns.mean():.6g})"
        )


def _trained_forecaster_env(client: Any, run: dict[str, Any], env_kwargs: dict) -> dict:
    """``env_kwargs`` reading the forecaster the run trained with (by its recorded weights),
    from the run's own store: an alias that moved on would replay another observation."""
    from rlbench.forecast.registry import pin_policy_forecaster

    digest = str(run.get(f"tags.{FORECASTER_TAG}") or "").removeprefix("sha256:") or None
    return pin_policy_forecaster(env_kwargs, digest, client.tracking_uri).local_kwargs


def _reason(err: BaseException) -> str:
    """The error's first line, named by its type unless it is ours or a plain ValueError."""
    kind = (
        "" if isinstance(err, UserError) or type(err) is ValueError else f"{type(err).__name__}: "
    )
    return kind + first_line(err)


# --------------------------------------------------------------------------- all models
def verify_experiment(
    experiment: str = "rlbench",
    filter: str | None = None,
    tracking_uri: str | None = None,
    device: str = "cpu",
) -> list[Check]:
    """A :class:`Check` per model file of every run in ``experiment`` (reports excluded)."""
    from rlbench.results.analysis import load_runs, open_store
    from rlbench.results.progress import phase
    from rlbench.results.stores import reading_store

    with phase(f"loading the runs of experiment {experiment!r}"):
        runs = load_runs(experiment, filter, tracking_uri)
    uri = runs.attrs["tracking_uri"]
    checks: list[Check] = []
    with (
        reading_store(uri),
        phase(
            f"verifying the models of {len(runs)} runs",
            lambda: f"{len(checks)} models checked",
        ),
    ):
        _verify_runs(open_store(uri), runs, device, checks)
    if not checks:
        where = f"experiment {experiment!r}" + (f" (filter {filter!r})" if filter else "")
        raise UserError(f"no run of {where} logged a model under {MODEL_DIR}/: nothing to verify")
    return checks


def _verify_runs(client: Any, runs: Any, device: str, checks: list[Check]) -> None:
    """Append a :class:`Check` per model file of ``runs`` to ``checks`` (read as it grows)."""
    for run in runs.to_dict("records"):
        try:
            files = [f for f in client.list_artifacts(run["run_id"], MODEL_DIR) if not f.is_dir]
        except Exception as err:
            files = []
            checks.append(_check(run, MODEL_DIR, False, f"cannot list artifacts: {_reason(err)}"))
        trained = run.get("status") == "FINISHED" and _present(run.get("algo"))
        if not files and trained and _present(run.get("score")):  # scored, yet no model
            checks.append(_check(run, MODEL_DIR, False, "no model logged under model/"))
        for info in files:
            try:
                detail, ok = verify_model(client, run, info.path, device), True
            except (UserError, ValueError, RuntimeError, OSError, KeyError, TypeError) as err:
                detail, ok = _reason(err), False
            checks.append(_check(run, info.path, ok, detail))


def _present(value: Any) -> bool:
    import pandas as pd

    return not pd.isna(value)


def _check(run: dict[str, Any], model: str, ok: bool, detail: str) -> Check:
    def text(value: Any) -> str:
        return (
            "-" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
        )

    task = text(run.get("env")) + ("" if text(run.get("load")) in ("-",) else f"/{run['load']}")
    return Check(
        run_id=run["run_id"],
        run_name=text(run.get("run_name")),
        algo=text(run.get("algo")),
        task=task,
        model=model,
        ok=ok,
        detail=detail,
    )


def format_table(checks: Sequence[Check]) -> str:
    """The pass/fail table, one line per model, then a count."""
    header = ("result", "run", "name", "algo", "env", "model", "detail")
    rows = [
        ("PASS" if c.ok else "FAIL", c.run_id[:8], c.run_name, c.algo, c.task, c.model, c.detail)
        for c in checks
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in [header, *rows]
    ]
    failed = sum(not c.ok for c in checks)
    lines.append(f"{len(checks)} models: {len(checks) - failed} passed, {failed} failed")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``rlbench-verify``; returns the exit code: 0 all pass, 1 a model failed, 2 bad input."""
    from rlbench.tracking.redaction import mask_passwords

    try:
        args = _parser().parse_args(argv)
        from rlbench.agents.device import resolve_device

        device = resolve_device(args.device)  # a device this machine lacks: one line, first
        checks = verify_experiment(args.experiment, args.filter, args.tracking_uri, device)
    except UserError as err:
        print(f"error: {mask_passwords(str(err))}", file=sys.stderr)
        return 2
    print(mask_passwords(format_table(checks)))
    return 1 if any(not c.ok for c in checks) else 0


def console() -> None:
    """The installed command: :func:`main`, then a quick exit (:func:`rlbench.cli.console`)."""
    cli.console(main)


if __name__ == "__main__":  # python -m: the ordinary exit (profilers write on it)
    sys.exit(main())
