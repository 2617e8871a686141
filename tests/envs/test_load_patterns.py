"""Shapes of the request-arrival patterns, with expected values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from rlbench.envs.load_patterns import (
    PATTERNS,
    SAMPLE_TRACE,
    LoadParams,
    generate,
    pattern_name,
    read_trace,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_steady_is_base_load() -> None:
    load = generate("steady", np.arange(10), LoadParams(base_load=1234.0), rng())
    np.testing.assert_array_equal(load, np.full(10, 1234.0))


def test_sine_curve_quarter_points_and_period() -> None:
    p = LoadParams(base_load=2000, amplitude=1500, period=24)
    load = generate("sine_curve", np.arange(48), p, rng())
    # t=0: base; t=6 (a quarter period): base + amp; t=18: base - amp.
    assert load[[0, 6, 12, 18]] == pytest.approx([2000, 3500, 2000, 500])
    np.testing.assert_allclose(load[:24], load[24:])
    assert load.min() == pytest.approx(500) and load.max() == pytest.approx(3500)


def test_sine_curve_clipped_at_zero() -> None:
    load = generate(
        "sine_curve", np.arange(24), LoadParams(base_load=100, amplitude=300, period=24), rng()
    )
    assert load.min() == 0.0
    assert load[18] == 0.0  # 100 - 300 clipped
    assert load[6] == pytest.approx(400)


def test_sinusoidal_adds_a_faster_harmonic() -> None:
    p = LoadParams(base_load=2000, amplitude=1500, period=64, harmonic=4, harmonic_weight=0.5)
    load = generate("sinusoidal", np.arange(128), p, rng())
    # t=16: sin(π/2)=1, sin(4·π/2)=0 -> 2000 + 1500 · 1/1.5 = 3000.
    assert load[16] == pytest.approx(3000.0)
    # t=4: (sin(π/8) + 0.5 sin(π/2)) / 1.5 = (0.382683 + 0.5) / 1.5 = 0.588456 -> 2882.68.
    assert load[4] == pytest.approx(2882.684, abs=1e-3)
    np.testing.assert_allclose(load[:64], load[64:], atol=1e-9)
    assert load.min() >= 500 and load.max() <= 3500
    assert not np.allclose(load[:32], load[32:64])  # period is 64, not 32


def test_spike_timing_and_ramp() -> None:
    p = LoadParams(base_load=1000, spike_height=600, spike_every=10, spike_ramp=3)
    load = generate("spike", np.arange(20), p, rng())
    one_cycle = [1000, 1200, 1400, 1600, 1400, 1200, 1000, 1000, 1000, 1000]
    np.testing.assert_allclose(load, one_cycle * 2)


def test_poisson_mean_and_variance() -> None:
    load = generate("poisson", np.arange(20000), LoadParams(base_load=2000), rng(3))
    assert np.all(load == np.round(load))
    # Standard error of the mean is sqrt(2000 / 20000) ≈ 0.32.
    assert load.mean() == pytest.approx(2000, abs=1.5)
    assert load.var() == pytest.approx(2000, rel=0.05)


def test_random_walk_stays_in_its_band_and_moves_by_random_step() -> None:
    p = LoadParams(base_load=2000, amplitude=1500, random_step=100)
    load = generate("random", np.arange(20000), p, rng(1))
    assert load.min() >= 500 and load.max() <= 3500
    assert load.min() < 700 and load.max() > 3300  # it explores the whole band
    steps = np.diff(load)
    assert steps.std() == pytest.approx(100, rel=0.05)  # reflections never lengthen a step


def test_random_walk_band_starts_at_zero_when_amplitude_exceeds_base() -> None:
    p = LoadParams(base_load=100, amplitude=500, random_step=50)
    load = generate("random", np.arange(5000), p, rng(2))
    assert load.min() >= 0 and load.max() <= 600
    assert load.max() > 500


def test_random_walk_depends_on_the_generator() -> None:
    t = np.arange(50)
    a = generate("random", t, LoadParams(), rng(0))
    assert np.array_equal(a, generate("random", t, LoadParams(), rng(0)))
    assert not np.array_equal(a, generate("random", t, LoadParams(), rng(1)))


def test_noise_is_multiplicative_and_clipped() -> None:
    load = generate("steady", np.arange(20000), LoadParams(base_load=1000, noise=0.1), rng(4))
    assert load.mean() == pytest.approx(1000, abs=3)
    assert load.std() == pytest.approx(100, rel=0.05)
    wild = generate("steady", np.arange(1000), LoadParams(base_load=1000, noise=5.0), rng(5))
    assert wild.min() == 0.0 and (wild == 0).sum() > 100


def test_trace_replays_scaled_and_wraps(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("requests\n10\n20\n\n30\n")
    counts = read_trace(path)
    np.testing.assert_array_equal(counts, [10, 20, 30])
    p = LoadParams(trace=counts, trace_scale=2.0)
    np.testing.assert_array_equal(generate("trace", np.arange(5), p, rng()), [20, 40, 60, 20, 40])


def test_bundled_sample_trace_is_one_day() -> None:
    counts = read_trace(SAMPLE_TRACE)
    assert counts.shape == (288,) and counts.min() >= 0
    assert counts[0] == 599  # the first data row of the file


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "holds no request counts"),
        ("requests\n", "holds no request counts"),
        ("requests\n10\nabc\n", "row 3 is not a number"),
        ("10\n20\nx\n", "row 3 is not a number"),
        ("10\n-5\n", "row 2 must be a count >= 0"),
        ("10,20\n", "row 1 has 2 columns"),
    ],
)
def test_bad_trace_files(tmp_path, text: str, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"trace_path.*{match}"):
        read_trace(path)


def test_missing_trace_file(tmp_path) -> None:
    with pytest.raises(ValueError, match="trace_path: no such file"):
        read_trace(tmp_path / "nope.csv")


def test_pattern_names() -> None:
    assert set(PATTERNS) == {
        "steady",
        "sine_curve",
        "sinusoidal",
        "spike",
        "poisson",
        "random",
        "trace",
    }
    assert pattern_name("SINE_CURVE") == "sine_curve"
    with pytest.raises(ValueError, match=r"load must be one of steady, sine_curve, .*'bogus'"):
        pattern_name("bogus")


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"amplitude": -1}, "amplitude"),
        ({"period": 0}, "period"),
        ({"spike_every": 0}, "spike_every"),
        ({"spike_every": 10, "spike_ramp": 6}, "spike_ramp"),
        ({"noise": -0.1}, "noise"),
        ({"harmonic": 1.5}, "harmonic"),
    ],
)
def test_bad_parameters_name_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        LoadParams(**kwargs)
