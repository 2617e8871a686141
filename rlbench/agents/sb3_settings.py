"""SB3 constructor settings from the ``algo`` config group, checked without torch or SB3.

An ``algo`` group is checked against an algorithm's constructor signature: a misspelt key, a
string where a number is wanted, a number outside what can work, an unknown activation or
optimizer name are each a ``UserError``. :mod:`rlbench.agents.sb3_agents` checks through here
and then maps names to torch classes; an agent that does without torch (a numpy DQN) checks
the same ``algo.*`` settings the same way, with :data:`DQN_PARAMETERS` standing in for SB3's
signature (tests/agents/test_sb3_settings.py fails when an SB3 upgrade changes it).

May import :mod:`rlbench.errors` and :mod:`rlbench.agents.base` only (neither imports torch):
importing this module must not import torch or stable_baselines3.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

from rlbench.agents.base import check_finite_settings, unknown_key_error
from rlbench.errors import UserError

__all__ = [
    "ACTIVATION_NAMES",
    "ADAM_NAMES",
    "DQN_PARAMETERS",
    "OPTIMIZER_NAMES",
    "RANGES",
    "SCHEDULED",
    "LinearSchedule",
    "check_adam_options",
    "check_policy_kwarg_names",
    "check_range",
    "check_sb3_settings",
    "check_train_freq",
    "coerce",
]

#: ``policy_kwargs.activation_fn`` names (sb3_agents.ACTIVATIONS maps them to torch classes).
ACTIVATION_NAMES: tuple[str, ...] = ("tanh", "relu", "elu", "leaky_relu", "gelu", "silu", "sigmoid")
#: ``policy_kwargs.optimizer_class`` names (sb3_agents.OPTIMIZERS maps them to torch classes).
OPTIMIZER_NAMES: tuple[str, ...] = ("adam", "adamw", "rmsprop", "sgd")
# Constructor arguments we set ourselves, not from config.
_OURS = {"self", "env", "seed", "device", "_init_setup_model"}

SCHEDULED = ("learning_rate", "clip_range", "clip_range_vf")  # SB3 takes a schedule for these


def _param(name: str, default: Any, annotation: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation
    )


#: ``inspect.signature(stable_baselines3.DQN.__init__).parameters`` of SB3 2.9.2 without the
#: arguments we set ourselves (:data:`_OURS`): same names, order, defaults and annotations.
#: Annotations naming SB3 classes are their source text (as ``from __future__ import
#: annotations`` would leave them), so that this module need not import SB3. Do not mutate.
DQN_PARAMETERS: dict[str, inspect.Parameter] = {
    p.name: p
    for p in (
        _param("policy", inspect.Parameter.empty, "str | type[DQNPolicy]"),
        _param("learning_rate", 1e-4, float | Callable[[float], float]),
        _param("buffer_size", 1_000_000, int),
        _param("learning_starts", 100, int),
        _param("batch_size", 32, int),
        _param("tau", 1.0, float),
        _param("gamma", 0.99, float),
        _param("train_freq", 4, int | tuple[int, str]),
        _param("gradient_steps", 1, int),
        _param("replay_buffer_class", None, "type[ReplayBuffer] | None"),
        _param("replay_buffer_kwargs", None, dict[str, Any] | None),
        _param("optimize_memory_usage", False, bool),
        _param("n_steps", 1, int),
        _param("target_update_interval", 10000, int),
        _param("exploration_fraction", 0.1, float),
        _param("exploration_initial_eps", 1.0, float),
        _param("exploration_final_eps", 0.05, float),
        _param("max_grad_norm", 10, float),  # SB3 writes the int 10 (coerce reads the float)
        _param("stats_window_size", 100, int),
        _param("tensorboard_log", None, str | None),
        _param("policy_kwargs", None, dict[str, Any] | None),
        _param("verbose", 0, int),
    )
}


def check_sb3_settings(
    algo: str,
    cfg: Mapping[str, Any],
    parameters: Mapping[str, inspect.Parameter],
    own_keys: tuple[str, ...],
) -> dict[str, Any]:
    """The constructor arguments in ``cfg`` (an ``algo`` group as a plain mapping), checked
    against ``parameters`` (a constructor's signature): ``UserError`` for an unknown key, a
    non-finite or out-of-range number, a wrong type, an unknown activation/optimizer name.
    ``name`` and ``own_keys`` (ours, not the constructor's) are left out; ``lin_<start>``
    becomes a :class:`LinearSchedule`, a ``train_freq`` list a tuple. ``policy_kwargs`` names
    stay strings (in any case, as written: look them up lower-cased)."""
    settings = {k: v for k, v in cfg.items() if k != "name" and k not in own_keys}
    check_finite_settings(algo, settings)
    known = [p for p in parameters if p not in _OURS] + list(own_keys)
    for key, value in list(settings.items()):
        if key not in known:
            raise unknown_key_error(algo, key, known)
        if key in SCHEDULED and isinstance(value, str):
            settings[key] = LinearSchedule.parse(algo, key, value)
            continue
        settings[key] = coerce(algo, key, value, parameters[key])
        check_range(algo, key, settings[key])
        if key == "train_freq":
            check_train_freq(algo, settings[key])
    if settings.get("policy_kwargs") is not None:
        settings["policy_kwargs"] = check_policy_kwarg_names(algo, settings["policy_kwargs"])
        settings["policy_kwargs"] = check_adam_options(algo, settings["policy_kwargs"])
    if isinstance(settings.get("train_freq"), list):  # YAML has no tuples: [4, step]
        settings["train_freq"] = tuple(settings["train_freq"])
    return settings


class LinearSchedule:
    """``lin_<start>`` (rl-zoo3's notation, so its tuned values carry over as written): the
    value falls linearly from ``start`` to 0 over training. SB3 calls a schedule with the
    progress remaining, 1 at the start and 0 at the end."""

    def __init__(self, start: float) -> None:
        self.start = start

    def __call__(self, progress_remaining: float) -> float:
        return progress_remaining * self.start

    def __repr__(self) -> str:
        return f"lin_{self.start}"

    @classmethod
    def parse(cls, algo: str, key: str, text: str) -> LinearSchedule:
        head, _, number = text.partition("_")
        try:
            start = float(number)
        except ValueError:
            start = float("nan")
        if head != "lin" or not math.isfinite(start) or start < 0:
            raise UserError(
                f"algo.{key}={text!r} must be a number or lin_<start> (a linear decay from "
                f"start to 0 over training, e.g. lin_0.001) ({algo})"
            )
        return cls(start)


def check_policy_kwarg_names(algo: str, policy_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``policy_kwargs`` as a new dict, unchanged, once its ``activation_fn`` and
    ``optimizer_class`` names (any case) are among :data:`ACTIVATION_NAMES` and
    :data:`OPTIMIZER_NAMES`; ``UserError`` otherwise. Non-string values are left alone."""
    kwargs = dict(policy_kwargs)
    for key, names in (("activation_fn", ACTIVATION_NAMES), ("optimizer_class", OPTIMIZER_NAMES)):
        name = kwargs.get(key)
        if isinstance(name, str) and name.lower() not in names:
            raise UserError(
                f"algo.policy_kwargs.{key}={name!r} is unknown for {algo}; "
                f"choose one of {', '.join(names)}"
            )
    return kwargs


#: ``policy_kwargs.optimizer_class`` names whose ``optimizer_kwargs`` :func:`check_adam_options`
#: checks (SB3's policies build Adam when none is named).
ADAM_NAMES = ("adam", "adamw")


def check_adam_options(algo: str, policy_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``policy_kwargs`` with Adam's (or AdamW's) ``optimizer_kwargs`` checked as torch checks
    them when it builds the optimizer: ``eps`` and ``weight_decay`` numbers >= 0, ``betas`` two
    numbers in [0, 1) (made floats: torch refuses an int), ``fused``/``foreach`` true, false or
    null and not both true. The numpy DQN never builds torch's Adam: without this, it trained
    on what SB3's agent refused (``eps=-1``, a beta of 1.5) or crashed (``eps=abc``)."""
    options = policy_kwargs.get("optimizer_kwargs")
    name = policy_kwargs.get("optimizer_class", "adam")
    if not isinstance(options, Mapping) or str(name).lower() not in ADAM_NAMES:
        return dict(policy_kwargs)
    key, options = "algo.policy_kwargs.optimizer_kwargs", dict(options)
    for option in ("eps", "weight_decay"):
        value = options.get(option)
        if option in options and (not _is_number(value) or not value >= 0):
            raise UserError(f"{key}.{option} must be a number >= 0, got {value!r} ({algo})")
    if "betas" in options:
        betas = options["betas"]
        pair = isinstance(betas, list | tuple) and len(betas) == 2
        if not pair or not all(_is_number(b) and 0 <= b < 1 for b in betas):
            raise UserError(
                f"{key}.betas must be two numbers from 0 to below 1, e.g. [0.9, 0.999]; "
                f"got {betas!r} ({algo})"
            )
        options["betas"] = (float(betas[0]), float(betas[1]))
    for option in ("fused", "foreach"):
        if options.get(option) not in (None, True, False):
            raise UserError(
                f"{key}.{option} must be true, false or null, got {options[option]!r} ({algo})"
            )
    if options.get("fused") and options.get("foreach"):
        raise UserError(
            f"{key}.fused and {key}.foreach cannot both be true (torch runs one Adam kernel or "
            f"the other): set one of them to false ({algo})"
        )
    return {**policy_kwargs, "optimizer_kwargs": options}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_train_freq(algo: str, value: Any) -> None:
    """``UserError`` unless ``train_freq`` is SB3's form: ``N`` steps or ``[N, step|episode]``
    with ``N >= 1`` (SB3 asserts ``N > 0`` only once training has started; a numpy loop that
    collects no step between updates would never end)."""
    pair = isinstance(value, list | tuple) and len(value) == 2
    count = value[0] if pair else value
    ok = isinstance(count, int) and not isinstance(count, bool) and count >= 1
    if not ok or (pair and value[1] not in ("step", "episode")):
        raise UserError(
            f"algo.train_freq must be N or [N, step] or [N, episode] with N >= 1 (how many "
            f"steps or episodes between updates); got {value!r} ({algo})"
        )


def coerce(algo: str, key: str, value: Any, param: inspect.Parameter) -> Any:
    """Check a setting against the type of its SB3 default: ``UserError`` for a string or bool
    where SB3 wants a number (or the reverse); ``1e6`` for an integer setting becomes ``1000000``
    (a setting annotated ``float`` takes any number, though its default is written ``10``).
    Values of other types (lists, dicts, schedules) are left to SB3."""
    default = param.default
    if param.annotation in (float, "float") and isinstance(default, int):
        default = float(default)
    if value is None or default is None or default is inspect.Parameter.empty:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UserError(f"algo.{key}={value!r} must be true or false ({algo})")
    elif isinstance(default, int | float):
        if isinstance(value, str | bool):
            raise UserError(f"algo.{key}={value!r} must be a number ({algo})")
        if isinstance(default, int) and isinstance(value, float):
            if not value.is_integer():
                raise UserError(f"algo.{key}={value!r} must be an integer ({algo})")
            return int(value)
    return value


#: SB3 settings -> (lowest, highest) value that can work; SB3 itself asserts on few of them,
#: and the others (``n_epochs=0``, a DQN ``batch_size=0``) fail later as a NaN loss, which
#: would be reported as divergence. ``gradient_steps=-1`` is SB3's "as many as steps".
RANGES: dict[str, tuple[float, float]] = {
    "n_steps": (1, math.inf),
    "batch_size": (1, math.inf),
    "n_epochs": (1, math.inf),
    "buffer_size": (1, math.inf),
    "learning_starts": (0, math.inf),
    "target_update_interval": (1, math.inf),
    "gradient_steps": (-1, math.inf),
    "gamma": (0, 1),
    "gae_lambda": (0, 1),
    "tau": (0, 1),
    "exploration_fraction": (0, 1),
    "exploration_initial_eps": (0, 1),
    "exploration_final_eps": (0, 1),
    "ent_coef": (0, math.inf),
    "vf_coef": (0, math.inf),
    "max_grad_norm": (0, math.inf),
    "learning_rate": (0, math.inf),
    "clip_range": (0, math.inf),
}


def check_range(algo: str, key: str, value: Any) -> None:
    """``UserError`` for a number outside what :data:`RANGES` says can work."""
    bounds = RANGES.get(key)
    if bounds is None or isinstance(value, bool) or not isinstance(value, int | float):
        return
    low, high = bounds
    if key == "gradient_steps" and value == 0:
        raise UserError(f"algo.gradient_steps must be >= 1 (or -1: one per step), got 0 ({algo})")
    if not low <= value <= high:
        want = f">= {low:g}" if high == math.inf else f"from {low:g} to {high:g}"
        raise UserError(f"algo.{key} must be {want}, got {value!r} ({algo})")
