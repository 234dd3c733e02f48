"""Clipped policy-gradient objectives, each an advantage estimator composed with a loss aggregation by name.

Per token, PPO's clipped surrogate on the ratio rho = pi / pi_old to the policy before the round's update,

    loss[k, t] = -min(rho A_k, clip(rho, 1 - clip_low, 1 + clip_high) A_k)  (+ beta k3(logp, ref))

where A_k is rollout k's advantage, computed from its group's rewards by an estimator registered with
``@advantage``, and the per-token losses become one number by an aggregation registered with ``@aggregation``
(which also sets the unit the trainer weights micro-batches by). GRPO, DAPO, Dr. GRPO and RLOO are presets of
this composition, each one registration; ``pg`` composes any estimator with any aggregation by name (GRPO with
a token mean: ``--objective pg --option advantage=normalised --option aggregation=token-mean``). The clip
statistics are split by side: ``clip_frac_low`` (ratio under 1 - clip_low, negative advantage),
``clip_frac_high`` (over 1 + clip_high, positive advantage) and their sum ``clip_frac``. RFT, the likelihood of
the positives alone, is the floor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from crl.errors import CrlError
from crl.objectives.batch import Batch, Context, Groups, Loss, entropy, group_mean, group_std, group_sum, groups, k3
from crl.objectives.batch import kl_stat, ratio, reference, seq_mean, seq_sum, token_mean
from crl.objectives.registry import ADVANTAGES, AGGREGATIONS, FRACTION, NON_NEGATIVE, POSITIVE, advantage, aggregation
from crl.objectives.registry import choice, register


# ---- advantage estimators: a rollout's advantage from its group's rewards ---------------------------


@advantage("normalised")
def normalised(r: Tensor, g: Groups, eps: float) -> Tensor:
    """GRPO's: (r - mean r) / (std r + eps) over the group (sample std); 0 where the rewards are all equal."""
    a = r - group_mean(r, g.group, g.G)[g.group]
    std = group_std(r, g.group, g.G)[g.group]
    return torch.where(std > 0, a / (std + eps), 0.0)


@advantage("centred")
def centred(r: Tensor, g: Groups, eps: float) -> Tensor:
    """Dr. GRPO's: r - mean r over the group (``eps`` unused)."""
    return r - group_mean(r, g.group, g.G)[g.group]


@advantage("leave-one-out")
def leave_one_out(r: Tensor, g: Groups, eps: float) -> Tensor:
    """RLOO's: r minus the mean reward of the group's other rollouts, K / (K - 1) (r - mean r); 0 alone."""
    K = group_sum(torch.ones_like(r), g.group, g.G)[g.group]
    others = (group_sum(r, g.group, g.G)[g.group] - r) / (K - 1).clamp(min=1)
    return torch.where(K > 1, r - others, 0.0)


# ---- loss aggregations: per-token losses [B, T] to one loss, and its units ------------------------


def used_tokens(b: Batch, g: Groups) -> Tensor:
    """The completion-token mask of the groups used."""
    return b.mask * g.keep[g.group][:, None]


@aggregation("seq-mean")
def seq_mean_over_groups(per_token: Tensor, b: Batch, g: Groups, ctx: Context) -> tuple[Tensor, float]:
    """Each sequence's token mean, averaged over its group, then over the groups used. Unit: group."""
    return g.mean(group_mean(seq_mean(per_token, b.mask), g.group, g.G)), float(g.units)


@aggregation("token-mean")
def token_mean_over_groups(per_token: Tensor, b: Batch, g: Groups, ctx: Context) -> tuple[Tensor, float]:
    """The mean over every completion token of the groups used. Unit: token."""
    tokens = used_tokens(b, g)
    return token_mean(per_token, tokens), float(tokens.sum())


@aggregation("seq-sum-over-limit")
def seq_sum_over_limit(per_token: Tensor, b: Batch, g: Groups, ctx: Context) -> tuple[Tensor, float]:
    """Each sequence's token sum divided by the generation limit, averaged over its group, then over the groups
    used. Unit: group."""
    return g.mean(group_mean(seq_sum(per_token, b.mask) / ctx.limit("seq-sum-over-limit"), g.group, g.G)), float(g.units)


# ---- the composition -------------------------------------------------------------------------------


def clipped_surrogate(b: Batch, adv: Tensor, low: float, high: float) -> tuple[Tensor, Tensor, Tensor]:
    """PPO's per-token loss -min(rho A, clip(rho, 1 - low, 1 + high) A), times the truncated importance weight
    min(pi_old / pi_sampler, cap) where the batch carries one (``train.tis_cap``); and where the clip is active
    at the low end and at the high end."""
    rho = ratio(b)
    a = adv[:, None]
    loss = -torch.minimum(rho * a, rho.clamp(1 - low, 1 + high) * a)
    if b.is_weight is not None:
        loss = loss * b.is_weight
    at_low, at_high = (rho < 1 - low) & (a < 0), (rho > 1 + high) & (a > 0)
    return loss, at_low.to(b.mask.dtype), at_high.to(b.mask.dtype)


def policy_gradient(
    b: Batch, ctx: Context, rewards: Tensor, *, advantage: str, aggregation: str, clip_low: float, clip_high: float,
    beta: float = 0.0, eps: float = 1e-4, drop_flat: bool = False,
) -> Loss:
    """The clipped surrogate with the named advantage estimator and loss aggregation. A group whose rewards are
    all equal gets zero advantage (counted as ``groups_flat``), or with ``drop_flat`` is left out (counted as
    ``groups_dropped``, its tokens out of a token mean)."""
    g = groups(b, flat=not drop_flat)
    adv = ADVANTAGES[advantage](rewards.to(b.logp.dtype), g, eps)
    per_token, at_low, at_high = clipped_surrogate(b, adv, clip_low, clip_high)
    if beta:
        per_token = per_token + beta * k3(b.logp, reference(b))
    loss, units = AGGREGATIONS[aggregation](per_token, b, g, ctx)
    tokens = used_tokens(b, g)
    means = {"clip_frac": float(token_mean(at_low + at_high, tokens)), "clip_frac_low": float(token_mean(at_low, tokens)),
             "clip_frac_high": float(token_mean(at_high, tokens)), "entropy": entropy(b)}
    if beta:
        means["kl"] = kl_stat(b)
    counts = {"groups_dropped": float(g.dropped)} if drop_flat else {"groups_flat": float(g.flat)}
    return Loss(loss, units, means, counts)


# ---- the presets -----------------------------------------------------------------------------------


CLIP = {"clip_eps": FRACTION, "beta": NON_NEGATIVE, "eps": POSITIVE}


@register("grpo", reference="beta", tis=True, checks=CLIP)
def grpo(b: Batch, ctx: Context, *, clip_eps: float = 0.2, beta: float = 0.0, eps: float = 1e-4) -> Loss:
    """GRPO: normalised advantages, clip range (1 - clip_eps, 1 + clip_eps), plus beta k3(logp, ref) per token
    (the reference is the run's starting model unless ``--ref``); aggregation seq-mean. Unit: group."""
    return policy_gradient(b, ctx, b.reward, advantage="normalised", aggregation="seq-mean", clip_low=clip_eps,
                           clip_high=clip_eps, beta=beta, eps=eps)


@register(
    "dapo", dynamic_sampling=True, drops_flat=True, tis=True,
    checks={"clip_low": FRACTION, "clip_high": POSITIVE, "overlong_cache": NON_NEGATIVE, "eps": POSITIVE},
)
def dapo(
    b: Batch, ctx: Context, *, clip_low: float = 0.2, clip_high: float = 0.28, overlong_cache: int | None = None,
    eps: float = 1e-4,
) -> Loss:
    """DAPO: reward +1/-1 plus the overlong penalty (0 up to L_max - L_cache, then linear down to -1 at
    L_max, the generation limit), normalised advantages, clip range (1 - clip_low, 1 + clip_high), the groups
    whose accuracy is 0 or 1 dropped, aggregation token-mean. Unit: token. ``overlong_cache`` None takes a
    fifth of the limit (the paper's 4096 of 20480); 0 turns it off. Its dynamic sampling (only groups with a
    right and a wrong answer, the batch filled) is on by default in ``crl iterate``."""
    limit = ctx.limit("dapo")
    cache = limit // 5 if overlong_cache is None else overlong_cache
    if cache >= limit:
        raise CrlError(f"dapo: overlong_cache = {cache} must be below the generation limit ({limit} tokens)")
    r = torch.where(b.pos, 1.0, -1.0).to(b.logp.dtype)
    if cache:
        r = r + ((limit - cache - b.mask.sum(-1)) / cache).clamp(-1, 0)
    return policy_gradient(b, ctx, r, advantage="normalised", aggregation="token-mean", clip_low=clip_low,
                           clip_high=clip_high, eps=eps, drop_flat=True)


@register("dr-grpo", tis=True, checks={"clip_eps": FRACTION})
def dr_grpo(b: Batch, ctx: Context, *, clip_eps: float = 0.2) -> Loss:
    """Dr. GRPO: centred advantages (no std), clip range (1 - clip_eps, 1 + clip_eps), aggregation
    seq-sum-over-limit (token sums over the generation limit instead of the length); no KL. Unit: group."""
    return policy_gradient(b, ctx, b.reward, advantage="centred", aggregation="seq-sum-over-limit",
                           clip_low=clip_eps, clip_high=clip_eps)


@register("rloo", tis=True, checks={"clip_eps": FRACTION})
def rloo(b: Batch, ctx: Context, *, clip_eps: float = 0.2) -> Loss:
    """RLOO: leave-one-out advantages (each rollout's baseline the mean reward of the others), clip range
    (1 - clip_eps, 1 + clip_eps), aggregation seq-mean. Unit: group."""
    return policy_gradient(b, ctx, b.reward, advantage="leave-one-out", aggregation="seq-mean", clip_low=clip_eps,
                           clip_high=clip_eps)


@register(
    "pg", reference="beta", tis=True,
    checks={"advantage": choice(*ADVANTAGES), "aggregation": choice(*AGGREGATIONS), "clip_low": FRACTION,
            "clip_high": POSITIVE, "beta": NON_NEGATIVE, "eps": POSITIVE},
)
def pg(
    b: Batch, ctx: Context, *, advantage: str = "normalised", aggregation: str = "token-mean", clip_low: float = 0.2,
    clip_high: float = 0.2, beta: float = 0.0, eps: float = 1e-4, drop_flat: bool = False,
) -> Loss:
    """Any advantage estimator with any loss aggregation, by name; ``drop_flat`` leaves out the groups whose
    rewards are all equal. Unit: the aggregation's."""
    return policy_gradient(b, ctx, b.reward, advantage=advantage, aggregation=aggregation, clip_low=clip_low,
                           clip_high=clip_high, beta=beta, eps=eps, drop_flat=drop_flat)


@register("rft")
def rft(b: Batch, ctx: Context) -> Loss:
    """Rejection-sampling fine-tuning: mean token log-likelihood of the positives only. Unit: sequence."""
    pos = b.pos.to(b.logp.dtype)
    n = pos.sum()
    loss = -(seq_mean(b.logp, b.mask) * pos).sum() / n.clamp(min=1)
    return Loss(loss, float(n), {"entropy": entropy(b)})
