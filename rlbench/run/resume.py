"""``resume=true``: which finished run of a configuration may stand in for training it again.

This is what makes a killed grid (``experiment=benchmark``) resumable: rerun it with
``resume=true`` and only the jobs that did not finish train. Uncommitted changes in the
checkout never match, so edited code is always trained afresh.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from rlbench.tracking import Tracker, schema
from rlbench.tracking.provenance import code_version, version_tags

log = logging.getLogger(__name__)


@dataclass
class FinishedRun:
    """A complete earlier run of the same configuration, code and libraries."""

    run_id: str
    score: float
    steps: int


def finished_before(tracker: Tracker, key: str, user_tags: dict[str, str]) -> FinishedRun | None:
    """The newest FINISHED run of this configuration (same run key) made by the same code and
    libraries (same ``rlbench.code`` and ``version.*`` tags), or None: then the job trains.

    Only a complete stand-alone run counts: not pruned, with its final metrics, not a sweep's
    trial, and carrying the job's ``tracking.tags`` (the report selects runs by them).
    """
    code = code_version()
    if code is None:
        _say_once("resume=true: the checkout has uncommitted changes: finished runs are not reused")
        return None
    same = {schema.RUN_KEY_TAG: key, schema.CODE_TAG: code} | version_tags()
    query = " and ".join(f"tags.`{tag}` = '{value}'" for tag, value in same.items())
    for run in tracker.find_runs(query, status="FINISHED"):
        tags, metrics = run["tags"], run["metrics"]
        score = metrics.get(schema.SCORE_METRIC)
        if (
            score is None
            or schema.TOTAL_STEPS_METRIC not in metrics  # logged with the final evaluation only
            or tags.get(schema.PRUNED_TAG) == "true"
            or schema.PARENT_RUN_TAG in tags  # a sweep's trial
            or any(tags.get(k) != v for k, v in user_tags.items())
        ):
            continue
        log.info("resume=true: finished before as run %s (same config and code)", run["run_id"])
        return FinishedRun(run["run_id"], float(score), int(metrics[schema.TOTAL_STEPS_METRIC]))
    return None


@functools.cache
def _say_once(message: str) -> None:
    """Log ``message`` once per process (not once per job of a grid)."""
    log.info(message)
