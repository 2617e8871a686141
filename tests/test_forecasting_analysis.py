"""experiments/forecasting/analyse.py: forecast gains are paired by seed, and the LSTM's share
of the oracle's gain is reported only where the oracle clearly gains."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

PATH = Path(__file__).resolve().parents[1] / "experiments" / "forecasting" / "analyse.py"


@pytest.fixture(scope="module")
def analyse():
    spec = importlib.util.spec_from_file_location("forecasting_analyse", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table() -> pd.DataFrame:
    """ppo on two loads, 5 seeds: a seed-specific level (which pairing must cancel) plus a
    fixed gain per forecast mode; on 'steady' the oracle gains nothing."""
    rows = []
    gains = {"spike": {"none": 0, "naive": 2, "lstm": 6, "oracle": 8},
             "steady": {"none": 0, "naive": 0, "lstm": 0, "oracle": 0}}  # fmt: skip
    for load, by_mode in gains.items():
        for seed in range(5):
            level = -200.0 + 37.0 * seed  # seeds differ far more than the modes
            for mode, gain in by_mode.items():
                algo = "ppo" if mode == "none" else f"ppo+{mode}"
                rows.append({"algo": algo, "load": load, "seed": seed, "score": level + gain})
    return pd.DataFrame(rows)


def test_gains_are_paired_by_seed(analyse) -> None:
    summary = analyse.summarise(analyse.paired(_table())).set_index("load")
    spike = summary.loc["spike"]
    # paired: the seed levels cancel, so the intervals have zero width around the gains
    assert (spike["naive"], spike["lstm"], spike["oracle"]) == (2, 6, 8)
    assert spike["lstm_lo"] == spike["lstm_hi"] == 6
    assert spike["captured"] == pytest.approx(0.75)
    assert spike["oracle_better_seeds"] == 5
    assert np.isnan(summary.loc["steady"]["captured"])  # the oracle gains nothing: no share
    overall = summary.loc["all patterns"]
    assert overall["lstm"] == pytest.approx(3.0) and overall["seeds"] == 10
    text = analyse.markdown(summary.reset_index())
    assert "| ppo | spike | " in text and "75% [75%, 75%]" in text


def test_missing_modes_are_named(analyse) -> None:
    table = _table()
    with pytest.raises(SystemExit, match=r"env\.forecast=lstm"):
        analyse.paired(table[~table["algo"].str.endswith("+lstm")])
