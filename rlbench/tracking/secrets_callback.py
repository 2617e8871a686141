"""The Hydra callback that keeps secrets out of what Hydra prints and writes.

Hydra saves a job's config and overrides (``.hydra/{config,hydra,overrides}.yaml``, a sweep's
``multirun.yaml``) before the job starts, and a launcher prints each job's overrides: a password
typed on the command line (``tracking.uri=http://user:secret@host``) would land there in clear.
``conf/train.yaml`` and ``conf/report.yaml`` name this callback in ``hydra.callbacks``.

- ``on_run_start`` / ``on_multirun_start`` run before Hydra saves or launches anything, on the
  very config it then uses: every URL secret moves into an ``RLBENCH_SECRET_<n>`` environment
  variable (the job's child processes and joblib workers inherit it) and the config and the
  override lines name ``${oc.env:RLBENCH_SECRET_<n>}`` instead, so the job's config resolves to
  the real URL while nothing Hydra writes holds the secret;
- ``sys.stderr`` masks what is written to it (the one-line errors, warnings, tracebacks);
- ``on_job_start`` masks log lines (the job's log file too) and, as a safety net, any secret
  left in the job's ``.hydra`` files (one written in a preset file of a multirun job); it also
  notes which source named the tracking store (see :func:`rlbench.tracking.tracker.uri_source`).
"""

from __future__ import annotations

import os
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rlbench.tracking.redaction import mask_logging, mask_stderr, protect_config, scrub_files


class SecretsCallback(Callback):
    """See the module docstring."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._start(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._start(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from rlbench.tracking.tracker import note_uri_source

        mask_logging()
        note_uri_source(config)
        self._scrub_job(config)

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._scrub_job(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = OmegaConf.select(config, "hydra.sweep.dir")
        if sweep:
            scrub_files(sweep)

    @staticmethod
    def _start(config: DictConfig) -> None:
        from rlbench.tracking.tracker import note_uri_source

        note_uri_source(config)  # before the rewrite: what the user gave
        protect_config(config)
        mask_logging()
        mask_stderr()

    @staticmethod
    def _scrub_job(config: DictConfig) -> None:
        output = OmegaConf.select(config, "hydra.runtime.output_dir")
        subdir = OmegaConf.select(config, "hydra.output_subdir")
        if output and subdir:
            scrub_files(os.path.join(str(output), str(subdir)))
