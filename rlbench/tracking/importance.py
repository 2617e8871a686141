"""Parameter importance of an Optuna study, computed one way wherever rlbench shows it.

The sweep parent's importance plot, notebook 02 and the README's advice all use fANOVA with the
schema's seed on the first objective as it is (never flipped for a maximised study): evaluators
and targets that differ rank the same study's parameters differently. Imports Optuna when called.
"""

from __future__ import annotations

from typing import Any

from rlbench.tracking import schema


def importance_kwargs(study: Any) -> dict[str, Any]:
    """``evaluator``, ``target`` and ``target_name`` for Optuna's importance functions and plots."""
    from optuna.importance import FanovaImportanceEvaluator

    out: dict[str, Any] = {"evaluator": FanovaImportanceEvaluator(seed=schema.IMPORTANCE_SEED)}
    if len(study.directions) > 1:  # importance needs one number per trial: the first objective
        out["target"] = lambda t: t.values[0]
    names = getattr(study, "metric_names", None)
    out["target_name"] = names[0] if names else "Objective Value"
    return out


def param_importances(study: Any) -> dict[str, float]:
    """Each searched parameter's share of the objective's variance over the complete trials."""
    import optuna

    kwargs = importance_kwargs(study)
    kwargs.pop("target_name")
    return optuna.importance.get_param_importances(study, **kwargs)
