"""Results: finished runs read back from MLflow and Optuna, compared, drawn and written up.

- :mod:`.analysis`: runs, curves, trajectories and studies as tidy pandas frames (notebooks);
- :mod:`.stats`: rliable's statistics on numpy/scipy (IQM, bootstrap intervals, ranks);
- :mod:`.plots`, :mod:`.drawing`, :mod:`.document`: the figures (drawn on every core) and the
  Markdown/HTML writer;
- :mod:`.report`: runs to a comparison report (``rlbench-report``, :mod:`.cli`);
- :mod:`.verify`: every logged model still loads and acts (``rlbench-verify``).

May import :mod:`rlbench.errors`, :mod:`rlbench.config`, :mod:`rlbench.cli`, ``envs``, ``agents``,
``tracking`` and ``run`` (verify replays the evaluation protocol); never ``serve``, ``offline``,
``live``. Imports nothing itself, so ``rlbench-report --help`` does not pay for scipy and
matplotlib.
"""
