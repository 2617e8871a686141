"""Search spaces from Hydra's override grammar, as hydra-optuna-sweeper reads them.

``interval(a, b)`` is a float (even with int ends, as in Hydra), ``int(interval(a, b))`` an int,
``tag(log, interval(a, b))`` the same on a log scale, ``choice(...)`` categorical (lists and dicts
allowed, e.g. network sizes), ``range(start, stop[, step])`` a stepped int or float grid that
excludes ``stop`` as Hydra's ``range`` does (``shuffle(range(...))`` becomes categorical). Anything
that is not a sweep is a fixed override passed unchanged to every job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from rlbench.config import override_value as format_value  # re-exported: the sweeper's name
from rlbench.errors import UserError, first_line


class SweepError(UserError):
    """A bad sweep setting: the sweeper prints it as one line and exits with code 2."""


@dataclass
class Param:
    """One searched key: its Optuna distribution and how each value is written as an override."""

    key: str  # the Optuna parameter name, e.g. "algo.gamma"
    prefix: str  # "", "+" or "++" as the user wrote it
    distribution: BaseDistribution
    texts: dict[Any, str] = field(default_factory=dict)  # categorical value -> override text

    def override(self, value: Any) -> str:
        text = self.texts[value] if value in self.texts else format_value(value)
        return f"{self.prefix}{self.key}={text}"


@dataclass
class SearchSpace:
    params: dict[str, Param]
    fixed: dict[str, str]  # key -> override passed to every job as written

    def distributions(self) -> dict[str, BaseDistribution]:
        return {k: p.distribution for k, p in self.params.items()}

    def fixed_params(self, values: dict[str, Any], where: str) -> dict[str, Any]:
        """Values for an enqueued trial, as Optuna stores them (lists as their override text)."""
        unknown = sorted(set(values) - set(self.params))
        if unknown:
            raise SweepError(f"{where}: {unknown[0]} is not a searched parameter")
        out = {}
        for key, value in values.items():
            stored = _structured_text(value) if isinstance(value, list | dict) else value
            dist = self.params[key].distribution
            try:
                inside = dist._contains(dist.to_internal_repr(stored))
            except (ValueError, TypeError):
                inside = False
            if not inside:
                raise SweepError(f"{where}: {key}={value!r} is outside its search space")
            out[key] = stored
        return out


def parse_space(config_params: dict[str, Any], arguments: list[str]) -> SearchSpace:
    """Merge ``hydra.sweeper.params`` with the command line (which wins) into one space."""
    lines = [f"{k}={v}" for k, v in config_params.items()]
    parsed = _parse(lines, "hydra.sweeper.params") + _parse(arguments, "the command line")
    params: dict[str, Param] = {}
    fixed: dict[str, str] = {}
    for override in parsed:
        key = _key(override)
        params.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            params[key] = _param(override, key)
        else:
            fixed[key] = override.input_line or str(override)
    if not params:
        raise SweepError(
            "the Optuna sweeper has nothing to search: set hydra.sweeper.params (a search= preset) "
            "or give key=interval(a,b) / key=choice(...) on the command line"
        )
    return SearchSpace(params, fixed)


def _parse(lines: list[str], where: str) -> list[Override]:
    parser = OverridesParser.create()
    result = []
    for line in lines:
        try:
            result.extend(parser.parse_overrides([line]))
        except Exception as err:
            detail = [s for s in str(err).splitlines()[1:] if not s.startswith("See https")]
            reason = detail[0] if detail else first_line(err)
            raise SweepError(
                f"cannot parse search expression {line!r} in {where}: {reason}"
            ) from None
    return result


def _key(override: Override) -> str:
    key = override.key_or_group
    return f"{key}@{override.package}" if override.package else key


def _param(override: Override, key: str) -> Param:
    prefix = "++" if override.is_force_add() else "+" if override.is_add() else ""
    if override.is_delete():
        raise SweepError(f"cannot search a deletion: {override.input_line!r}")
    try:
        if override.is_interval_sweep():
            value = override.value()
            log = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                dist: BaseDistribution = IntDistribution(value.start, value.end, log=log)
            else:
                dist = FloatDistribution(float(value.start), float(value.end), log=log)
            return Param(key, prefix, dist)
        values = list(override.sweep_iterator())
        if override.is_range_sweep() and not override.value().shuffle and values:
            return Param(key, prefix, _range_distribution(override.value(), values))
        return _categorical(key, prefix, values)
    except SweepError:
        raise
    except (ValueError, TypeError, AssertionError) as err:
        raise SweepError(f"search expression {override.input_line!r}: {err}") from None


def _range_distribution(value: Any, values: list[Any]) -> BaseDistribution:
    if all(isinstance(v, int) for v in values):
        return IntDistribution(values[0], values[-1], step=int(value.step))
    return FloatDistribution(float(values[0]), float(values[-1]), step=float(value.step))


def _categorical(key: str, prefix: str, values: list[Any]) -> Param:
    choices: list[Any] = []
    texts: dict[Any, str] = {}
    for v in values:
        if isinstance(v, list | dict):
            text = _structured_text(v)
            choices.append(text)
            texts[text] = text
        else:
            choices.append(v)
    if not choices:
        raise SweepError(f"choice for {key} is empty")
    return Param(key, prefix, CategoricalDistribution(choices), texts)


def _structured_text(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_structured_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_structured_text(v)}" for k, v in value.items()) + "}"
    return format_value(value)
