"""Pieces the objectives share: sums and means over sequences, and segment operations over groups.

Group operations work on the flat [B] rows with the group index (no Python loop over groups), so an objective
over many groups is a few tensor operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from crl.objectives.registry import Batch, Stats


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


def clipped_surrogate(b: Batch, adv: Tensor, low: float, high: float) -> tuple[Tensor, Tensor]:
    """PPO's per-token loss -min(rho*A, clip(rho, 1-low, 1+high)*A) and where the clip is active; times the
    truncated importance weight min(pi_old / pi_sampler, cap) when the batch carries one (``train.tis_cap``)."""
    rho = ratio(b)
    a = adv[:, None]
    loss = -torch.minimum(rho * a, rho.clamp(1 - low, 1 + high) * a)
    if b.is_weight is not None:
        loss = loss * b.is_weight
    clipped = ((rho > 1 + high) & (a > 0)) | ((rho < 1 - low) & (a < 0))
    return loss, clipped.to(b.mask.dtype)



# ---- shared pieces: groups (segment ops over the group index, no loop) ------------------------------


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


def group_max(x: Tensor, group: Tensor, G: int, where: Tensor) -> Tensor:
    """Max of x over each group's rows in ``where``: [B] -> [G]; -inf for an empty set."""
    x = x.masked_fill(~where, -math.inf)
    return x.new_full((G,), -math.inf).scatter_reduce(0, group, x, "amax")


def group_logsumexp(x: Tensor, group: Tensor, G: int, where: Tensor) -> Tensor:
    """log sum exp of x over each group's rows in ``where``: [B] -> [G]; -inf (with a finite gradient of
    0) for an empty set."""
    top = group_max(x.detach(), group, G, where)
    top = torch.where(torch.isfinite(top), top, 0.0)
    total = group_sum(torch.exp(x - top[group]).masked_fill(~where, 0.0), group, G)
    some = total > 0
    return torch.where(some, top + torch.log(torch.where(some, total, 1.0)), -math.inf)


def group_pick(x: Tensor, group: Tensor, G: int, where: Tensor) -> Tensor:
    """Row index of the largest x among each group's rows in ``where`` (lowest index on a tie): [B] -> [G];
    B for an empty set."""
    B = x.shape[0]
    hit = where & (x == group_max(x, group, G, where)[group])
    rows = torch.arange(B, device=x.device).masked_fill(~hit, B)
    return torch.full((G,), B, device=x.device).scatter_reduce(0, group, rows, "amin")


def group_advantage(r: Tensor, group: Tensor, G: int, std_eps: float | None = None) -> Tensor:
    """r - mean r over the group, divided by (std r + std_eps) where std_eps is given: [B] -> [B]; 0 in a
    group whose rewards are all equal (even with std_eps 0)."""
    a = r - group_mean(r, group, G)[group]
    if std_eps is None:
        return a
    std = group_std(r, group, G)[group]
    return torch.where(std > 0, a / (std + std_eps), 0.0)


@dataclass(frozen=True)
class Groups:
    """Who is a positive or a negative, and which groups have contrast (``keep``)."""

    group: Tensor  # [B]
    G: int
    pos: Tensor  # [B] bool
    neg: Tensor  # [B] bool
    present: Tensor  # [G] bool, groups with at least one row
    contrast: Tensor  # [G] bool, groups with a positive and a negative
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
    """Split the batch into positives and negatives; keep the groups that have both (and ``keep``), or
    with ``flat`` every group."""
    G = b.num_groups
    pos = b.pos
    npos = group_sum(pos.to(b.mask.dtype), b.group, G)
    n = group_sum(torch.ones_like(b.mask[:, 0]), b.group, G)
    contrast = (npos > 0) & (npos < n)
    used = n > 0 if flat else contrast
    return Groups(b.group, G, pos, ~pos, n > 0, contrast, used if keep is None else used & keep)


def contrast_stats(g: Groups, score: Tensor) -> Stats:
    """Mean score of the positives and of the negatives (per group, then over the groups used)."""
    sp = float(g.mean(group_mean(score.detach(), g.group, g.G, g.pos)))
    sn = float(g.mean(group_mean(score.detach(), g.group, g.G, g.neg)))
    return {"score_pos": sp, "score_neg": sn, "score_gap": sp - sn, "groups_dropped": float(g.dropped)}


def infonce(z: Tensor, g: Groups) -> tuple[Tensor, Tensor]:
    """Each positive i against the negatives of its group: -log(e^{z_i} / (e^{z_i} + sum_{j in N} e^{z_j})),
    averaged over the group's positives: [G]; and the softmax weight the hardest negative gets there."""
    lse_neg = group_logsumexp(z, g.group, g.G, g.neg)[g.group]
    nll = F.softplus(lse_neg - z)  # = -log(e^z / (e^z + e^lse_neg)), finite for any z
    top_neg = group_max(z.detach(), g.group, g.G, g.neg)[g.group]
    hardest = torch.exp(top_neg - torch.logaddexp(z.detach(), lse_neg.detach()))
    return group_mean(nll, g.group, g.G, g.pos), group_mean(hardest, g.group, g.G, g.pos)
