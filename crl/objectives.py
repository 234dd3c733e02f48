"""Training objectives: one short pure function of tensors per method, registered by name.

Every objective sees a batch of whole groups (all K rollouts of each prompt it contains) as padded
[B, T] tensors of per-token log-probs, and returns ``(loss, stats)``:

- ``loss`` is the mean over the objective's own *unit* (a group, a sequence or a token, whatever the
  equation in OBJECTIVES.md averages over), so the function reads like its equation;
- ``stats["units"]`` is how many units that mean was taken over. The trainer back-propagates
  ``loss * units`` per micro-batch and divides the accumulated gradient by the total, which makes the
  result exact however the groups are split into micro-batches. A batch with no usable unit returns a
  loss of 0 that still has a grad path, with ``units`` 0.

Options are keyword arguments with the paper's defaults; ``crl train -o NAME=VALUE`` sets them.
Context the trainer knows (``progress`` in [0, 1], ``max_new_tokens``) is passed to the functions that
name it in their signature.

Conventions shared by all objectives:

- A rollout is a positive when ``reward > 0`` and a negative otherwise.
- A group with no positive or no negative has no contrast: the contrastive objectives (conspo, rence,
  disco, disco-b, copg, online-dpo) and DAPO drop it and report ``groups_dropped``; GRPO and Dr. GRPO give
  it zero advantage and report it as ``groups_flat``.
- ``register`` zeroes the padded positions of ``logp``/``old_logp``/``ref_logp`` before the body runs,
  so whatever the padding holds (even values whose ratio would overflow) cannot reach a result or a
  gradient, and the bodies can ignore it.
- Where an objective needs a reference model and the batch has no ``ref_logp``, the behaviour policy
  (``old_logp``) stands in for it, so the term becomes a trust region around the sampler.
- Stats are detached floats; those averaged over an empty set are 0. ``entropy`` is the mean of
  ``-logp`` over the batch's completion tokens (an estimate of the policy's entropy from the tokens it
  sampled); ``kl`` is the mean k3 estimate ``exp(ref - logp) - (ref - logp) - 1`` over those tokens.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
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


# ---- shared pieces: sequences -----------------------------------------------------------------------


def zero_padding(b: Batch) -> Batch:
    """The batch with 0 in every padded position of its log-prob tensors (gradient 0 there)."""
    pad = b.mask <= 0

    def clean(x: Tensor | None) -> Tensor | None:
        return None if x is None else x.masked_fill(pad, 0.0)

    return dataclasses.replace(b, logp=clean(b.logp), old_logp=clean(b.old_logp), ref_logp=clean(b.ref_logp))


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


def reference(b: Batch) -> Tensor:
    """The reference model's log-probs, or the behaviour policy's where the batch has none."""
    return b.old_logp if b.ref_logp is None else b.ref_logp


def entropy(b: Batch) -> float:
    """Mean of -logp over the completion tokens: the policy's entropy estimated from its own samples."""
    return float(token_mean(-b.logp.detach(), b.mask))


def kl_stat(b: Batch) -> float:
    """Mean k3 estimate of KL(policy || reference) over the completion tokens."""
    return float(token_mean(k3(b.logp.detach(), reference(b)), b.mask))


def clipped_surrogate(b: Batch, adv: Tensor, low: float, high: float) -> tuple[Tensor, Tensor]:
    """PPO's per-token loss -min(rho*A, clip(rho, 1-low, 1+high)*A) and where the clip is active."""
    rho = torch.exp(b.logp - b.old_logp)
    a = adv[:, None]
    loss = -torch.minimum(rho * a, rho.clamp(1 - low, 1 + high) * a)
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
    pos = b.reward > 0
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


# ---- contrastive objectives ---------------------------------------------------------------------


@register("conspo")
def conspo(
    b: Batch, *, tau: float = 10.0, margin: float = 0.01, alpha: float = 0.3, progress: float = 0.0
) -> tuple[Tensor, Stats]:
    """ConSPO: per group maximise J = (1/|P|) sum_{i in P} tau log(e^{(s_i-m)/tau} / (e^{(s_i-m)/tau} +
    sum_{j in N} e^{s_j/tau})) with s the length-normalised log-likelihood, and the margin m rising from 0
    to ``margin`` on a cosine over the first ``alpha`` of training (``progress``), then held. Unit: group."""
    ramp = min(progress / alpha, 1.0) if alpha > 0 else 1.0
    m = margin / 2 * (1 - math.cos(math.pi * ramp))
    g = groups(b)
    s = seq_mean(b.logp, b.mask)
    nll, hardest = infonce((s - m * g.pos) / tau, g)
    loss = g.mean(tau * nll)
    stats = contrast_stats(g, s) | {"hardest_neg_weight": float(g.mean(hardest)), "margin": m}
    return loss, stats | {"units": float(g.units), "entropy": entropy(b)}


@register("rence")
def rence(
    b: Batch,
    *,
    form: str = "per-positive",
    score: str = "logratio",
    beta: float = 1.0,
    margin: float = 0.0,
    kl_coef: float = 0.0,
    target_kl: float | None = None,
    easy_threshold: float = 1.0,
) -> tuple[Tensor, Stats]:
    """ReNCE as multi-label noise contrastive estimation over each group's rollouts. Unit: group.

    - ``form="per-positive"``: loss = -(1/|P|) sum_{i in P} log(e^{z_i} / (e^{z_i} + sum_{j in N} e^{z_j}));
      ``form="marginal"``: loss = -log(sum_{i in P} e^{z_i} / sum_k e^{z_k}).
    - score z_k = beta * (S_k - S_k_old) (``"logratio"``), beta * (s_k - s_k_old) (``"normalized"``) or
      beta * s_k (``"plain"``). beta = 1 makes the logratio score the log density ratio itself, NCE's
      classifier logit, and gives d loss / d S_i = (1 - P_i)/|P| like ConSPO; below 1 it softens the
      softmax. ``margin`` is subtracted from the positives' scores.
    - ``kl_coef`` > 0 adds, per group, kl_coef * KL_g with KL_g the group's mean k3 estimate against the
      reference. With ``target_kl`` the weight adapts instead: (kl_coef * max(KL_g - target_kl, 0))
      .detach() * KL_g, a squared hinge as in DisCO (stateless, so exact across micro-batches).
    - ``easy_threshold``: groups whose pass rate is >= it are dropped (1.0: only the all-positive ones,
      which have no contrast anyway).
    """
    if form not in ("per-positive", "marginal") or score not in ("logratio", "normalized", "plain"):
        raise CrlError("rence: form must be per-positive|marginal and score logratio|normalized|plain")
    pass_rate = group_mean((b.reward > 0).to(b.mask.dtype), b.group, b.num_groups)
    g = groups(b, keep=pass_rate < easy_threshold)
    if score == "logratio":
        z = beta * (seq_sum(b.logp, b.mask) - seq_sum(b.old_logp, b.mask))
    elif score == "normalized":
        z = beta * (seq_mean(b.logp, b.mask) - seq_mean(b.old_logp, b.mask))
    else:
        z = beta * seq_mean(b.logp, b.mask)
    zm = z - margin * g.pos
    if form == "per-positive":
        nll, hardest = infonce(zm, g)
    else:
        lse_all = group_logsumexp(zm, g.group, g.G, g.pos | g.neg)
        nll = lse_all - group_logsumexp(zm, g.group, g.G, g.pos)
        hardest = torch.exp(group_max(zm.detach(), g.group, g.G, g.neg) - lse_all.detach())
    stats = contrast_stats(g, z) | {"hardest_neg_weight": float(g.mean(hardest))}
    if kl_coef > 0:
        kl = group_mean(seq_mean(k3(b.logp, reference(b)), b.mask), g.group, g.G)
        weight = kl_coef if target_kl is None else (kl_coef * (kl - target_kl).clamp(min=0)).detach()
        nll = nll + weight * kl
    if b.ref_logp is not None or kl_coef > 0:
        stats["kl"] = kl_stat(b)
    return g.mean(nll), stats | {"units": float(g.units), "entropy": entropy(b)}


def disco_score(b: Batch, score: str) -> Tensor:
    """DisCO's score: s_k (``"loglik"``) or the mean token ratio (1/L_k) sum_t rho[k, t] (``"ratio"``)."""
    if score not in ("loglik", "ratio"):
        raise CrlError("disco: score must be loglik|ratio")
    return seq_mean(b.logp if score == "loglik" else torch.exp(b.logp - b.old_logp), b.mask)


def disco_loss(
    b: Batch, g: Groups, s: Tensor, J: Tensor, hardest: Tensor, delta: float, beta: float
) -> tuple[Tensor, Stats]:
    """-J averaged over the groups used, plus the squared-hinge KL constraint (beta max(KL - delta, 0))
    .detach() * KL with KL the masked mean of old_logp - logp over the tensors passed in (the paper takes
    it over its batch, so this one term depends on how the trainer splits micro-batches)."""
    kl = token_mean(b.old_logp - b.logp, b.mask)
    constraint = (beta * (kl - delta).clamp(min=0)).detach() * kl
    loss = g.mean(-J) + constraint * (g.units > 0)
    stats = contrast_stats(g, s) | {"hardest_neg_weight": float(g.mean(hardest)), "kl": float(kl.detach())}
    return loss, stats | {"units": float(g.units), "entropy": entropy(b)}


@register("disco")
def disco(
    b: Batch, *, score: str = "loglik", tau: float | None = None, delta: float = 1e-4, beta: float = 1e3
) -> tuple[Tensor, Stats]:
    """DisCO: per group maximise J = mean_{P} s - tau log sum_{N} e^{s/tau}, under the KL constraint;
    tau=None picks 10 for the loglik score and 1 for the ratio score. Unit: group."""
    tau = tau if tau is not None else (10.0 if score == "loglik" else 1.0)
    g = groups(b)
    s = disco_score(b, score)
    lse_neg = group_logsumexp(s / tau, g.group, g.G, g.neg)
    J = group_mean(s, g.group, g.G, g.pos) - tau * lse_neg
    hardest = torch.exp(group_max(s.detach() / tau, g.group, g.G, g.neg) - lse_neg.detach())
    return disco_loss(b, g, s, J, hardest, delta, beta)


@register("disco-b")
def disco_b(
    b: Batch, *, score: str = "loglik", delta: float = 1e-4, beta: float = 1e3
) -> tuple[Tensor, Stats]:
    """DisCO-b: per group maximise J = mean_{P} s - mean_{N} s, under DisCO's KL constraint. Unit: group.
    Every negative gets the same weight 1/|N| (reported as ``hardest_neg_weight``)."""
    g = groups(b)
    s = disco_score(b, score)
    J = group_mean(s, g.group, g.G, g.pos) - group_mean(s, g.group, g.G, g.neg)
    hardest = 1 / group_sum(g.neg.to(s.dtype), g.group, g.G).clamp(min=1)
    return disco_loss(b, g, s, J, hardest, delta, beta)


@register("copg")
def copg(b: Batch, *, beta: float = 0.1) -> tuple[Tensor, Stats]:
    """CoPG: with R'_k = r_k - beta (S_k - S_k_ref), loss = (1/(K-1)) sum_{i<j} (R'_i - R'_j)^2 per group.
    Off-policy, no importance weight. Unit: group."""
    g = groups(b)
    implicit = beta * (seq_sum(b.logp, b.mask) - seq_sum(reference(b), b.mask))
    R = b.reward - implicit
    same = g.group[:, None] == g.group[None, :]
    pairs = torch.where(same, (R[:, None] - R[None, :]) ** 2, 0.0).sum(1) / 2  # each pair i<j once
    K = group_sum(torch.ones_like(R), g.group, g.G)
    loss = g.mean(group_sum(pairs, g.group, g.G) / (K - 1).clamp(min=1))
    stats = contrast_stats(g, implicit) | {"kl": kl_stat(b)}
    return loss, stats | {"units": float(g.units), "entropy": entropy(b)}


@register("online-dpo")
def online_dpo(b: Batch, *, beta: float = 0.1) -> tuple[Tensor, Stats]:
    """Online DPO: per group, -log sigmoid(beta ((S+ - S+_ref) - (S- - S-_ref))) for one pair: the positive
    with the lowest implicit reward beta (S - S_ref) against the negative with the highest (the hardest
    pair, chosen on detached values, so the choice does not depend on the order of the rollouts).
    Unit: group."""
    g = groups(b)
    u = beta * (seq_sum(b.logp, b.mask) - seq_sum(reference(b), b.mask))
    last = len(u) - 1  # a dropped group has no pick (index B); any valid row will do, it is masked out
    chosen = group_pick(-u.detach(), g.group, g.G, g.pos).clamp(max=last)
    rejected = group_pick(u.detach(), g.group, g.G, g.neg).clamp(max=last)
    loss = g.mean(-F.logsigmoid(u[chosen] - u[rejected]))
    sp, sn = float(g.mean(u[chosen].detach())), float(g.mean(u[rejected].detach()))
    stats = {"score_pos": sp, "score_neg": sn, "score_gap": sp - sn, "groups_dropped": float(g.dropped)}
    stats["kl"] = kl_stat(b)
    return loss, stats | {"units": float(g.units), "entropy": entropy(b)}


# ---- advantage-based baselines ------------------------------------------------------------------


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
