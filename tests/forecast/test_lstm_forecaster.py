"""The numpy LSTM forecaster: shapes, its folder format, and one-line errors for a bad folder."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from rlbench.envs.lstm_forecaster import (
    META_FILE,
    WEIGHTS_FILE,
    LSTMForecaster,
    expected_shapes,
    load_forecaster,
    save_forecaster,
)

META = {
    "window": 24,
    "steps": 6,
    "hidden": 32,
    "period": 288,
    "scale": {"kind": "window mean", "floor": 1.0},
}


def random_weights(meta=META, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0, 0.3, s).astype(np.float32) for k, s in expected_shapes(meta).items()}


def histories(n, window=24, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(500, 3500, (n, window)), rng.integers(24, 2000, n)


def one_line_error(excinfo, *words):
    text = str(excinfo.value)
    assert "\n" not in text
    for word in words:
        assert word in text, text
    return text


@pytest.mark.parametrize("n", [1, 8, 20])
def test_predict_gives_n_by_steps_nonnegative_forecasts(n):
    f = LSTMForecaster(random_weights(), META)
    history, t = histories(n)
    out = f.predict(history, t, 288.0)
    assert out.shape == (n, 6) and out.dtype == np.float64
    assert (out >= 0).all() and np.isfinite(out).all()
    assert (f.name, f.window, f.steps) == ("lstm", 24, 6)
    # stateless: each row alone gives the same forecast, to float32 rounding (BLAS sums a
    # batch's columns in another order than a single one's)
    single = np.concatenate([f.predict(history[i : i + 1], t[i : i + 1], 288.0) for i in range(n)])
    np.testing.assert_allclose(single, out, rtol=1e-6, atol=1e-3)
    np.testing.assert_array_equal(f.predict(history, t, 288.0), out)  # and repeatably


def test_a_short_history_is_refused():
    f = LSTMForecaster(random_weights(), META)
    with pytest.raises(ValueError, match=r"shape \(N, 24\)"):
        f.predict(np.ones((2, 5)), np.array([5, 6]), 288.0)


def test_predict_is_fast_for_a_batch_of_copies():
    f = LSTMForecaster(random_weights(), META)
    history, t = histories(8)
    f.predict(history, t, 288.0)
    times = []
    for _ in range(50):
        start = time.perf_counter()
        f.predict(history, t, 288.0)
        times.append(time.perf_counter() - start)
    assert np.median(times) < 2e-3  # ~0.2 ms measured; loose for a shared machine


def test_save_and_load_round_trip(tmp_path):
    save_forecaster(tmp_path / "f", random_weights(), {**META, "training": {"seeds": [7]}})
    loaded = load_forecaster(tmp_path / "f")
    meta = json.loads((tmp_path / "f" / META_FILE).read_text())
    assert meta["format_version"] == 1 and meta["kind"] == "lstm"
    assert meta["training"] == {"seeds": [7]} and len(meta["weights_sha256"]) == 64
    history, t = histories(8)
    expected = LSTMForecaster(random_weights(), META).predict(history, t, 288.0)
    np.testing.assert_array_equal(loaded.predict(history, t, 288.0), expected)


@pytest.fixture
def folder(tmp_path):
    return save_forecaster(tmp_path / "f", random_weights(), META)


def test_a_corrupt_weights_file_is_named(folder):
    data = bytearray((folder / WEIGHTS_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ValueError) as excinfo:
        load_forecaster(folder)
    one_line_error(excinfo, WEIGHTS_FILE, "corrupt", "rlbench-forecast train")


@pytest.mark.parametrize("name", [WEIGHTS_FILE, META_FILE])
def test_a_missing_file_is_named(folder, name):
    (folder / name).unlink()
    with pytest.raises(ValueError) as excinfo:
        load_forecaster(folder)
    one_line_error(excinfo, name, "missing", "rlbench-forecast train")


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(ValueError) as excinfo:
        load_forecaster(tmp_path / "nowhere")
    one_line_error(excinfo, "nowhere", "no such folder")


def _rewrite_weights(folder, arrays):
    """Replace the weights and fix the checksum, as a wrong but consistent folder would be."""
    import hashlib

    np.savez(folder / WEIGHTS_FILE, **arrays)
    meta = json.loads((folder / META_FILE).read_text())
    meta["weights_sha256"] = hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()
    (folder / META_FILE).write_text(json.dumps(meta))


def test_a_misshaped_or_missing_array_is_named(folder):
    arrays = random_weights()
    arrays["head.weight"] = arrays["head.weight"][:3]
    _rewrite_weights(folder, arrays)
    with pytest.raises(ValueError) as excinfo:
        load_forecaster(folder)
    one_line_error(excinfo, WEIGHTS_FILE, "'head.weight'", "shape (3, 32)", "(6, 32)")
    del arrays["head.weight"]
    _rewrite_weights(folder, arrays)
    with pytest.raises(ValueError) as excinfo:
        load_forecaster(folder)
    one_line_error(excinfo, "'head.weight'", "missing")


def test_pickled_arrays_are_never_loaded(folder):
    arrays = random_weights()
    arrays["head.bias"] = np.array([object()] * 6)
    _rewrite_weights(folder, arrays)
    with pytest.raises(ValueError) as excinfo:
        load_forecaster(folder)
    one_line_error(excinfo, WEIGHTS_FILE, "unreadable")


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda m: {**m, "format_version": 99}, ["format_version 99", "reads 1"]),
        (lambda m: {**m, "kind": "gru"}, ["kind 'gru'"]),
        (lambda m: {**m, "hidden": 0}, ["hidden must be an integer >= 1"]),
        (lambda m: {k: v for k, v in m.items() if k != "scale"}, ["scale.floor"]),
    ],
)
def test_a_bad_description_is_named(folder, edit, words):
    meta = json.loads((folder / META_FILE).read_text())
    (folder / META_FILE).write_text(json.dumps(edit(meta)))
    with pytest.raises(ValueError) as excinfo:
        load_forecaster(folder)
    one_line_error(excinfo, META_FILE, *words)


def test_bad_json_is_named(folder):
    (folder / META_FILE).write_text("{not json")
    with pytest.raises(ValueError) as excinfo:
        load_forecaster(folder)
    one_line_error(excinfo, META_FILE, "not readable JSON")
