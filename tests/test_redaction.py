"""Passwords in storage or server URLs never reach MLflow, where the whole team reads runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_train import artifact_paths, rlbench_train

from rlbench.tracking import make_tracker
from rlbench.tracking.redaction import mask_passwords

SECRET_URL = "postgresql+psycopg2://alice:s3cr%40t@db.example.org:5432/optuna"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SECRET_URL, "postgresql+psycopg2://alice:***@db.example.org:5432/optuna"),
        ("++trial.storage='mysql://root:pw@127.0.0.1/x' seed=3",
         "++trial.storage='mysql://root:***@127.0.0.1/x' seed=3"),
        ("a http://u:p@h:5000 and https://v:q@k/", "a http://u:***@h:5000 and https://v:***@k/"),
        ("sqlite:///outputs/optuna.db", "sqlite:///outputs/optuna.db"),  # nothing to hide
        ("http://127.0.0.1:5000/path@x", "http://127.0.0.1:5000/path@x"),  # a port, not a password
        ("https://user@host/x", "https://user@host/x"),  # a user without a password
        # a secret query value in a sentence leaves the sentence's punctuation (it ate ':')
        ("Optuna study 's' in postgresql://h/popt?password=pw: 1 trials in total",
         "Optuna study 's' in postgresql://h/popt?password=***: 1 trials in total"),
        ("at https://h/x?token=abc, then (postgresql://h/d?sslmode=a&password=p) done.",
         "at https://h/x?token=***, then (postgresql://h/d?sslmode=a&password=***) done."),
        ("postgresql://h/popt?password=pw:x", "postgresql://h/popt?password=***"),  # one URL
        ("postgresql://h/popt?password=pw:", "postgresql://h/popt?password=***"),  # its end too
    ],
)  # fmt: skip
def test_mask_passwords(text, expected):
    assert mask_passwords(text) == expected


def test_the_tracker_masks_params_tags_and_errors(mlflow_store):
    tracker = make_tracker(mlflow_store.tracking_cfg(background=False))
    run_id = tracker.start(
        "job", params={"trial.storage": SECRET_URL}, tags={"hydra.overrides": f"x={SECRET_URL}"}
    )
    tracker.set_tags({"later": SECRET_URL})
    tracker.end("FAILED", f"OperationalError: cannot connect to {SECRET_URL}")
    run = mlflow_store.client().get_run(run_id)
    recorded = [*run.data.params.values(), *run.data.tags.values()]
    assert not [v for v in recorded if "s3cr" in v], recorded
    assert run.data.params["trial.storage"] == mask_passwords(SECRET_URL)
    assert run.data.tags["error"].endswith(mask_passwords(SECRET_URL))


@pytest.mark.slow
def test_a_training_run_records_no_password(mlflow_store, tmp_path):
    proc = rlbench_train(
        "algo=threshold", "debug=fast", f"+tracking.tags.source={SECRET_URL}",
        *mlflow_store.overrides(), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = mlflow_store.runs()
    recorded = {**run.data.params, **run.data.tags}
    assert {k: v for k, v in recorded.items() if "s3cr" in v} == {}
    assert run.data.tags["source"] == mask_passwords(SECRET_URL)  # masked, not dropped
    client = mlflow_store.client()
    assert "config.yaml" in artifact_paths(client, run.info.run_id)
    config = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path)))
    assert "s3cr" not in config.read_text() and "alice:***@" in config.read_text()


@pytest.mark.slow
def test_a_sweep_records_no_password(mlflow_store, tmp_path):
    """The fixed overrides of a sweep reach each trial's run and the parent's trials.csv."""
    proc = rlbench_train(
        "-m", "search=threshold", "hydra.sweeper.n_trials=2", "debug=fast",
        "++eval.trajectory_plot=false", f"+tracking.tags.source={SECRET_URL}",
        f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db", *mlflow_store.overrides(),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = mlflow_store.client()
    runs = mlflow_store.runs()
    assert len(runs) == 3  # the parent and two trials
    for run in runs:
        recorded = {**run.data.params, **run.data.tags}
        assert {k: v for k, v in recorded.items() if "s3cr" in v} == {}
    (parent,) = [r for r in runs if r.data.tags.get("rlbench.sweep.role") == "parent"]
    table = Path(client.download_artifacts(parent.info.run_id, "optuna/trials.csv", str(tmp_path)))
    text = table.read_text()
    # the sweep's overrides name the environment variable that holds the password
    assert "alice:${oc.env:RLBENCH_SECRET_" in text and "s3cr" not in text


def test_a_raw_at_sign_in_a_password_is_named_not_shown():
    """postgresql://u:pa@ss@host/db: SQLAlchemy reads 'ss@host' as the host; the message
    must not show that tail of the password, and should say how to write the URL."""
    from rlbench.tracking.databases import server_message

    said = server_message(
        OSError("could not translate host name: name or service not known"),
        "postgresql://team:Hid@Den77@db.internal:5432/optuna",
    )
    assert said is not None and "Den77" not in said
    assert "%40" in said
