"""The torch model: the numpy forward is the same network, training is deterministic, and a
briefly trained LSTM beats persistence on the sine curve."""

from __future__ import annotations

import numpy as np
import pytest

from rlbench.envs.forecasters import LastValue, SeasonalNaive
from rlbench.envs.lstm_forecaster import LSTMForecaster
from rlbench.forecast import data, lstm, metrics

torch = pytest.importorskip("torch")


def meta(config):
    return {
        "window": config.window,
        "steps": config.steps,
        "hidden": config.hidden,
        "scale": {"kind": "window mean", "floor": lstm.SCALE_FLOOR},
    }


def test_numpy_forward_equals_the_torch_model_after_export():
    torch.manual_seed(3)
    net = lstm.make_net(16, 5, in_scale=7.0, out_scale=0.2)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.4)
    sizes = {"window": 12, "steps": 5, "hidden": 16, "scale": {"floor": 1.0}}
    f = LSTMForecaster(net.export(), sizes)
    x = np.random.default_rng(0).normal(0, 0.5, (64, 12, 3))
    with torch.no_grad():
        expected = net(torch.from_numpy(x.astype(np.float32))).numpy()
    assert np.abs(f.forward(x) - expected).max() < 1e-5


def sine_series():
    return data.make_series(["sine_curve"], {}, data.TRAIN_SEEDS[:1], (0.0,), 3 * data.PERIOD)


def test_the_same_seed_gives_the_same_weights_and_another_seed_others():
    config = lstm.TrainConfig(window=8, steps=3, hidden=6, epochs=1, batch_size=128, seed=5)
    series = data.make_series(["sine_curve", "poisson"], {}, data.TRAIN_SEEDS[:1], (0.1,), 400)
    first, second = lstm.train(series, config), lstm.train(series, config)
    for name, array in first.weights.items():
        np.testing.assert_array_equal(array, second.weights[name])
    assert first.losses == second.losses
    other = lstm.train(series, lstm.TrainConfig(**{**config.__dict__, "seed": 6}))
    assert not np.array_equal(other.weights["head.weight"], first.weights["head.weight"])


def test_the_training_data_and_held_out_seeds_are_disjoint_from_the_agents():
    assert min(data.TRAIN_SEEDS) >= 7_000_000 and min(data.HELD_OUT_SEEDS) >= 8_000_000
    assert not set(data.TRAIN_SEEDS) & set(data.HELD_OUT_SEEDS)
    history, t, future = data.windows(np.arange(10.0), 3, 2)
    assert t.tolist() == [3, 4, 5, 6, 7, 8]
    assert history[0].tolist() == [0, 1, 2] and future[0].tolist() == [3, 4]


def test_a_briefly_trained_lstm_beats_last_value_on_the_held_out_sine_curve():
    config = lstm.TrainConfig(epochs=12, batch_size=64, seed=0)
    result = lstm.train(sine_series(), config)
    forecaster = LSTMForecaster(result.weights, meta(config))
    held_out = data.held_out_series(["sine_curve"], {}, noises=(0.0,))
    contenders = {"lstm": forecaster, "naive": SeasonalNaive(6, 288), "last_value": LastValue(6)}
    scores = {s.forecaster: s for s in metrics.score(contenders, held_out, 6)}
    assert scores["lstm"].mae < 0.5 * scores["last_value"].mae, metrics.table(scores.values())
    assert len(scores["lstm"].mae_by_step) == 6 and scores["naive"].mae < 1e-9
