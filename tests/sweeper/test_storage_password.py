"""A storage password never appears in the jobs' overrides (Hydra prints and saves them)."""

from __future__ import annotations

import os

from hydra import compose, initialize_config_dir
from sqlalchemy.engine import make_url

from hydra_plugins.rlbench_optuna_sweeper._space import format_value
from hydra_plugins.rlbench_optuna_sweeper._study import PASSWORD_ENV, storage_for_jobs
from rlbench.config import CONF_DIR
from rlbench.run.trial import TrialContext

URL = "postgresql+psycopg2://alice:p%40ss%2Fw0rd@db.example.org:5432/optuna"


def job_config(storage_override: str):
    """The job's config as a launcher composes it from the sweeper's overrides."""
    trial = [
        f"++trial.storage={storage_override}", "++trial.study='s'", "++trial.number=0",
        "++trial.id=1", "++trial.parent_run_id=null", "++trial.seed_index=0",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=trial)


def test_the_override_names_an_environment_variable_not_the_password(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "stale")  # restored (unset) after the test
    override = format_value(storage_for_jobs(URL))
    assert "p%40ss" not in override and "p@ss" not in override
    assert "${oc.env:" + PASSWORD_ENV + "}" in override
    cfg = job_config(override)  # in the job (which inherits the sweeper's environment)
    resolved = TrialContext.from_cfg(cfg).storage
    assert make_url(resolved) == make_url(URL)
    assert make_url(resolved).password == "p@ss/w0rd"


def test_a_url_without_a_password_is_passed_as_it_is(monkeypatch, tmp_path):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    for url in (f"sqlite:///{tmp_path}/optuna.db", "postgresql://alice@db/optuna"):
        assert storage_for_jobs(url) == url
        assert TrialContext.from_cfg(job_config(format_value(url))).storage == url
    assert PASSWORD_ENV not in os.environ
