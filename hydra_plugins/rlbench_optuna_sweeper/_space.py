"""Search spaces from Hydra's override grammar, read as hydra-optuna-sweeper reads them.

``interval(a, b)`` is a float (even with int ends, as in Hydra), ``int(interval(a, b))`` an int,
``tag(log, ...)`` the same on a log scale, ``choice(...)`` categorical (lists and dicts allowed,
e.g. network sizes: rlbench's addition). ``range(start, stop[, step])`` is upstream's: a stepped
int distribution from start to stop *inclusive* (float if any bound or the step is a float), while
the grid sampler's grid of it excludes stop, as Hydra's ``range`` does (:func:`grid_values`).
``shuffle(range(...))`` is categorical, its choices sorted so that a stored study sees the same
space every time. Anything that is not a sweep is a fixed override passed to every job as written.
The deprecated ``search_space`` form (type/low/high/step/log/choices) is translated here too.
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


def parse_space(
    config_params: dict[str, Any] | None,
    arguments: list[str],
    distributions: dict[str, BaseDistribution] | None = None,
    allow_empty: bool = False,
) -> SearchSpace:
    """Merge ``hydra.sweeper.params`` with the command line (which wins) into one space.

    ``distributions`` (the deprecated ``search_space``, translated) come first; ``allow_empty``
    when a ``custom_search_space`` function suggests the parameters.
    """
    lines = [f"{k}={v}" for k, v in (config_params or {}).items()]
    parsed = _parse(lines, "hydra.sweeper.params") + _parse(arguments, "the command line")
    params: dict[str, Param] = {k: Param(k, "", d) for k, d in (distributions or {}).items()}
    fixed: dict[str, str] = {}
    for override in parsed:
        key = _key(override)
        params.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            params[key] = _param(override, key)
        else:
            fixed[key] = override.input_line or str(override)
    if not params and not allow_empty:
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
        if override.is_range_sweep() and not override.value().shuffle:
            return Param(key, prefix, _range_distribution(override.value()))
        values = list(override.sweep_iterator())
        if override.is_range_sweep():  # shuffled: one order, whatever Hydra's shuffle drew
            values = sorted(values)
        return _categorical(key, prefix, values)
    except SweepError:
        raise
    except (ValueError, TypeError, AssertionError) as err:
        raise SweepError(f"search expression {override.input_line!r}: {err}") from None


def _range_distribution(value: Any) -> BaseDistribution:
    """``range(start, stop, step)`` as upstream maps it: stop is the (inclusive) high end."""
    start, stop, step = value.start, value.stop, value.step
    if any(isinstance(v, float) for v in (start, stop, step)):
        return FloatDistribution(float(start), float(stop), step=float(step))
    return IntDistribution(int(start), int(stop), step=int(step))


def grid_values(key: str, dist: BaseDistribution) -> list[Any]:
    """The grid sampler's values of one distribution, as upstream builds them: the choices, or
    low, low + step, ... below high (so ``range``'s grid excludes stop, as Hydra's range does)."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    step = getattr(dist, "step", None)
    if step is None or getattr(dist, "log", False):
        raise SweepError(
            f"the grid sampler needs discrete values: {key} is {dist}; use choice(...) or "
            "range(start, stop, step)"
        )
    n_items = int((dist.high - dist.low) // step)
    return [dist.low + i * step for i in range(n_items)]


def from_search_space(entries: dict[str, Any]) -> dict[str, BaseDistribution]:
    """The deprecated ``hydra.sweeper.search_space`` entries as Optuna distributions."""
    out: dict[str, BaseDistribution] = {}
    for key, entry in entries.items():
        where = f"hydra.sweeper.search_space.{key}"
        if not isinstance(entry, dict) or "type" not in entry:
            raise SweepError(f"{where}: give type (int, float or categorical) and its bounds")
        kind = str(entry["type"]).split(".")[-1]
        unknown = sorted(set(entry) - {"type", "choices", "low", "high", "log", "step"})
        if unknown:
            raise SweepError(f"{where}: unknown key {unknown[0]!r}")
        try:
            if kind == "categorical":
                out[key] = CategoricalDistribution(list(entry.get("choices") or []))
                continue
            low, high, log = entry.get("low"), entry.get("high"), bool(entry.get("log", False))
            step = entry.get("step")
            if kind == "int":
                out[key] = IntDistribution(
                    int(low), int(high), log=log, step=1 if log or step is None else int(step)
                )
            elif kind == "float":
                out[key] = FloatDistribution(
                    float(low), float(high), log=log, step=None if step is None else float(step)
                )
            else:
                raise SweepError(f"{where}: type {kind!r} is not int, float or categorical")
        except (TypeError, ValueError) as err:
            raise SweepError(f"{where}: {first_line(err)}") from None
    return out


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
