"""What an objective sees and returns, and the sums and means over sequences and groups that objectives share.

An objective is ``fn(batch, context, **options) -> Loss`` (crl/objectives/registry.py registers it by name):

- ``Batch``: whole groups (every rollout of each group it holds) as padded [B, T] tensors of per-token
  log-probs, with the rewards, the verifier's split and the group index of each row;
- ``Context``: what the trainer knows beyond the batch, the same for every micro-batch of a step;
- ``Loss``: the loss as a mean over the objective's own unit (a group, a sequence or a token: whatever its
  equation averages over), how many units that is, and its statistics by kind: ``means`` are averages (a step
  reports their mean over its micro-batches weighted by units), ``counts`` count groups (a step reports their
  sum, a round their sum over one epoch's steps). The trainer back-propagates ``value * units`` per
  micro-batch and divides the summed gradient by the step's units: the update does not depend on how the
  step's groups were split.

Group operations work on the flat [B] rows with the group index (no Python loop over groups).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from crl.data.rounds import mixed


@dataclass(frozen=True)
class Batch:
    """Whole groups of rollouts, padded to [B, T]; ``group`` numbers the groups 0..G-1."""

    logp: Tensor  # [B, T] log-prob of each taken token under the policy being trained (with grad)
    old_logp: Tensor  # [B, T] the same under the policy before the round's first update (no grad)
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


@dataclass(frozen=True)
class StepInfo:
    """The whole optimiser step, for a term that must be computed over it rather than per micro-batch."""

    kl: float  # masked mean of old_logp - logp over the step's tokens, before this step's update
    tokens: float  # completion tokens in the step
    groups: float  # groups in the step


@dataclass(frozen=True)
class Context:
    """What the trainer knows beyond the batch."""

    fraction_done: float = 0.0  # rounds done over rounds planned, in [0, 1] (ConSPO's margin curriculum)
    max_new_tokens: int | None = None  # the rollouts' generation limit
    step: StepInfo | None = None  # the whole optimiser step, for objectives registered with ``needs_step``

    def limit(self, objective: str) -> int:
        if self.max_new_tokens is None:
            raise ValueError(f"{objective} needs the generation limit (Context.max_new_tokens)")
        return self.max_new_tokens


@dataclass(frozen=True)
class Loss:
    """An objective's result on one micro-batch (see the module docstring)."""

    value: Tensor  # the mean over the units, with its gradient
    units: float
    means: dict[str, float] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)


def seq_sum(x: Tensor, mask: Tensor) -> Tensor:
    """Sum over each sequence's completion tokens: [B, T] -> [B]."""
    return (x * mask).sum(-1)


def seq_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over each sequence's completion tokens: [B, T] -> [B]."""
    return seq_sum(x, mask) / mask.sum(-1).clamp(min=1)


def token_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over all completion tokens of the batch: [B, T] -> []."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(policy || reference): exp(ref - logp) - (ref - logp) - 1 >= 0."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


MAX_LOG_RATIO = 20.0  # e^20: far past any clip range, short of float32 overflow


def reference(b: Batch) -> Tensor:
    """The reference model's log-probs (the trainer supplies them to objectives registered with ``reference``)."""
    if b.ref_logp is None:
        raise ValueError("this objective needs the reference model's log-probs (Batch.ref_logp)")
    return b.ref_logp


def ratio(b: Batch) -> Tensor:
    """Per-token importance ratio pi / pi_old, the log-ratio clamped so that it cannot overflow."""
    return torch.exp((b.logp - b.old_logp).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO))


def entropy(b: Batch) -> float:
    """Mean of -logp over the completion tokens: the policy's entropy estimated from its own samples."""
    return float(token_mean(-b.logp.detach(), b.mask))


def kl_stat(b: Batch) -> float:
    """Mean k3 estimate of KL(policy || reference) over the completion tokens."""
    return float(token_mean(k3(b.logp.detach(), reference(b)), b.mask))


# ---- groups (segment operations over the group index) ---------------------------------------------


def group_sum(x: Tensor, group: Tensor, G: int) -> Tensor:
    """Sum of x over each group: [B] -> [G]."""
    return x.new_zeros(G).index_add(0, group, x)


def group_mean(x: Tensor, group: Tensor, G: int, where: Tensor | None = None) -> Tensor:
    """Mean of x over each group's rows (those in ``where``): [B] -> [G]; 0 for an empty set."""
    w = torch.ones_like(x) if where is None else where.to(x.dtype)
    return group_sum(torch.where(w > 0, x, 0.0), group, G) / group_sum(w, group, G).clamp(min=1)


def group_std(x: Tensor, group: Tensor, G: int) -> Tensor:
    """Sample standard deviation (K - 1 in the denominator, as torch.std) of x in each group: [B] -> [G]."""
    dev2 = (x - group_mean(x, group, G)[group]) ** 2
    return (group_sum(dev2, group, G) / (group_sum(torch.ones_like(x), group, G) - 1).clamp(min=1)).sqrt()


@dataclass(frozen=True)
class Groups:
    """Who is a positive or a negative, and which groups have contrast (``keep``)."""

    group: Tensor  # [B]
    G: int
    pos: Tensor  # [B] bool
    neg: Tensor  # [B] bool
    present: Tensor  # [G] bool, groups with at least one row
    contrast: Tensor  # [G] bool, mixed groups: a positive and a negative
    keep: Tensor  # [G] bool, groups used

    @property
    def units(self) -> int:
        return int(self.keep.sum())

    @property
    def dropped(self) -> int:
        return int((self.present & ~self.keep).sum())

    @property
    def flat(self) -> int:
        return int((self.present & ~self.contrast).sum())

    def mean(self, x: Tensor) -> Tensor:
        """Mean of a per-group value over the groups used: [G] -> []; 0 (with a grad path) if none."""
        return torch.where(self.keep, x, 0.0).sum() / self.keep.sum().clamp(min=1)


def groups(b: Batch, keep: Tensor | None = None, *, flat: bool = False) -> Groups:
    """Split the batch into positives and negatives; keep the mixed groups (and ``keep``), or with ``flat``
    every group."""
    G = b.num_groups
    pos = b.pos
    npos = group_sum(pos.to(b.mask.dtype), b.group, G)
    n = group_sum(b.mask.new_ones(len(b.reward)), b.group, G)
    contrast = mixed(npos, n)
    used = n > 0 if flat else contrast
    return Groups(b.group, G, pos, ~pos, n > 0, contrast, used if keep is None else used & keep)
