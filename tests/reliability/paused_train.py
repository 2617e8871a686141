"""``rlbench-train`` that stops dead at one chosen moment, so a test can ``kill -9`` it there.

    RLBENCH_TEST_PAUSE=<moment>:<n> RLBENCH_TEST_PAUSE_MARKER=<file> python paused_train.py ...

At the ``n``-th time the sweep reaches ``<moment>`` this process writes ``<file>`` and sleeps
until it is killed. Moments:

* ``trial``: inside a trial's job, in its final evaluation (its MLflow child run is open, its
  Optuna trial RUNNING);
* ``between``: after a trial was told to Optuna, before the next one is asked;
* ``parent``: while the sweep's summary is written to its MLflow parent run (after its first
  artifact).

``RLBENCH_TEST_COMMIT=<sha>`` makes the process see a clean checkout at ``<sha>`` (what
``resume=true`` compares), whatever state the developer's checkout is in.

Without these variables this is exactly ``rlbench-train``: the patches only wrap.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path


def _pause() -> None:
    Path(os.environ["RLBENCH_TEST_PAUSE_MARKER"]).write_text(str(os.getpid()))
    while True:
        time.sleep(60)


def _after_nth_call(owner: object, name: str, nth: int, *, before: bool = False) -> None:
    original = getattr(owner, name)
    calls = 0

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        if before and calls == nth:
            _pause()
        result = original(*args, **kwargs)
        if not before and calls == nth:
            _pause()
        return result

    setattr(owner, name, wrapper)


def _install(moment: str, nth: int) -> None:
    if moment == "trial":
        import rlbench.run.evaluate

        # train.py imports evaluate() at call time, so the final evaluation meets the wrapper
        _after_nth_call(rlbench.run.evaluate, "evaluate", nth, before=True)
    elif moment == "between":
        from hydra_plugins.rlbench_optuna_sweeper import _sweep

        _after_nth_call(_sweep.OptunaSweep, "_run_batch", nth)
    elif moment == "parent":
        from hydra_plugins.rlbench_optuna_sweeper import _parent_run

        original = _parent_run.ParentRun._log_results

        def log_results(self, study):
            _after_nth_call(self.tracker, "log_artifact", nth)
            return original(self, study)

        _parent_run.ParentRun._log_results = log_results
    else:
        raise SystemExit(f"unknown RLBENCH_TEST_PAUSE moment {moment!r}")


if __name__ == "__main__":
    commit = os.environ.get("RLBENCH_TEST_COMMIT")
    if commit:
        from rlbench.tracking import provenance

        provenance.git_state = lambda repo=None: (commit, "false")
    spec = os.environ.get("RLBENCH_TEST_PAUSE")
    if spec:
        moment, _, nth = spec.partition(":")
        _install(moment, int(nth or 1))
    from rlbench.run.main import main

    main()
