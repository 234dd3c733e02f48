"""The advantage-based baselines: GRPO, DAPO, Dr. GRPO, and rejection-sampling fine-tuning (RFT)."""

from __future__ import annotations

import torch
from torch import Tensor

from crl.errors import CrlError
from crl.objectives.ops import (
    clipped_surrogate,
    entropy,
    group_advantage,
    group_mean,
    groups,
    k3,
    kl_stat,
    reference,
    seq_mean,
    seq_sum,
    token_mean,
)
from crl.objectives.registry import Batch, Stats, register


@register("grpo")
def grpo(b: Batch, *, clip_eps: float = 0.2, beta: float = 0.0, eps: float = 1e-4) -> tuple[Tensor, Stats]:
    """GRPO: A_k = (r_k - mean r) / (std r + eps); per token the loss -min(rho A, clip(rho, 1 - clip_eps,
    1 + clip_eps) A) + beta k3(logp, ref), averaged over each sequence, then over the group. Unit: group."""
    g = groups(b, flat=True)
    adv = group_advantage(b.reward.to(b.logp.dtype), g.group, g.G, std_eps=eps)
    per_token, clipped = clipped_surrogate(b, adv, clip_eps, clip_eps)
    if beta:
        per_token = per_token + beta * k3(b.logp, reference(b))
    loss = g.mean(group_mean(seq_mean(per_token, b.mask), g.group, g.G))
    stats = {"clip_frac": float(token_mean(clipped, b.mask)), "groups_flat": float(g.flat)}
    if b.ref_logp is not None or beta:
        stats["kl"] = kl_stat(b)
    return loss, stats | {"units": float(g.units), "entropy": entropy(b)}


@register("dapo")
def dapo(
    b: Batch,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    overlong_cache: int | None = None,
    eps: float = 1e-4,
    max_new_tokens: int | None = None,
) -> tuple[Tensor, Stats]:
    """DAPO: reward +1/-1 plus the overlong penalty (0 up to L_max - L_cache, then linear down to -1 at
    L_max = ``max_new_tokens``); A = (r - mean r) / (std r + eps); clip range (1-clip_low, 1+clip_high);
    the groups whose accuracy is 0 or 1 are dropped; mean over all tokens of the batch. Unit: token.
    ``overlong_cache`` None takes a fifth of max_new_tokens (the paper's 4096 of 20480); 0 turns it off."""
    g = groups(b)
    r = torch.where(g.pos, 1.0, -1.0).to(b.logp.dtype)
    cache = max_new_tokens // 5 if overlong_cache is None and max_new_tokens else overlong_cache
    if max_new_tokens and cache:
        r = r + ((max_new_tokens - cache - b.mask.sum(-1)) / cache).clamp(-1, 0)
    adv = group_advantage(r, g.group, g.G, std_eps=eps)
    per_token, clipped = clipped_surrogate(b, adv, clip_low, clip_high)
    tokens = b.mask * g.keep[g.group][:, None]
    stats = {"clip_frac": float(token_mean(clipped, tokens)), "groups_dropped": float(g.dropped)}
    return token_mean(per_token, tokens), stats | {"units": float(tokens.sum()), "entropy": entropy(b)}


@register("dr-grpo")
def dr_grpo(b: Batch, *, clip_eps: float = 0.2, max_new_tokens: int | None = None) -> tuple[Tensor, Stats]:
    """Dr. GRPO: A_k = r_k - mean r (no std); each sequence's token sum of the clipped surrogate divided by
    the generation limit ``max_new_tokens`` instead of its length; mean over the group; no KL. Unit: group."""
    if not max_new_tokens:
        raise CrlError("dr-grpo needs max_new_tokens (the generation limit) from the trainer")
    g = groups(b, flat=True)
    adv = group_advantage(b.reward.to(b.logp.dtype), g.group, g.G)
    per_token, clipped = clipped_surrogate(b, adv, clip_eps, clip_eps)
    loss = g.mean(group_mean(seq_sum(per_token, b.mask) / max_new_tokens, g.group, g.G))
    stats = {"clip_frac": float(token_mean(clipped, b.mask)), "groups_flat": float(g.flat)}
    return loss, stats | {"units": float(g.units), "entropy": entropy(b)}


@register("rft")
def rft(b: Batch) -> tuple[Tensor, Stats]:
    """Rejection-sampling fine-tuning: mean token log-likelihood of the positives only. Unit: sequence."""
    pos = (b.reward > 0).to(b.logp.dtype)
    n = pos.sum()
    loss = -(seq_mean(b.logp, b.mask) * pos).sum() / n.clamp(min=1)
    return loss, {"units": float(n), "entropy": entropy(b)}
