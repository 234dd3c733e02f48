"""The batch every objective sees, and the registry that makes an objective available by name."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass
from typing import Callable

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

    @property
    def num_groups(self) -> int:
        return int(self.group.max().item()) + 1 if self.group.numel() else 0


Stats = dict[str, float]
Objective = Callable[..., tuple[Tensor, Stats]]
OBJECTIVES: dict[str, Objective] = {}


def register(name: str) -> Callable[[Objective], Objective]:
    """Make an objective available to ``crl train --objective NAME`` (padding zeroed on the way in)."""

    def add(fn: Objective) -> Objective:
        @functools.wraps(fn)
        def run(b: Batch, **kwargs) -> tuple[Tensor, Stats]:
            return fn(zero_padding(b), **kwargs)

        OBJECTIVES[name] = run
        return run

    return add


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise CrlError(f"unknown objective {name!r}; choose one of: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name]


def options(name: str) -> dict[str, object]:
    """The tunable keyword options of an objective with their defaults (context arguments excluded)."""
    params = inspect.signature(get_objective(name)).parameters
    return {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in CONTEXT}


CONTEXT = ("progress", "max_new_tokens")


def zero_padding(b: Batch) -> Batch:
    """The batch with 0 in every padded position of its log-prob tensors (gradient 0 there)."""
    pad = b.mask <= 0

    def clean(x: Tensor | None) -> Tensor | None:
        return None if x is None else x.masked_fill(pad, 0.0)

    return dataclasses.replace(b, logp=clean(b.logp), old_logp=clean(b.old_logp), ref_logp=clean(b.ref_logp))
