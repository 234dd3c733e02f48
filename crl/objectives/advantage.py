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
from crl.objectives.registry import FRACTION, NON_NEGATIVE, POSITIVE, Batch, Stats, register


CLIP = {"clip_eps": FRACTION, "beta": NON_NEGATIVE, "eps": POSITIVE}


@register("grpo", reference="beta", tis=True, checks=CLIP)
def grpo(b: Batch, *, clip_eps: float = 0.2, beta: float = 0.0, eps: float = 1e-4) -> tuple[Tensor, Stats]:
    """GRPO: A_k = (r_k - mean r) / (std r + eps); per token the loss -min(rho A, clip(rho, 1 - clip_eps,
    1 + clip_eps) A) + beta k3(logp, ref), averaged over each sequence, then over the group; the reference is
    the run's starting model unless ``--ref``. Unit: group."""
    g = groups(b, flat=True)
    adv = group_advantage(b.reward.to(b.logp.dtype), g.group, g.G, std_eps=eps)
    per_token, clipped = clipped_surrogate(b, adv, clip_eps, clip_eps)
    if beta:
        per_token = per_token + beta * k3(b.logp, reference(b))
    loss = g.mean(group_mean(seq_mean(per_token, b.mask), g.group, g.G))
    stats = {"clip_frac": float(token_mean(clipped, b.mask)), "groups_flat": float(g.flat)}
    if beta:
        stats["kl"] = kl_stat(b)
    return loss, stats | {"units": float(g.units), "entropy": entropy(b)}


@register(
    "dapo", context=("max_new_tokens",), dynamic_sampling=True, drops_flat=True, tis=True,
    checks={"clip_low": FRACTION, "clip_high": POSITIVE, "overlong_cache": NON_NEGATIVE, "eps": POSITIVE},
)
def dapo(
    b: Batch,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    overlong_cache: int | None = None,
    eps: float = 1e-4,
    max_new_tokens: int,
) -> tuple[Tensor, Stats]:
    """DAPO: reward +1/-1 plus the overlong penalty (0 up to L_max - L_cache, then linear down to -1 at
    L_max = ``max_new_tokens``); A = (r - mean r) / (std r + eps); clip range (1-clip_low, 1+clip_high);
    the groups whose accuracy is 0 or 1 are dropped; mean over all tokens of the batch. Unit: token.
    ``overlong_cache`` None takes a fifth of max_new_tokens (the paper's 4096 of 20480); 0 turns it off.
    Its dynamic sampling (only groups with a right and a wrong answer, the batch filled) is on by default
    in ``crl iterate`` for this objective."""
    cache = max_new_tokens // 5 if overlong_cache is None else overlong_cache
    if cache >= max_new_tokens:
        raise CrlError(f"dapo: overlong_cache = {cache} must be below the generation limit ({max_new_tokens} tokens)")
    g = groups(b)
    r = torch.where(g.pos, 1.0, -1.0).to(b.logp.dtype)
    if cache:
        r = r + ((max_new_tokens - cache - b.mask.sum(-1)) / cache).clamp(-1, 0)
    adv = group_advantage(r, g.group, g.G, std_eps=eps)
    per_token, clipped = clipped_surrogate(b, adv, clip_low, clip_high)
    tokens = b.mask * g.keep[g.group][:, None]
    stats = {"clip_frac": float(token_mean(clipped, tokens)), "groups_dropped": float(g.dropped)}
    return token_mean(per_token, tokens), stats | {"units": float(tokens.sum()), "entropy": entropy(b)}


@register("dr-grpo", context=("max_new_tokens",), tis=True, checks={"clip_eps": FRACTION})
def dr_grpo(b: Batch, *, clip_eps: float = 0.2, max_new_tokens: int) -> tuple[Tensor, Stats]:
    """Dr. GRPO: A_k = r_k - mean r (no std); each sequence's token sum of the clipped surrogate divided by
    the generation limit ``max_new_tokens`` instead of its length; mean over the group; no KL. Unit: group."""
    g = groups(b, flat=True)
    adv = group_advantage(b.reward.to(b.logp.dtype), g.group, g.G)
    per_token, clipped = clipped_surrogate(b, adv, clip_eps, clip_eps)
    loss = g.mean(group_mean(seq_sum(per_token, b.mask) / max_new_tokens, g.group, g.G))
    stats = {"clip_frac": float(token_mean(clipped, b.mask)), "groups_flat": float(g.flat)}
    return loss, stats | {"units": float(g.units), "entropy": entropy(b)}


@register("rft")
def rft(b: Batch) -> tuple[Tensor, Stats]:
    """Rejection-sampling fine-tuning: mean token log-likelihood of the positives only. Unit: sequence."""
    pos = b.pos.to(b.logp.dtype)
    n = pos.sum()
    loss = -(seq_mean(b.logp, b.mask) * pos).sum() / n.clamp(min=1)
    return loss, {"units": float(n), "entropy": entropy(b)}
