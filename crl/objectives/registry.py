"""The batch every objective sees, and the registry that makes an objective available by name.

An objective is registered with what it needs from the trainer, declared rather than guessed:

- ``context``: run-time facts passed as keyword arguments (``progress`` in [0, 1] of the planned rounds,
  ``max_new_tokens`` the generation limit from the rollouts' metadata, ``step`` a ``StepInfo`` with the KL to
  the behaviour policy over the whole optimiser step, its tokens and its groups);
- ``reference``: True when it needs a frozen reference model, or the name of the option that turns one on;
- ``dynamic_sampling``: True when it expects every group to have a right and a wrong answer (DAPO);
- ``drops_flat``: True when a group whose rollouts are all right or all wrong adds nothing to its loss, its
  gradient or its units, so the trainer can leave such groups out without changing the update;
- ``tis``: True when it applies the truncated importance weights of ``train.tis_cap`` (clipped objectives);
- ``checks``: the valid range of each option (every float option must also be finite).
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


@dataclass(frozen=True)
class Batch:
    """Whole groups of rollouts, padded to [B, T]; ``group`` numbers the groups 0..G-1."""

    logp: Tensor  # [B, T] log-prob of each taken token under the policy being trained (with grad)
    old_logp: Tensor  # [B, T] the same under the behaviour policy (no grad)
    mask: Tensor  # [B, T] float, 1.0 on completion tokens
    reward: Tensor  # [B] verifier reward
    group: Tensor  # [B] long, group index in 0..G-1
    ref_logp: Tensor | None = None  # [B, T] under the frozen reference model, where one is given
    positive: Tensor | None = None  # [B] bool, the verifier's split; None: reward > 0
    behaviour_logp: Tensor | None = None  # [B, T] the sampler's own log-probs
    is_weight: Tensor | None = None  # [B, T] truncated importance weight of each token (train.tis_cap)

    @property
    def num_groups(self) -> int:
        return int(self.group.max().item()) + 1 if self.group.numel() else 0

    @property
    def pos(self) -> Tensor:
        return self.reward > 0 if self.positive is None else self.positive


Stats = dict[str, float]
Objective = Callable[..., tuple[Tensor, Stats]]
Check = tuple[Callable[[Any], bool], str]
CONTEXT = ("progress", "max_new_tokens", "step")


@dataclass(frozen=True)
class StepInfo:
    """The whole optimiser step, for a term that must be computed over it rather than per micro-batch."""

    kl: float  # masked mean of old_logp - logp over the step's tokens, before this step's update
    tokens: float  # completion tokens in the step
    groups: float  # groups in the step


@dataclass(frozen=True)
class Spec:
    """What an objective needs from the trainer (see the module docstring)."""

    context: tuple[str, ...] = ()
    reference: bool | str = False
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
    """Make an objective available to ``crl train --objective NAME`` (padding zeroed on the way in)."""

    def add(fn: Objective) -> Objective:
        if name in OBJECTIVES:
            raise ValueError(f"objective {name!r} is registered twice")
        unknown = set(spec.get("context", ())) - set(CONTEXT)
        if unknown:
            raise ValueError(f"objective {name!r}: unknown context {unknown}")

        @functools.wraps(fn)
        def run(b: Batch, **kwargs) -> tuple[Tensor, Stats]:
            return fn(zero_padding(b), **kwargs)

        OBJECTIVES[name], SPECS[name] = run, Spec(**spec)
        return run

    return add


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise CrlError(f"unknown objective {name!r}; choose one of: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name]


def spec(name: str) -> Spec:
    get_objective(name)
    return SPECS[name]


def options(name: str) -> dict[str, object]:
    """The tunable keyword options of an objective with their defaults (context arguments excluded)."""
    params = inspect.signature(get_objective(name)).parameters
    return {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in spec(name).context}


def check_options(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """``-o NAME=VALUE`` options as the objective's types, each checked: known, the right type, finite, in range."""
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
