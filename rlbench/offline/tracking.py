"""An interaction log as an MLflow dataset input of the runs that train or evaluate on it.

MLflow's dataset entity holds a name, a content digest, a source and a schema; the log itself
stays where it is (append-only files are their own store), so the input records where it was
and exactly which decisions were read: two runs on the same digest saw the same data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlbench.errors import UserError, first_line
from rlbench.offline.log import COLUMNS, InteractionLog
from rlbench.tracking import schema


def dataset_entity(data: InteractionLog, path: str | Path) -> Any:
    """The MLflow ``Dataset`` entity describing ``data`` read from ``path``."""
    from mlflow.entities import Dataset

    source = {"uri": str(Path(path).resolve()), "files": len(data.files)}
    profile = {
        "decisions": len(data),
        "episodes": data.n_episodes,
        "first_ts": float(data.ts.min()),
        "last_ts": float(data.ts.max()),
        "torn_lines_skipped": data.torn,
    }
    table = {
        "env_id": data.env_id,
        "obs_shape": list(data.obs_shape),
        "n_actions": data.n_actions,
        "columns": list(COLUMNS),
    }
    return Dataset(
        name=f"{Path(path).name or 'log'} ({data.env_id})",
        digest=data.dataset_digest(),
        source_type=schema.LOG_SOURCE_TYPE,
        source=json.dumps(source),
        schema=json.dumps(table),
        profile=json.dumps(profile),
    )


def log_dataset_input(
    uri: str, run_id: str, data: InteractionLog, path: str | Path, context: str
) -> None:
    """Record ``data`` as a dataset input of run ``run_id`` with the role ``context``."""
    from mlflow.entities import DatasetInput, InputTag

    from rlbench.tracking.client import mlflow_client

    try:
        mlflow_client(uri).log_inputs(
            run_id,
            datasets=[
                DatasetInput(
                    dataset_entity(data, path),
                    tags=[InputTag(schema.DATASET_CONTEXT_TAG, context)],
                )
            ],
        )
    except UserError:
        raise
    except Exception as err:  # MLflow raises several kinds
        raise UserError(f"cannot record the log on run {run_id}: {first_line(err)}") from None


def record_evaluation(
    uri: str | None, data: InteractionLog, path: str | Path, rows: list, settings: dict
) -> str:
    """One MLflow run of an off-policy evaluation: the settings as params, every estimate and
    interval (and the share of undefined bootstrap replicates, when not 0) as ``ope/...``
    metrics, the table with its notes as ``ope.csv``, the log as its dataset input."""
    import csv
    import tempfile

    from rlbench.tracking.client import mlflow_call, resolve_tracking_uri
    from rlbench.tracking.provenance import provenance_tags
    from rlbench.tracking.store import artifact_uri, sqlite_path, store_for
    from rlbench.tracking.tracker import DEFAULT_ARTIFACTS

    uri = resolve_tracking_uri(uri)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)  # a first evaluation creates the store
    # the training runs' store path: created atomically, experiment tagged for the MLflow UI
    store = store_for(uri)
    client = store.client
    # a new experiment keeps its artifacts where training's do (not ./mlruns of the cwd)
    location = artifact_uri(DEFAULT_ARTIFACTS, uri)
    exp = mlflow_call(uri, "finding the experiment", store.prepare, "rlbench", location)
    tags = provenance_tags() | {schema.KIND_TAG: schema.OPE_KIND}
    run = mlflow_call(
        uri, "starting the run", client.create_run, exp, tags=tags,
        run_name=f"ope-{Path(path).name}",
    )  # fmt: skip
    run_id = run.info.run_id
    try:
        for key, value in settings.items():
            client.log_param(run_id, key, str(value)[:500])
        for label, est in rows:
            key = label.replace(" - ", "_minus_").replace(" ", "_")
            share = est.undefined_share
            for part, value in (("", est.value), ("low", est.low), ("high", est.high),
                                ("undefined_share", share if share > 0 else None)):  # fmt: skip
                if value is not None and value == value:  # not NaN
                    client.log_metric(run_id, schema.ope_metric(key, est.name, part), value)
        with tempfile.TemporaryDirectory() as tmp:
            table = Path(tmp) / schema.OPE_TABLE_FILE
            with table.open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["policy", "estimator", "value", "low", "high", "undefined_share",
                            "notes"])  # fmt: skip
                w.writerows([label, e.name, e.value, e.low, e.high, e.undefined_share,
                             "; ".join(e.notes)] for label, e in rows)  # fmt: skip
            client.log_artifact(run_id, str(table))
        log_dataset_input(uri, run_id, data, path, schema.EVALUATION_CONTEXT)
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    return run_id
