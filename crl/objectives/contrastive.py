"""The contrastive objectives: ConSPO, ReNCE, DisCO (and DisCO-b), CoPG and online DPO.

Each pushes the policy towards the positives of a group and away from its negatives, with no advantage
estimate; the equations and their sources are in docs/objectives.md. Each drops the groups that are not mixed
(no contrast) and counts them as ``groups_dropped``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from crl.objectives.batch import Batch, Context, Groups, Loss, StepInfo, entropy, group_mean, group_sum, groups, k3
from crl.objectives.batch import kl_stat, ratio, reference, seq_mean, seq_sum
from crl.objectives.registry import NON_NEGATIVE, POSITIVE, choice, register


# ---- pieces the contrastive objectives share ------------------------------------------------------


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


def score_means(g: Groups, score: Tensor) -> dict[str, float]:
    """Mean score of the positives and of the negatives (per group, then over the groups used)."""
    sp = float(g.mean(group_mean(score.detach(), g.group, g.G, g.pos)))
    sn = float(g.mean(group_mean(score.detach(), g.group, g.G, g.neg)))
    return {"score_pos": sp, "score_neg": sn, "score_gap": sp - sn}


def contrastive_loss(value: Tensor, g: Groups, b: Batch, means: dict[str, float], units: float | None = None) -> Loss:
    """The result of a contrastive objective: by default one unit per group used."""
    return Loss(value, float(g.units) if units is None else units, {**means, "entropy": entropy(b)},
                {"groups_dropped": float(g.dropped)})


def infonce(z: Tensor, g: Groups) -> tuple[Tensor, Tensor]:
    """Each positive i against the negatives of its group: -log(e^{z_i} / (e^{z_i} + sum_{j in N} e^{z_j})),
    averaged over the group's positives: [G]; and the softmax weight the hardest negative gets there."""
    lse_neg = group_logsumexp(z, g.group, g.G, g.neg)[g.group]
    nll = F.softplus(lse_neg - z)  # = -log(e^z / (e^z + e^lse_neg)), finite for any z
    top_neg = group_max(z.detach(), g.group, g.G, g.neg)[g.group]
    hardest = torch.exp(top_neg - torch.logaddexp(z.detach(), lse_neg.detach()))
    return group_mean(nll, g.group, g.G, g.pos), group_mean(hardest, g.group, g.G, g.pos)


# ---- the objectives -------------------------------------------------------------------------------


@register("conspo", drops_flat=True, checks={"tau": POSITIVE, "margin": NON_NEGATIVE, "alpha": (lambda v: 0 < v <= 1, "in (0, 1]")})
def conspo(b: Batch, ctx: Context, *, tau: float = 10.0, inverse: bool = False, margin: float = 0.01, alpha: float = 0.3) -> Loss:
    """ConSPO: per group maximise J = (1/|P|) sum_{i in P} T log(e^{(s_i-m)/T} / (e^{(s_i-m)/T} +
    sum_{j in N} e^{s_j/T})) with s the length-normalised log-likelihood, T = tau (or 1/tau with ``inverse``:
    tau read as an inverse temperature, which concentrates the weight on high-scoring negatives), and the
    margin m rising from 0 to ``margin`` on a cosine over the first ``alpha`` of training
    (``Context.fraction_done``), then held. Unit: group."""
    temperature = 1 / tau if inverse else tau
    m = margin / 2 * (1 - math.cos(math.pi * min(ctx.fraction_done / alpha, 1.0)))
    g = groups(b)
    s = seq_mean(b.logp, b.mask)
    nll, hardest = infonce((s - m * g.pos) / temperature, g)
    loss = g.mean(temperature * nll)
    return contrastive_loss(loss, g, b, score_means(g, s) | {"hardest_neg_weight": float(g.mean(hardest)), "margin": m})


@register(
    "rence", reference="kl_coef", drops_flat=True,
    checks={"form": choice("per-positive", "marginal"), "score": choice("logratio", "normalized", "plain", "sampler"),
            "beta": POSITIVE, "margin": NON_NEGATIVE, "kl_coef": NON_NEGATIVE, "target_kl": NON_NEGATIVE,
            "easy_threshold": (lambda v: 0 < v <= 1, "in (0, 1]")},
)
def rence(
    b: Batch,
    ctx: Context,
    *,
    form: str = "per-positive",
    score: str = "logratio",
    beta: float = 1.0,
    margin: float = 0.0,
    kl_coef: float = 0.0,
    target_kl: float | None = None,
    easy_threshold: float = 1.0,
) -> Loss:
    """ReNCE as multi-label noise contrastive estimation over each group's rollouts. Unit: group.

    - ``form="per-positive"``: loss = -(1/|P|) sum_{i in P} log(e^{z_i} / (e^{z_i} + sum_{j in N} e^{z_j}));
      ``form="marginal"``: loss = -log(sum_{i in P} e^{z_i} / sum_k e^{z_k}).
    - score z_k = beta * (S_k - S_k_old) (``"logratio"``), beta * (s_k - s_k_old) (``"normalized"``) or
      beta * s_k (``"plain"``), or beta * (S_k - S_k_sampler) (``"sampler"``: the ratio to the policy that
      drew the sample, which differs from the old policy on stored rounds of an older one). beta = 1 makes the
      logratio score the log density ratio itself, NCE's classifier logit, and gives d loss / d S_i =
      (1 - P_i)/|P| like ConSPO; below 1 it softens the softmax. ``margin`` is subtracted from the positives'
      scores.
    - ``kl_coef`` > 0 adds, per group, kl_coef * KL_g with KL_g the group's mean k3 estimate against the
      reference model (the run's starting model unless ``--ref``). With ``target_kl`` the weight adapts
      instead: (kl_coef * max(KL_g - target_kl, 0)).detach() * KL_g, a squared hinge as in DisCO.
    - ``easy_threshold``: groups whose pass rate is >= it are dropped (1.0: only the all-positive ones,
      which have no contrast anyway).
    """
    pass_rate = group_mean(b.pos.to(b.mask.dtype), b.group, b.num_groups)
    g = groups(b, keep=pass_rate < easy_threshold)
    if score == "logratio":
        z = beta * (seq_sum(b.logp, b.mask) - seq_sum(b.old_logp, b.mask))
    elif score == "normalized":
        z = beta * (seq_mean(b.logp, b.mask) - seq_mean(b.old_logp, b.mask))
    elif score == "sampler":
        if b.behaviour_logp is None:
            raise ValueError("rence with score=sampler needs the sampler's log-probs (Batch.behaviour_logp)")
        z = beta * (seq_sum(b.logp, b.mask) - seq_sum(b.behaviour_logp, b.mask))
    else:
        z = beta * seq_mean(b.logp, b.mask)
    zm = z - margin * g.pos
    if form == "per-positive":
        nll, hardest = infonce(zm, g)
    else:
        lse_all = group_logsumexp(zm, g.group, g.G, g.pos | g.neg)
        nll = lse_all - group_logsumexp(zm, g.group, g.G, g.pos)
        hardest = torch.exp(group_max(zm.detach(), g.group, g.G, g.neg) - lse_all.detach())
    means = score_means(g, z) | {"hardest_neg_weight": float(g.mean(hardest))}
    if kl_coef > 0:
        kl = group_mean(seq_mean(k3(b.logp, reference(b)), b.mask), g.group, g.G)
        weight = kl_coef if target_kl is None else (kl_coef * (kl - target_kl).clamp(min=0)).detach()
        nll = nll + weight * kl
        means["kl"] = kl_stat(b)
    return contrastive_loss(g.mean(nll), g, b, means)


def disco_score(b: Batch, score: str) -> Tensor:
    """DisCO's score: s_k (``"loglik"``) or the mean token ratio (1/L_k) sum_t rho[k, t] (``"ratio"``)."""
    return seq_mean(b.logp if score == "loglik" else ratio(b), b.mask)


def disco_loss(
    b: Batch, g: Groups, s: Tensor, J: Tensor, hardest: Tensor, delta: float, beta: float, step: StepInfo | None
) -> Loss:
    """-J summed over the groups used and divided by all the step's groups (as the authors' code does), plus
    the squared-hinge KL constraint (beta max(KL - delta, 0)).detach() * KL, with KL the masked mean of
    old_logp - logp over the whole optimiser step (``step``; the batch itself when called alone). Its
    gradient is half that of the paper's beta max(KL - delta, 0)^2, as in the authors' code.

    Each micro-batch contributes its share of the step's KL, scaled so that the trainer's sum over
    micro-batches divided by the step's groups is exactly the equation: the update does not depend on how
    the step is split. Unit: group (every group of the step, kept or dropped)."""
    tokens_kl = ((b.old_logp - b.logp) * b.mask).sum()
    if step is None:
        step = StepInfo(float(tokens_kl.detach() / b.mask.sum().clamp(min=1)), float(b.mask.sum()), float(g.present.sum()))
    weight = beta * max(step.kl - delta, 0.0)
    units = float(g.present.sum())
    total = torch.where(g.keep, -J, 0.0).sum() + weight * step.groups * tokens_kl / max(step.tokens, 1.0)
    means = score_means(g, s) | {"hardest_neg_weight": float(g.mean(hardest)), "kl": step.kl}
    return contrastive_loss(total / max(units, 1.0), g, b, means, units)


DISCO_CHECKS = {"score": choice("loglik", "ratio"), "tau": POSITIVE, "delta": NON_NEGATIVE, "beta": NON_NEGATIVE}


@register("disco", needs_step=True, checks=DISCO_CHECKS)
def disco(b: Batch, ctx: Context, *, score: str = "loglik", tau: float | None = None, delta: float = 1e-4, beta: float = 1e3) -> Loss:
    """DisCO: per group maximise J = mean_{P} s - tau log sum_{N} e^{s/tau}, under the KL constraint;
    tau=None picks 10 for the loglik score and 1 for the ratio score. Unit: group."""
    tau = tau if tau is not None else (10.0 if score == "loglik" else 1.0)
    g = groups(b)
    s = disco_score(b, score)
    lse_neg = group_logsumexp(s / tau, g.group, g.G, g.neg)
    J = group_mean(s, g.group, g.G, g.pos) - tau * lse_neg
    hardest = torch.exp(group_max(s.detach() / tau, g.group, g.G, g.neg) - lse_neg.detach())
    return disco_loss(b, g, s, J, hardest, delta, beta, ctx.step)


@register("disco-b", needs_step=True, checks=DISCO_CHECKS)
def disco_b(b: Batch, ctx: Context, *, score: str = "loglik", delta: float = 1e-4, beta: float = 1e3) -> Loss:
    """DisCO-b: per group maximise J = mean_{P} s - mean_{N} s, under DisCO's KL constraint. Unit: group.
    Every negative gets the same weight 1/|N| (reported as ``hardest_neg_weight``)."""
    g = groups(b)
    s = disco_score(b, score)
    J = group_mean(s, g.group, g.G, g.pos) - group_mean(s, g.group, g.G, g.neg)
    hardest = 1 / group_sum(g.neg.to(s.dtype), g.group, g.G).clamp(min=1)
    return disco_loss(b, g, s, J, hardest, delta, beta, ctx.step)


@register("copg", reference=True, drops_flat=True, checks={"beta": POSITIVE})
def copg(b: Batch, ctx: Context, *, beta: float = 0.1) -> Loss:
    """CoPG: with R'_k = r_k - beta (S_k - S_k_ref), loss = (1/(K-1)) sum_{i<j} (R'_i - R'_j)^2 per group,
    the reference being the run's starting model unless ``--ref``. Off-policy, no importance weight. Unit: group."""
    g = groups(b)
    implicit = beta * (seq_sum(b.logp, b.mask) - seq_sum(reference(b), b.mask))
    R = b.reward - implicit
    same = g.group[:, None] == g.group[None, :]
    pairs = torch.where(same, (R[:, None] - R[None, :]) ** 2, 0.0).sum(1) / 2  # each pair i<j once
    K = group_sum(torch.ones_like(R), g.group, g.G)
    loss = g.mean(group_sum(pairs, g.group, g.G) / (K - 1).clamp(min=1))
    return contrastive_loss(loss, g, b, score_means(g, implicit) | {"kl": kl_stat(b)})


@register("online-dpo", reference=True, drops_flat=True, checks={"beta": POSITIVE})
def online_dpo(b: Batch, ctx: Context, *, beta: float = 0.1) -> Loss:
    """Online DPO: per group, -log sigmoid(beta ((S+ - S+_ref) - (S- - S-_ref))) for one pair: the positive
    with the lowest implicit reward beta (S - S_ref) against the negative with the highest (the hardest
    pair, chosen on detached values, so the choice does not depend on the order of the rollouts). The
    reference is the run's starting model unless ``--ref``. Unit: group."""
    g = groups(b)
    u = beta * (seq_sum(b.logp, b.mask) - seq_sum(reference(b), b.mask))
    last = len(u) - 1  # a dropped group has no pick (index B); any valid row will do, it is masked out
    chosen = group_pick(-u.detach(), g.group, g.G, g.pos).clamp(max=last)
    rejected = group_pick(u.detach(), g.group, g.G, g.neg).clamp(max=last)
    loss = g.mean(-F.logsigmoid(u[chosen] - u[rejected]))
    sp, sn = float(g.mean(u[chosen].detach())), float(g.mean(u[rejected].detach()))
    return contrastive_loss(loss, g, b, {"score_pos": sp, "score_neg": sn, "score_gap": sp - sn, "kl": kl_stat(b)})
