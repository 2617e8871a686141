"""Search expressions in Hydra's override grammar become the Optuna distributions users expect."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hydra_plugins.rlbench_optuna_sweeper._space import (
    SweepError,
    format_value,
    grid_values,
    parse_space,
)


def space_of(**params: str):
    return parse_space(params, []).params


def test_interval_forms_map_to_float_int_and_log_distributions():
    p = space_of(
        a="interval(0.1, 0.9)",
        b="int(interval(1.5, 10))",
        c="tag(log, interval(1e-5, 1e-2))",
        d="interval(2, 8)",
        e="tag(log, int(interval(1, 100)))",
    )
    assert p["a"].distribution == FloatDistribution(0.1, 0.9)
    assert p["b"].distribution == IntDistribution(1, 10)  # int() truncates 1.5 to 1
    assert p["c"].distribution == FloatDistribution(1e-5, 1e-2, log=True)
    assert p["d"].distribution == FloatDistribution(2.0, 8.0)  # Hydra: interval is float
    assert p["e"].distribution == IntDistribution(1, 100, log=True)


def test_range_is_upstreams_stop_inclusive_distribution_and_its_grid_excludes_stop():
    """hydra-optuna-sweeper's mapping: range(1,3) samples 1..3, but its grid is 1, 2."""
    p = space_of(a="range(1, 10, 3)", b="range(0.0, 1.0, 0.25)", c="range(5)", d="range(1,3)")
    assert p["a"].distribution == IntDistribution(1, 10, step=3)
    assert p["b"].distribution == FloatDistribution(0.0, 1.0, step=0.25)
    assert p["c"].distribution == IntDistribution(0, 5)
    assert p["d"].distribution == IntDistribution(1, 3)
    grids = {k: grid_values(k, v.distribution) for k, v in p.items()}
    assert grids == {"a": [1, 4, 7], "b": [0.0, 0.25, 0.5, 0.75], "c": [0, 1, 2, 3, 4],
                     "d": [1, 2]}  # fmt: skip
    assert space_of(e="range(0.5, 5.5, step=1)")["e"].distribution == FloatDistribution(
        0.5, 5.5, step=1.0
    )


def test_a_shuffled_range_is_categorical_in_one_order():
    for _ in range(3):
        assert space_of(k="shuffle(range(1,5))")["k"].distribution == CategoricalDistribution(
            [1, 2, 3, 4]
        )


def test_the_grid_needs_discrete_values():
    with pytest.raises(SweepError, match="the grid sampler needs discrete values: x is"):
        grid_values("x", space_of(x="interval(0, 1)")["x"].distribution)


def test_choice_keeps_primitive_types_and_lists_become_override_text():
    p = space_of(act="choice(tanh, relu)", n="choice(64, 128)", net="choice([64], [64,64])")
    assert p["act"].distribution == CategoricalDistribution(["tanh", "relu"])
    assert p["n"].distribution == CategoricalDistribution([64, 128])
    assert p["net"].distribution == CategoricalDistribution(["[64]", "[64,64]"])
    assert p["net"].override("[64,64]") == "net=[64,64]"
    assert p["act"].override("relu") == "act='relu'"


def test_command_line_wins_over_config_and_fixed_values_leave_the_space():
    space = parse_space(
        {"x": "interval(0, 1)", "y": "interval(0, 1)", "+z": "3"},
        ["x=choice(5, 6)", "y=0.5", "env.load=spike"],
    )
    assert list(space.params) == ["x"]
    assert space.params["x"].distribution == CategoricalDistribution([5, 6])
    assert space.fixed == {"z": "+z=3", "y": "y=0.5", "env.load": "env.load=spike"}


def test_add_prefix_is_kept_on_the_job_override():
    p = parse_space({}, ["+algo.extra=interval(0.0, 1.0)"]).params
    assert p["algo.extra"].override(0.25) == "+algo.extra=0.25"


@pytest.mark.parametrize(
    "value", ["tanh", "a b", "it's", "back\\slash", "end\\", "1.5", "true", "", 1e-05, 3, None]
)
def test_format_value_round_trips_through_hydra(value):
    parsed = OverridesParser.create().parse_overrides([f"k={format_value(value)}"])[0]
    assert parsed.value() == value


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"x": "interval(1,"}, "cannot parse search expression 'x=interval(1,'"),
        ({"x": "tag(log, interval(-1.0, 1.0))"}, "x=tag(log, interval(-1.0, 1.0))"),
        ({"x": "0.5"}, "nothing to search"),
    ],
)
def test_bad_expressions_are_one_line_errors(params, message):
    with pytest.raises(SweepError) as err:
        parse_space(params, [])
    assert message in str(err.value)
    assert "\n" not in str(err.value)
