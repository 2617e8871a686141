"""The MLflow pyfunc model of a saved rlbench policy, logged as models-from-code.

MLflow stores this file with the model (never a cloudpickled object) beside two artifacts: the
policy in rlbench's own safe format (``policy``) and the environment it acts in (``env``, JSON:
gymnasium id and arguments). ``mlflow.pyfunc.load_model(uri).predict(observations)`` returns
one action per observation; with ``params={"probabilities": True}`` a frame with the action, its
probability under the policy and pi(a|s) for every action (``p_0``, ``p_1``, ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


def as_observations(model_input: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 batch ``(N, *shape)`` from what a caller sends (array, frame, lists)."""
    values = model_input.to_numpy() if hasattr(model_input, "to_numpy") else model_input
    obs = np.asarray(values, dtype=np.float32)
    if obs.ndim == len(shape):  # one observation
        obs = obs[None]
    if obs.shape[1:] != shape:
        raise ValueError(f"observations must have shape (N, {', '.join(map(str, shape))})")
    if not np.isfinite(obs).all():
        raise ValueError("observations must be finite numbers (no NaN or inf)")
    return obs


class PolicyModel(PythonModel):
    """An rlbench agent behind MLflow's pyfunc interface."""

    # the signature is explicit: no type-hint validation (nor MLflow's advice to add hints)
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from rlbench.agents import load_agent
        from rlbench.envs import make_vec

        spec = json.loads(Path(context.artifacts["env"]).read_text())
        self.venv = make_vec(spec["env_id"], 1, **spec["env_kwargs"])
        self.agent = load_agent(context.artifacts["policy"], self.venv, device="cpu")
        self.shape = tuple(self.venv.observation_space.shape)

    def predict(self, context, model_input, params=None):
        """Actions for a batch of observations; with ``probabilities``, a frame with pi."""
        params = params or {}
        obs = as_observations(model_input, self.shape)
        deterministic = bool(params.get("deterministic", True))
        actions = self.agent.predict(obs, deterministic=deterministic)
        if not params.get("probabilities", False):
            return actions
        import pandas as pd

        pi = self.agent.action_probabilities(obs, deterministic=deterministic)
        frame = pd.DataFrame(pi, columns=[f"p_{a}" for a in range(pi.shape[1])])
        frame.insert(0, "probability", pi[np.arange(len(actions)), actions])
        frame.insert(0, "action", actions)
        return frame


mlflow.models.set_model(PolicyModel())
