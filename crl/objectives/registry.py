"""The registries that make objectives, advantage estimators and loss aggregations available by name, and the
checks of an objective's options.

An objective (``fn(batch, context, **options) -> Loss``, crl/objectives/batch.py) is registered with what it
needs from the trainer, declared rather than guessed:

- ``reference``: True when it needs a frozen reference model, or the name of the option that turns one on;
- ``needs_step``: True when it reads ``Context.step`` (a no-grad pass over the whole optimiser step first);
- ``dynamic_sampling``: True when it expects every group to have a right and a wrong answer (DAPO);
- ``drops_flat``: True when a group whose rollouts are all right or all wrong adds nothing to its loss, its
  gradient or its units, so the trainer can leave such groups out without changing the update;
- ``tis``: True when it applies the truncated importance weights of ``train.tis_cap`` (clipped objectives);
- ``checks``: the valid range of each option (every float option must also be finite).

Advantage estimators (``fn(rewards, groups, eps) -> advantages``) and loss aggregations (``fn(per_token, batch,
groups, context) -> (loss, units)``) are registered by name as well: the clipped policy-gradient objectives
compose one of each (crl/objectives/policy_gradient.py).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import Tensor

from crl.errors import CrlError
from crl.objectives.batch import Batch, Context, Groups, Loss

Objective = Callable[..., Loss]
Advantage = Callable[[Tensor, Groups, float], Tensor]
Aggregation = Callable[[Tensor, Batch, Groups, Context], tuple[Tensor, Tensor]]
Check = tuple[Callable[[Any], bool], str]


@dataclass(frozen=True)
class Spec:
    """What an objective needs from the trainer (see the module docstring)."""

    reference: bool | str = False
    needs_step: bool = False
    dynamic_sampling: bool = False
    drops_flat: bool = False
    tis: bool = False
    checks: dict[str, Check] = field(default_factory=dict)


OBJECTIVES: dict[str, Objective] = {}
SPECS: dict[str, Spec] = {}

POSITIVE: Check = (lambda v: v > 0, "> 0")
NON_NEGATIVE: Check = (lambda v: v >= 0, ">= 0")
FRACTION: Check = (lambda v: 0 < v < 1, "in (0, 1)")


def choice(*values: str) -> Check:
    return (lambda v: v in values, f"one of {', '.join(values)}")


def register(name: str, **spec: Any) -> Callable[[Objective], Objective]:
    """Make an objective available to ``crl train --objective NAME`` (padding zeroed on the way in; the
    context defaults to an empty one)."""

    def add(fn: Objective) -> Objective:
        _add(OBJECTIVES, "objective", name, fn)

        @functools.wraps(fn)
        def run(b: Batch, context: Context | None = None, **options: Any) -> Loss:
            return fn(zero_padding(b), context if context is not None else Context(), **options)

        OBJECTIVES[name], SPECS[name] = run, Spec(**spec)
        return run

    return add


ADVANTAGES: dict[str, Advantage] = {}
AGGREGATIONS: dict[str, Aggregation] = {}


def advantage(name: str) -> Callable[[Advantage], Advantage]:
    """Make an advantage estimator available by name."""
    return lambda fn: _add(ADVANTAGES, "advantage estimator", name, fn)


def aggregation(name: str) -> Callable[[Aggregation], Aggregation]:
    """Make a loss aggregation available by name."""
    return lambda fn: _add(AGGREGATIONS, "loss aggregation", name, fn)


def _add(registry: dict[str, Callable], kind: str, name: str, fn: Callable) -> Callable:
    if name in registry:
        raise ValueError(f"{kind} {name!r} is registered twice")
    registry[name] = fn
    return fn


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise CrlError(f"unknown objective {name!r}; choose one of: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name]


def spec(name: str) -> Spec:
    get_objective(name)
    return SPECS[name]


def options(name: str) -> dict[str, object]:
    """The options of an objective (its keyword-only arguments) with their defaults."""
    params = inspect.signature(get_objective(name)).parameters
    return {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY}


def check_options(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """``--option NAME=VALUE`` options as the objective's types, each checked: known, the right type, finite, in range."""
    known, hints, checks = options(name), typing.get_type_hints(get_objective(name).__wrapped__), spec(name).checks
    out: dict[str, Any] = {}
    for key, value in given.items():
        if key not in known:
            raise CrlError(f"--option {key}: {name} has no such option; it takes {', '.join(known) or 'none'}")
        kind = next((a for a in typing.get_args(hints[key]) if a is not type(None)), hints[key])
        value = _as(kind, value, f"--option {key}={value}")
        if isinstance(value, float) and not math.isfinite(value):
            raise CrlError(f"--option {key}={value}: must be a finite number")
        if key in checks and value is not None and not checks[key][0](value):
            raise CrlError(f"--option {key}={value}: {name} needs {key} {checks[key][1]}")
        out[key] = value
    return out


def _as(kind: type, value: Any, where: str) -> Any:
    if not isinstance(value, str):
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        raise CrlError(f"{where}: expected a {kind.__name__}")
    if value.strip().lower() in ("none", "null") and kind is not str:
        return None
    try:
        if kind is bool:
            if value.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError
            return value.lower() in ("1", "true", "yes", "on")
        return kind(float(value)) if kind is int and float(value).is_integer() else kind(value)
    except ValueError:
        raise CrlError(f"{where}: expected a {kind.__name__}") from None


def needs_reference(name: str, opts: dict[str, Any]) -> bool:
    """Whether the objective, with these options, uses a frozen reference model."""
    ref = spec(name).reference
    if isinstance(ref, str):
        return bool(opts.get(ref, options(name)[ref]))
    return ref


def zero_padding(b: Batch) -> Batch:
    """The batch with 0 in every padded position of its per-token tensors (gradient 0 there)."""
    pad = b.mask <= 0

    def clean(x: Tensor | None) -> Tensor | None:
        return None if x is None else x.masked_fill(pad, 0.0)

    return dataclasses.replace(
        b, logp=clean(b.logp), old_logp=clean(b.old_logp), ref_logp=clean(b.ref_logp),
        behaviour_logp=clean(b.behaviour_logp), is_weight=clean(b.is_weight),
    )
