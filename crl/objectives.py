"""Training objectives: one short pure function of tensors per method, registered by name.

Every objective sees a batch of whole groups (all K rollouts of each prompt it contains) as padded
[B, T] tensors of per-token log-probs, and returns ``(loss, stats)``:

- ``loss`` is the mean over the objective's own *unit* (a group, a sequence or a token, whatever the
  equation in OBJECTIVES.md averages over), so the function reads like its equation;
- ``stats["units"]`` is how many units that mean was taken over. The trainer back-propagates
  ``loss * units`` per micro-batch and divides the accumulated gradient by the total, which makes the
  result exact however the groups are split into micro-batches.

Options are keyword arguments with the paper's defaults; ``crl train -o NAME=VALUE`` sets them.
Context the trainer knows (``progress`` in [0, 1], ``max_new_tokens``) is passed to the functions that
name it in their signature.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor


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
    """Make an objective available to ``crl train --objective NAME``."""

    def add(fn: Objective) -> Objective:
        OBJECTIVES[name] = fn
        return fn

    return add


def get_objective(name: str) -> Objective:
    from crl.errors import CrlError

    if name not in OBJECTIVES:
        raise CrlError(f"unknown objective {name!r}; choose one of: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name]


def options(name: str) -> dict[str, object]:
    """The tunable keyword options of an objective with their defaults (context arguments excluded)."""
    params = inspect.signature(get_objective(name)).parameters
    return {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in CONTEXT}


CONTEXT = ("progress", "max_new_tokens")


# ---- shared pieces --------------------------------------------------------------------------------


def seq_sum(x: Tensor, mask: Tensor) -> Tensor:
    """Sum over each sequence's completion tokens: [B, T] -> [B]."""
    return (x * mask).sum(-1)


def seq_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over each sequence's completion tokens: [B, T] -> [B]."""
    return seq_sum(x, mask) / mask.sum(-1).clamp(min=1)


# ---- objectives ---------------------------------------------------------------------------------


@register("rft")
def rft(b: Batch) -> tuple[Tensor, Stats]:
    """Rejection-sampling fine-tuning: mean token log-likelihood of the positives only."""
    pos = (b.reward > 0).float()
    n = pos.sum()
    loss = -(seq_mean(b.logp, b.mask) * pos).sum() / n.clamp(min=1)
    return loss, {"units": float(n)}
