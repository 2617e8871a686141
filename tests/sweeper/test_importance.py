"""One importance evaluator everywhere: the parent run's plot and notebook 02 rank alike."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.importance import FanovaImportanceEvaluator

from rlbench.tracking.importance import importance_kwargs, param_importances
from rlbench.tracking.schema import IMPORTANCE_SEED

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "02_sweep_analysis.ipynb"


def maximised_study() -> optuna.Study:
    """y barely matters, x decides: for a maximised study the ranking must not flip."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(1))
    study.optimize(
        lambda t: -((t.suggest_float("x", -3, 3) - 1) ** 2) + 0.01 * t.suggest_float("y", 0, 1),
        n_trials=30,
    )
    return study


def test_the_first_objective_as_it_is_with_fanova_and_the_schema_seed():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = maximised_study()
    kwargs = importance_kwargs(study)
    assert "target" not in kwargs  # the value itself, not flipped
    assert isinstance(kwargs["evaluator"], FanovaImportanceEvaluator)
    expected = optuna.importance.get_param_importances(
        study, evaluator=FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)
    )
    found = param_importances(study)
    assert found == expected and max(found, key=found.get) == "x"


def test_notebook_02_uses_the_shared_evaluator():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert "param_importances(study)" in code and "importance_kwargs(study)" in code
    assert "ImportanceEvaluator(" not in code
