"""rlbench: a research workbench for reinforcement learning on operations decisions.

Importing the package registers its gymnasium environments (``rlbench/Autoscaling-v0``, ...);
heavy libraries (torch, mlflow, optuna) are imported only where they are used.

Packages, lowest layer first; a module imports only from its own layer or lower ones
(``tests/test_layout.py`` checks every import, including those inside functions):

0. :mod:`~rlbench.errors`, :mod:`~rlbench.config`, :mod:`~rlbench.cli`: what every command shares;
1. :mod:`~rlbench.envs`: the environments;
2. :mod:`~rlbench.agents`: the algorithms and baselines behind one protocol;
3. :mod:`~rlbench.tracking`: MLflow runs and every recorded name (:mod:`rlbench.tracking.schema`);
4. :mod:`~rlbench.run`: one training job, config to score (``rlbench-train``);
   :mod:`~rlbench.forecast`: the load forecaster's training (``rlbench-forecast``);
5. :mod:`~rlbench.results`: analysis frames, statistics, reports, verify;
6. :mod:`~rlbench.serve`, :mod:`~rlbench.offline`: registry and serving; logs and off-policy
   evaluation;
7. :mod:`~rlbench.live`: the continuous-learning loop.

``rlbench.train``, ``rlbench.analysis``, ``rlbench.report.stats`` and ``rlbench.report.plots``
are the old import paths, kept as thin re-exports.
"""

from rlbench.envs import register_all as _register_all

__version__ = "0.1.0"

_register_all()
