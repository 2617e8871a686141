"""rlbench: a research workbench for reinforcement learning on operations decisions.

Importing the package registers its gymnasium environments (``rlbench/Autoscaling-v0``, ...);
heavy libraries (torch, mlflow, optuna) are imported only where they are used.
"""

from rlbench.envs import register_all as _register_all

__version__ = "0.1.0"

_register_all()
