"""What people read about runs in MLflow's UI: links that open it on the runs, a run's name with
its score, its description, numbers without float noise.

MLflow 3's UI opens an experiment on its GenAI (traces) view unless told otherwise; the
``workflowType=machine_learning`` query parameter selects the model-training view, where the runs
are (the experiment's ``mlflow.experimentKind`` tag does the same for UI versions that read it).
Every link rlbench prints or writes comes from here, so all of them open on the runs.
"""

from __future__ import annotations

import math

from rlbench.tracking.redaction import split_credentials

DEFAULT_UI_URL = "http://127.0.0.1:5000"  # where `mlflow ui` listens by default
TRAINING_VIEW = "workflowType=machine_learning"  # the UI's "Model training" mode


def ui_url(setting: str | None, tracking_uri: str | None) -> str:
    """The MLflow UI's address: ``tracking.ui_url`` when set; else an http(s) store's own
    address (a tracking server serves its UI), without credentials; else ``mlflow ui``'s."""
    if setting:
        return str(setting).rstrip("/")
    uri = str(tracking_uri or "")
    if uri.startswith(("http://", "https://")):
        return split_credentials(uri)[0].rstrip("/")
    return DEFAULT_UI_URL


def ui_command(store: str) -> str:
    """The command that starts MLflow's UI on a SQLite store, as rlbench prints it. One worker
    starts in about half the time of four on a small machine; without its job runner (GenAI
    jobs rlbench never submits) an idle UI stops using about a core (docs/scale-out.md)."""
    no_jobs = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false"
    return f"{no_jobs} mlflow ui --workers 1 --backend-store-uri {store}"


def runs_url(ui: str, experiment_id: str) -> str:
    """The experiment's runs table, in training mode."""
    return f"{ui}/#/experiments/{experiment_id}/runs?{TRAINING_VIEW}"


def run_url(ui: str, experiment_id: str, run_id: str) -> str:
    """One run's page, in training mode."""
    return f"{ui}/#/experiments/{experiment_id}/runs/{run_id}?{TRAINING_VIEW}"


def number(x: float) -> str:
    """About four significant digits, at most three decimals, never in exponent form: float
    noise such as 5.7e-14 reads 0.000, not 5.684e-14."""
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    digits = 3 if x == 0 else min(3, max(0, 3 - math.floor(math.log10(abs(x)))))
    text = f"{x:.{digits}f}"
    return "0" if text in ("-0", "0") else text.replace("-0.000", "0.000")


def scored_name(name: str, score: float) -> str:
    """A run's name once it has a score, so MLflow's runs list shows it: ``-241.3 · ppo-...``.

    The score leads: the runs table cuts names at about 22 characters with an ellipsis (MLflow
    3.17 at 1280 px), which hid a trailing score behind "ppo-autoscaling-spik…"."""
    return f"{number(score)} · {name}"


def description(algo: str, env: str, load: str | None, seed: int, score: float, n: int) -> str:
    """A run's description (Markdown, MLflow's ``mlflow.note.content``)."""
    where = f"{env}, load `{load}`" if load else env
    return (
        f"**{algo}** on {where}, seed {seed}: test score **{number(score)}** (mean return over "
        f"{n} held-out test episodes, reward summed per episode; higher is better)."
    )
