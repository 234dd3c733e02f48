"""Objectives against naive float64 references written from docs/objectives.md with explicit loops over groups,
plus the invariances (permutation, padding, micro-batch split), ConSPO's gradient identities, the
zero-gradient cases and small examples worked out by hand."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from crl.errors import CrlError
from crl.objectives import OBJECTIVES, Batch, Context, StepInfo, check_options, get_objective, needs_reference, options, spec



@pytest.fixture(autouse=True)
def float64():
    """Every tensor of these tests is float64 by default; restored afterwards so other test files keep float32."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


# ---- random batches ------------------------------------------------------------------------------

KINDS = ("mixed", "pos", "mixed", "neg", "mixed", "mixed")


def make_batch(seed: int, kinds=KINDS, T: int = 9, ref: bool = True, garbage: float = 100.0) -> Batch:
    """Groups of 2..5 rollouts (mixed, all-positive, all-negative rewards), ragged completions that do not
    always start at column 0, garbage in every padded position."""
    g = torch.Generator().manual_seed(seed)
    rewards, group = [], []
    for i, kind in enumerate(kinds):
        K = int(torch.randint(2, 6, (1,), generator=g))
        r = {"pos": [1.0] * K, "neg": [0.0] * K}.get(kind)
        if r is None:
            npos = int(torch.randint(1, K, (1,), generator=g))
            r = [1.0] * npos + [0.0] * (K - npos)
            r = [r[j] for j in torch.randperm(K, generator=g)]
        rewards += r
        group += [i] * K
    B = len(rewards)
    mask = torch.zeros(B, T)
    for k in range(B):
        L = int(torch.randint(1, T - 1, (1,), generator=g))
        start = int(torch.randint(0, T - L + 1, (1,), generator=g))
        mask[k, start : start + L] = 1
    logp = -3 * torch.rand(B, T, generator=g)
    old = logp + 0.05 + 0.3 * torch.randn(B, T, generator=g)
    ref_logp = logp + 0.2 * torch.randn(B, T, generator=g)

    def pad(x: torch.Tensor) -> torch.Tensor:
        return torch.where(mask > 0, x, garbage * torch.randn(B, T, generator=g))

    behaviour = old + 0.5 * torch.randn(B, T, generator=torch.Generator().manual_seed(seed + 1))  # an older sampler
    return Batch(
        logp=pad(logp).requires_grad_(),
        old_logp=pad(old),
        mask=mask,
        reward=torch.tensor(rewards),
        group=torch.tensor(group),
        ref_logp=pad(ref_logp) if ref else None,
        behaviour_logp=torch.where(mask > 0, behaviour, garbage),
    )


def with_logp(b: Batch, logp: torch.Tensor) -> Batch:
    return Batch(logp, b.old_logp, b.mask, b.reward, b.group, b.ref_logp, behaviour_logp=b.behaviour_logp)


def objective(name: str, b: Batch, ctx: Context | None = None, **opts) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss and every statistic (means, counts and units in one dict) of an objective on ``b``."""
    out = get_objective(name)(b, ctx, **opts)
    assert not set(out.means) & set(out.counts)
    return out.value, {**out.means, **out.counts, "units": out.units}


def run(name: str, b: Batch, opts: dict, ctx: dict):
    return objective(name, b, Context(**ctx), **opts)


# ---- naive references: loops over groups and rollouts ---------------------------------------------


def rollouts(b: Batch) -> dict[int, list[dict]]:
    """Each group's rollouts as dicts of their completion tokens only."""
    out: dict[int, list[dict]] = {}
    for k in range(len(b.reward)):
        on = b.mask[k] > 0
        out.setdefault(int(b.group[k]), []).append(
            {"lp": b.logp[k][on], "old": b.old_logp[k][on], "ref": b.ref_logp[k][on], "beh": b.behaviour_logp[k][on],
             "r": float(b.reward[k])}
        )
    return out


def split(rs):
    return [o for o in rs if o["r"] > 0], [o for o in rs if o["r"] <= 0]


def mean(xs):
    return sum(xs) / len(xs)


def k3(lp, ref):
    return torch.exp(ref - lp) - (ref - lp) - 1


def ref_conspo(b, tau=10.0, margin=0.01, alpha=0.3, fraction_done=0.0):
    m = margin / 2 * (1 - math.cos(math.pi * min(fraction_done / alpha, 1)))
    losses = []
    for rs in rollouts(b).values():
        P, N = split(rs)
        if not P or not N:
            continue
        J = 0
        for i in P:
            si = i["lp"].mean()
            num = torch.exp((si - m) / tau)
            J = J + tau * torch.log(num / (num + sum(torch.exp(j["lp"].mean() / tau) for j in N)))
        losses.append(-J / len(P))
    return losses


def ref_rence(
    b, form="per-positive", score="logratio", beta=1.0, margin=0.0, kl_coef=0.0, target_kl=None,
    easy_threshold=1.0,
):
    def z(o):
        if score == "logratio":
            return beta * (o["lp"].sum() - o["old"].sum())
        if score == "normalized":
            return beta * (o["lp"].mean() - o["old"].mean())
        if score == "sampler":
            return beta * (o["lp"].sum() - o["beh"].sum())
        return beta * o["lp"].mean()

    losses = []
    for rs in rollouts(b).values():
        P, N = split(rs)
        if not P or not N or len(P) / len(rs) >= easy_threshold:
            continue
        zp = [torch.exp(z(i) - margin) for i in P]
        zn = [torch.exp(z(j)) for j in N]
        if form == "per-positive":
            loss = -mean([torch.log(e / (e + sum(zn))) for e in zp])
        else:
            loss = -torch.log(sum(zp) / (sum(zp) + sum(zn)))
        if kl_coef:
            kl = mean([k3(o["lp"], o["ref"]).mean() for o in rs])
            w = kl_coef if target_kl is None else kl_coef * max(float(kl.detach()) - target_kl, 0)
            loss = loss + w * kl
        losses.append(loss)
    return losses


def ref_disco_kl(b, delta, beta):
    lp = torch.cat([o["lp"] for rs in rollouts(b).values() for o in rs])
    old = torch.cat([o["old"] for rs in rollouts(b).values() for o in rs])
    kl = (old - lp).mean()
    return beta * max(float(kl.detach()) - delta, 0) * kl  # the weight is a constant


def disco_score(o, score):
    return o["lp"].mean() if score == "loglik" else torch.exp(o["lp"] - o["old"]).mean()


def ref_disco(b, score="loglik", tau=None, delta=1e-4, beta=1e3):
    """-J of the groups with contrast (0 for the others: the authors divide by every group), and the constraint."""
    tau = tau or (10.0 if score == "loglik" else 1.0)
    losses = []
    for rs in rollouts(b).values():
        P, N = split(rs)
        if P and N:
            pos = mean([disco_score(i, score) for i in P])
            losses.append(-(pos - tau * torch.log(sum(torch.exp(disco_score(j, score) / tau) for j in N))))
        else:
            losses.append(b.logp.sum() * 0)
    return losses, ref_disco_kl(b, delta, beta)


def ref_disco_b(b, score="loglik", delta=1e-4, beta=1e3):
    losses = []
    for rs in rollouts(b).values():
        P, N = split(rs)
        if P and N:
            pos, neg = mean([disco_score(i, score) for i in P]), mean([disco_score(j, score) for j in N])
            losses.append(-(pos - neg))
        else:
            losses.append(b.logp.sum() * 0)
    return losses, ref_disco_kl(b, delta, beta)


def ref_copg(b, beta=0.1):
    losses = []
    for rs in rollouts(b).values():
        P, N = split(rs)
        if not P or not N:
            continue
        R = [o["r"] - beta * (o["lp"].sum() - o["ref"].sum()) for o in rs]
        K = len(rs)
        losses.append(sum((R[i] - R[j]) ** 2 for i in range(K) for j in range(i + 1, K)) / (K - 1))
    return losses


def ref_online_dpo(b, beta=0.1):
    losses = []
    for rs in rollouts(b).values():
        P, N = split(rs)
        if not P or not N:
            continue

        def u(o):
            return beta * (o["lp"].sum() - o["ref"].sum())

        chosen = min(P, key=lambda o: u(o).item())
        rejected = max(N, key=lambda o: u(o).item())
        losses.append(-torch.nn.functional.logsigmoid(u(chosen) - u(rejected)))
    return losses


def surrogate(o, A, low, high):
    rho = torch.exp(o["lp"] - o["old"])
    return -torch.minimum(rho * A, rho.clamp(1 - low, 1 + high) * A)


def ref_grpo(b, clip_eps=0.2, beta=0.0, eps=1e-4):
    losses = []
    for rs in rollouts(b).values():
        r = [o["r"] for o in rs]
        A = [(x - mean(r)) / (statistics.stdev(r) + eps) for x in r]
        losses.append(mean([(surrogate(o, a, clip_eps, clip_eps) + beta * k3(o["lp"], o["ref"])).mean()
                            for o, a in zip(rs, A)]))
    return losses


def ref_dapo(b, clip_low=0.2, clip_high=0.28, overlong_cache=None, eps=1e-4, max_new_tokens=None):
    cache = max_new_tokens // 5 if overlong_cache is None else overlong_cache
    total, tokens = 0, 0
    for rs in rollouts(b).values():
        P, N = split(rs)
        if not P or not N:
            continue
        r = []
        for o in rs:
            x = 1.0 if o["r"] > 0 else -1.0
            L = len(o["lp"])
            if cache and L > max_new_tokens - cache:
                x += max((max_new_tokens - cache - L) / cache, -1.0)
            r.append(x)
        for o, x in zip(rs, r):
            A = (x - mean(r)) / (statistics.stdev(r) + eps)
            total = total + surrogate(o, A, clip_low, clip_high).sum()
            tokens += len(o["lp"])
    return total, tokens


def ref_dr_grpo(b, clip_eps=0.2, max_new_tokens=None):
    losses = []
    for rs in rollouts(b).values():
        r = [o["r"] for o in rs]
        losses.append(mean([surrogate(o, x - mean(r), clip_eps, clip_eps).sum() / max_new_tokens
                            for o, x in zip(rs, r)]))
    return losses


def ref_pg(b, advantage="normalised", aggregation="token-mean", clip_low=0.2, clip_high=0.2, beta=0.0, eps=1e-4,
           drop_flat=False, max_new_tokens=None):
    """(loss, units) of any estimator with any aggregation, group by group."""
    group_losses, total, tokens = [], 0, 0
    for rs in rollouts(b).values():
        r = [o["r"] for o in rs]
        if drop_flat and len(set(x > 0 for x in r)) == 1:
            continue
        if advantage == "normalised":
            A = [(x - mean(r)) / (statistics.stdev(r) + eps) if statistics.stdev(r) > 0 else 0.0 for x in r]
        elif advantage == "centred":
            A = [x - mean(r) for x in r]
        else:
            A = [x - (sum(r) - x) / (len(r) - 1) for x in r]
        per_token = [surrogate(o, a, clip_low, clip_high) + beta * k3(o["lp"], o["ref"]) for o, a in zip(rs, A)]
        total, tokens = total + sum(t.sum() for t in per_token), tokens + sum(len(t) for t in per_token)
        if aggregation == "seq-mean":
            group_losses.append(mean([t.mean() for t in per_token]))
        elif aggregation == "seq-sum-over-limit":
            group_losses.append(mean([t.sum() / max_new_tokens for t in per_token]))
    if aggregation == "token-mean":
        return total / max(tokens, 1), tokens
    return (sum(group_losses) / len(group_losses) if group_losses else b.logp.sum() * 0), len(group_losses)


def ref_rft(b):
    return [o["lp"].mean() * -1 for rs in rollouts(b).values() for o in rs if o["r"] > 0]


def reference_loss(name, b, opts, ctx):
    """(loss, units) from the naive references: the mean over the units."""
    kw = opts | ctx
    if name == "dapo":
        total, tokens = ref_dapo(b, **kw)
        return total / max(tokens, 1), tokens
    if name == "rloo":
        clip = kw.pop("clip_eps", 0.2)
        return ref_pg(b, advantage="leave-one-out", aggregation="seq-mean", clip_low=clip, clip_high=clip, **kw)
    if name == "pg":
        return ref_pg(b, **kw)
    if name in ("disco", "disco-b"):
        losses, constraint = (ref_disco if name == "disco" else ref_disco_b)(b, **kw)
        return (sum(losses) / len(losses) + constraint if losses else b.logp.sum() * 0), len(losses)
    fn = {"conspo": ref_conspo, "rence": ref_rence, "copg": ref_copg, "online-dpo": ref_online_dpo,
          "grpo": ref_grpo, "dr-grpo": ref_dr_grpo, "rft": ref_rft}[name]
    losses = fn(b, **kw)
    return (sum(losses) / len(losses) if losses else b.logp.sum() * 0), len(losses)


CASES = [
    ("conspo", {}, {"fraction_done": 0.5}),
    ("conspo", {"tau": 1.0, "margin": 0.3, "alpha": 0.5}, {"fraction_done": 0.2}),
    ("rence", {}, {}),
    ("rence", {"form": "marginal", "margin": 0.2}, {}),
    ("rence", {"score": "normalized", "beta": 3.0, "margin": 0.1}, {}),
    ("rence", {"score": "plain", "beta": 0.5, "kl_coef": 0.1}, {}),
    ("rence", {"kl_coef": 2.0, "target_kl": 0.01, "easy_threshold": 0.7}, {}),
    ("disco", {}, {}),
    ("disco", {"score": "ratio", "delta": 10.0}, {}),
    ("disco-b", {}, {}),
    ("disco-b", {"score": "ratio"}, {}),
    ("copg", {}, {}),
    ("copg", {"beta": 0.5}, {}),
    ("online-dpo", {}, {}),
    ("online-dpo", {"beta": 1.0}, {}),
    ("grpo", {}, {}),
    ("grpo", {"beta": 0.04, "clip_eps": 0.1}, {}),
    ("dapo", {}, {"max_new_tokens": 7}),
    ("dapo", {"overlong_cache": 3, "clip_high": 0.4}, {"max_new_tokens": 6}),
    ("dapo", {"overlong_cache": 0}, {"max_new_tokens": 9}),
    ("dr-grpo", {}, {"max_new_tokens": 8}),
    ("rft", {}, {}),
    ("rloo", {}, {}),
    ("rloo", {"clip_eps": 0.1}, {}),
    ("pg", {}, {}),
    ("pg", {"advantage": "leave-one-out", "aggregation": "seq-sum-over-limit", "clip_high": 0.3, "drop_flat": True}, {"max_new_tokens": 9}),
    ("pg", {"advantage": "centred", "aggregation": "seq-mean", "beta": 0.05, "clip_low": 0.1}, {}),
    ("rence", {"score": "sampler", "beta": 0.5, "margin": 0.1}, {}),  # added after the pins: the ids above keep their numbers
]
IDS = [f"{n}-{i}" for i, (n, _, _) in enumerate(CASES)]


def test_every_objective_is_covered():
    assert {n for n, _, _ in CASES} == set(OBJECTIVES)


def test_random_batches_exercise_clipping():
    b = make_batch(0)
    assert 0 < objective("grpo", b)[1]["clip_frac"] < 0.5


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("name", "opts", "ctx"), CASES, ids=IDS)
def test_matches_naive_reference(name, opts, ctx, seed):
    b = make_batch(seed)
    loss, stats = run(name, b, opts, ctx)
    (grad,) = torch.autograd.grad(loss, b.logp)
    want, units = reference_loss(name, b, opts, ctx)
    (want_grad,) = torch.autograd.grad(want, b.logp)
    assert stats["units"] == units
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, want_grad, rtol=1e-9, atol=1e-12)
    assert all(isinstance(v, float) and math.isfinite(v) for v in stats.values())


@pytest.mark.parametrize(("name", "opts", "ctx"), CASES, ids=IDS)
def test_permuting_rollouts_changes_nothing(name, opts, ctx):
    b = make_batch(2)
    perm = torch.randperm(len(b.reward), generator=torch.Generator().manual_seed(0))
    logp = b.logp.detach()[perm].requires_grad_()
    shuffled = Batch(logp, b.old_logp[perm], b.mask[perm], b.reward[perm], b.group[perm], b.ref_logp[perm],
                     behaviour_logp=b.behaviour_logp[perm])
    loss, stats = run(name, b, opts, ctx)
    loss2, stats2 = run(name, shuffled, opts, ctx)
    torch.testing.assert_close(loss2, loss, rtol=1e-10, atol=1e-12)
    grad, grad2 = torch.autograd.grad(loss, b.logp)[0], torch.autograd.grad(loss2, logp)[0]
    torch.testing.assert_close(grad2, grad[perm])
    assert stats2 == pytest.approx(stats)


@pytest.mark.parametrize(("name", "opts", "ctx"), CASES, ids=IDS)
def test_padding_changes_nothing(name, opts, ctx):
    clean = make_batch(3, garbage=0.0)
    dirty = make_batch(3, garbage=1e4)  # exp(1e4) overflows: padding must never reach a ratio
    B, extra = len(clean.reward), 4

    def widen(x):
        return torch.cat([x, 1e4 * torch.randn(B, extra)], 1)

    logp = widen(dirty.logp.detach()).requires_grad_()
    wide = Batch(logp, widen(dirty.old_logp), torch.cat([dirty.mask, torch.zeros(B, extra)], 1),
                 dirty.reward, dirty.group, widen(dirty.ref_logp), behaviour_logp=widen(dirty.behaviour_logp))
    loss, stats = run(name, clean, opts, ctx)
    loss2, stats2 = run(name, wide, opts, ctx)
    grad = torch.autograd.grad(loss, clean.logp)[0]
    grad2 = torch.autograd.grad(loss2, logp)[0]
    torch.testing.assert_close(loss2, loss)
    torch.testing.assert_close(grad2[:, : grad.shape[1]], grad)
    assert (grad2[wide.mask == 0] == 0).all()
    assert stats2 == pytest.approx(stats)


def step_of(b: Batch) -> StepInfo:
    """The whole batch as the trainer describes an optimiser step to DisCO."""
    kl = float(((b.old_logp - b.logp.detach()) * b.mask).sum() / b.mask.sum())
    return StepInfo(kl=kl, tokens=float(b.mask.sum()), groups=float(b.num_groups))


@pytest.mark.parametrize(("name", "opts", "ctx"), CASES, ids=IDS)
def test_micro_batches_add_up_to_the_batch(name, opts, ctx):
    """sum over micro-batches of loss * units, divided by the total units, is the whole batch's loss. DisCO's
    KL constraint included: the micro-batches get the step's KL, tokens and groups (``step``)."""
    b = make_batch(4)
    if name.startswith("disco"):
        ctx = {**ctx, "step": step_of(b)}
    loss, stats = run(name, b, opts, ctx)
    total, units = 0, 0
    for part in ([0, 3], [1, 2, 5], [4]):
        rows = torch.isin(b.group, torch.tensor(part))
        renumber = torch.tensor([part.index(int(x)) for x in b.group[rows]])
        mb = Batch(b.logp[rows], b.old_logp[rows], b.mask[rows], b.reward[rows], renumber, b.ref_logp[rows],
                   behaviour_logp=b.behaviour_logp[rows])
        part_loss, part_stats = run(name, mb, opts, ctx)
        total, units = total + part_loss * part_stats["units"], units + part_stats["units"]
    assert units == stats["units"]
    torch.testing.assert_close(total / units, loss)
    grad, grad2 = torch.autograd.grad(loss, b.logp)[0], torch.autograd.grad(total / units, b.logp)[0]
    torch.testing.assert_close(grad2, grad)


@pytest.mark.parametrize(("name", "opts", "ctx"), [c for c in CASES if spec(c[0]).drops_flat])
def test_objectives_that_drop_flat_groups_get_nothing_from_them(name, opts, ctx):
    """The trainer leaves flat groups out for these objectives: loss, gradient and units must not change."""
    b = make_batch(8)
    keep = ~torch.isin(b.group, torch.tensor([1, 3]))  # KINDS[1] all positive, KINDS[3] all negative
    renumber = torch.unique(b.group[keep], return_inverse=True)[1]
    mixed_only = Batch(b.logp[keep], b.old_logp[keep], b.mask[keep], b.reward[keep], renumber, b.ref_logp[keep],
                       behaviour_logp=b.behaviour_logp[keep])
    loss, stats = run(name, b, opts, ctx)
    loss2, stats2 = run(name, mixed_only, opts, ctx)
    torch.testing.assert_close(loss2, loss)
    torch.testing.assert_close(torch.autograd.grad(loss2, b.logp)[0][keep], torch.autograd.grad(loss, b.logp)[0][keep])
    assert stats2["units"] == stats["units"] and stats["groups_dropped"] == stats2["groups_dropped"] + 2


EVERY_GROUP_A_UNIT = ("grpo", "dr-grpo", "rloo", "pg", "disco", "disco-b")  # zero advantage, or no policy term, when flat


@pytest.mark.parametrize(("name", "opts", "ctx"), [c for c in CASES if c[0] not in EVERY_GROUP_A_UNIT])
def test_no_usable_unit_gives_zero_loss_with_a_grad_path(name, opts, ctx):
    kinds = ("neg", "neg") if name == "rft" else ("pos", "neg", "pos")
    b = make_batch(5, kinds=kinds)
    loss, stats = run(name, b, opts, ctx)
    assert stats["units"] == 0 and loss.item() == 0
    (grad,) = torch.autograd.grad(loss, b.logp)
    assert torch.isfinite(grad).all()
    assert all(math.isfinite(v) for v in stats.values())
    if name != "rft":
        assert stats["groups_dropped"] == len(kinds)


@pytest.mark.parametrize(("name", "opts", "ctx"), [
    ("grpo", {}, {}), ("grpo", {"clip_eps": 0.1, "eps": 0.0}, {}), ("dapo", {}, {"max_new_tokens": 7}),
    ("dapo", {"overlong_cache": 0}, {"max_new_tokens": 9}), ("dr-grpo", {}, {"max_new_tokens": 8}), ("rloo", {}, {}),
    ("pg", {"advantage": "centred", "aggregation": "seq-sum-over-limit"}, {"max_new_tokens": 8}),
])
def test_equal_rewards_give_no_gradient(name, opts, ctx):
    b = make_batch(6)
    loss, _ = run(name, b, opts, ctx)
    (grad,) = torch.autograd.grad(loss, b.logp)
    flat = torch.isin(b.group, torch.tensor([1, 3]))  # KINDS[1] is all-positive, KINDS[3] all-negative
    assert (grad[flat] == 0).all() and (grad[~flat] != 0).any()
    only_flat = make_batch(6, kinds=("pos", "neg"))
    loss, _ = run(name, only_flat, opts, ctx)
    assert loss.item() == 0 and (torch.autograd.grad(loss, only_flat.logp)[0] == 0).all()


# ---- ConSPO's gradient identities (docs/objectives.md) ------------------------------------------------


def test_conspo_gradient_identities_at_margin_0():
    """With one-token completions s_k is logp[k, 0], so the gradient of -loss is dJ/ds."""
    tau = 2.0
    s = torch.tensor([-0.3, -1.2, -0.7, -0.5, -2.0, -0.9, -0.1])
    pos = torch.tensor([1, 1, 1, 0, 0, 0, 0.0])
    logp = s[:, None].clone().requires_grad_()
    b = Batch(logp, s[:, None], torch.ones(7, 1), pos, torch.zeros(7, dtype=torch.long))
    loss, _ = objective("conspo", b, tau=tau, margin=0.0)
    dJ = -torch.autograd.grad(loss, logp)[0][:, 0]
    P, N = pos > 0, pos == 0
    e = torch.exp(s / tau)
    denom = e[P] + e[N].sum()  # one InfoNCE denominator per positive
    P_i = e[P] / denom
    torch.testing.assert_close(dJ[P], (1 - P_i) / P.sum())
    weights = e[N][None, :] / denom[:, None]  # [positive, negative] softmax weights of the negatives
    torch.testing.assert_close(dJ[N], -weights.mean(0))
    torch.testing.assert_close(dJ[P].sum(), -dJ[N].sum())
    order = s[N].argsort()  # a higher-scoring negative gets more (negative) gradient
    assert (dJ[N][order].diff() < 0).all()


def test_conspo_margin_follows_the_cosine_curriculum():
    b = make_batch(0)
    margin = {f: objective("conspo", b, Context(fraction_done=f), margin=1.0, alpha=0.3)[1]["margin"] for f in
              (0.0, 0.15, 0.3, 0.9)}
    assert margin == pytest.approx({0.0: 0.0, 0.15: 0.5, 0.3: 1.0, 0.9: 1.0})


# ---- small examples worked out by hand -----------------------------------------------------------


def hand_batch(logp, old, reward, ref=None):
    """One group; rows given as token lists of different lengths, padded with -99."""
    T = max(map(len, logp))

    def pad(rows):
        return torch.tensor([r + [-99.0] * (T - len(r)) for r in rows])

    mask = torch.tensor([[1.0] * len(r) + [0.0] * (T - len(r)) for r in logp])
    return Batch(pad(logp).requires_grad_(), pad(old), mask, torch.tensor(reward),
                 torch.zeros(len(logp), dtype=torch.long), None if ref is None else pad(ref))


def test_conspo_by_hand():
    # tau = 1, margin 0. Positive A: tokens [-1, -1], s_A = -1; positive B: [-2], s_B = -2;
    # negative C: [-1, -3], s_C = -2.
    #   J_A = log(e^-1 / (e^-1 + e^-2)) = -log(1 + e^-1) = -0.313261687518
    #   J_B = log(e^-2 / (e^-2 + e^-2)) = -log 2          = -0.693147180560
    #   loss = -(J_A + J_B) / 2 = 0.503204434039
    # dJ/ds_A = (1 - P_A)/2 with P_A = 1/(1 + e^-1) = 0.731058578630 -> 0.134470710685,
    #   shared by A's 2 tokens:
    #   d loss/d logp[A, t] = -0.067235355342
    # dJ/ds_B = (1 - 1/2)/2 = 0.25 (one token): d loss/d logp[B, 0] = -0.25
    # dJ/ds_C = -((1 - P_A) + 1/2)/2 = -0.384470710685, over 2 tokens: d loss/d logp[C, t] = +0.192235355342
    b = hand_batch([[-1, -1], [-2], [-1, -3]], [[-1, -1], [-2], [-1, -3]], [1, 1, 0])
    loss, stats = objective("conspo", b, tau=1.0, margin=0.0)
    assert loss.item() == pytest.approx(0.503204434039)
    grad = torch.autograd.grad(loss, b.logp)[0]
    want = torch.tensor([[-0.067235355342, -0.067235355342], [-0.25, 0], [0.192235355342, 0.192235355342]])
    torch.testing.assert_close(grad, want, rtol=0, atol=1e-11)
    # scores: positives (-1 + -2)/2 = -1.5, negative -2; hardest negative's weight (1 - P_A + 1/2)/2
    assert stats == pytest.approx({
        "score_pos": -1.5, "score_neg": -2.0, "score_gap": 0.5, "groups_dropped": 0.0, "margin": 0.0,
        "hardest_neg_weight": 0.384470710685, "units": 1.0, "entropy": 8 / 5,  # mean -logp over 5 tokens
    })


def test_rence_by_hand():
    # logratio score, beta = 1: z_A = (-1 - 1) - (-1.5 - 1.5) = 1, z_B = -2 - (-2) = 0, z_C = 0 (negative).
    #   per-positive: (log(1 + e^-1) + log 2)/2 = (0.313261687518 + 0.693147180560)/2 = 0.503204434039
    #   marginal: -log((e + 1)/(e + 1 + 1)) = log(4.718281828459/3.718281828459) = 0.238183026414
    #   d(per-positive)/dS_A = -(1 - P_A)/2 = -0.134470710685 on each token of A (a sum, not a mean)
    b = hand_batch([[-1, -1], [-2], [-1]], [[-1.5, -1.5], [-2], [-1]], [1, 1, 0])
    loss, stats = objective("rence", b)
    assert loss.item() == pytest.approx(0.503204434039)
    assert torch.autograd.grad(loss, b.logp)[0][0].tolist() == pytest.approx([-0.134470710685] * 2)
    assert stats["score_pos"] == pytest.approx(0.5) and stats["score_neg"] == 0
    loss, _ = objective("rence", b, form="marginal")
    assert loss.item() == pytest.approx(0.238183026414)
    # margin 1 lowers z_A to 0 and z_B to -1: (log 2 + log(1 + e))/2 = (0.693147180560 + 1.313261687518)/2
    loss, _ = objective("rence", b, margin=1.0)
    assert loss.item() == pytest.approx(1.003204434039)


def test_grpo_by_hand():
    # rewards [1, 0]: mean 0.5, sample std sqrt(0.5) -> A = +-0.5/0.707106781187 = +-0.707106781187 (eps 0).
    # Positive: one token, rho = 1.5 > 1.2 with A > 0 -> clipped: loss -1.2 * 0.707106781187
    #   = -0.848528137424, gradient 0.
    # Negative: two on-policy tokens, rho = 1: -min(-A, -A) = 0.707106781187 each, mean 0.707106781187.
    # loss = (-0.848528137424 + 0.707106781187)/2 = -0.070710678119
    # d loss/d logp[neg, t] = -rho * A / L / K = 0.707106781187/2/2 = 0.176776695297; clip_frac = 1/3
    b = hand_batch([[-1.0], [-1, -2]], [[-1 - math.log(1.5)], [-1, -2]], [1, 0])
    loss, stats = objective("grpo", b, eps=0.0)
    assert loss.item() == pytest.approx(-0.070710678119)
    grad = torch.autograd.grad(loss, b.logp)[0]
    torch.testing.assert_close(grad, torch.tensor([[0, 0], [0.176776695297] * 2]), rtol=0, atol=1e-11)
    assert stats["clip_frac"] == pytest.approx(1 / 3) and stats["units"] == 1


def test_dapo_by_hand():
    # max_new_tokens 4, cache 2: lengths 1, 3, 4 get penalties 0, -1/2, -1.
    # Rewards [1, 1, 0] -> r = [1, 0.5, -2],
    # mean -1/6, sample std = sqrt(((7/6)^2 + (2/3)^2 + (11/6)^2)/2) = sqrt(2.583333) = 1.607275126
    # On-policy, so the loss is -sum_k L_k A_k / 8 tokens = -(1 * 7/6 + 3 * 2/3 + 4 * -11/6) / 8 / 1.607275126
    #   = 4.166667 / 8 / 1.607275126 = 0.520833 / 1.607275126 = 0.324047405
    b = hand_batch([[-1.0], [-1.0] * 3, [-1.0] * 4], [[-1.0], [-1.0] * 3, [-1.0] * 4], [1, 1, 0])
    loss, stats = objective("dapo", b, Context(max_new_tokens=4), overlong_cache=2, eps=0.0)
    assert loss.item() == pytest.approx(0.324047405)
    assert stats["units"] == 8


def test_copg_and_online_dpo_by_hand():
    # beta 1: implicit rewards u = S - S_ref = [0.5, -0.5, 1] for rewards [1, 1, 0].
    # CoPG: R' = r - u = [0.5, 1.5, -1]; pairs (i<j): 1 + 2.25 + 6.25 = 9.5, over K - 1 = 2 -> 4.75
    # online DPO: hardest positive u = -0.5 against the negative u = 1: -log sigmoid(-1.5) = 1.701413
    b = hand_batch([[-1.0], [-2.0], [-1.0]], [[-1.0], [-2.0], [-1.0]], [1, 1, 0], ref=[[-1.5], [-1.5], [-2.0]])
    assert objective("copg", b, beta=1.0)[0].item() == pytest.approx(4.75)
    assert objective("online-dpo", b, beta=1.0)[0].item() == pytest.approx(1.701413, abs=1e-6)


def test_rloo_by_hand():
    # rewards [1, 0, 0]: each baseline is the mean of the other two: 0, 0.5, 0.5 -> A = [1, -0.5, -0.5].
    # On-policy (rho = 1), per-token loss -A; each sequence's token mean is -A_k, their mean over the group
    # -(1 - 0.5 - 0.5)/3 = 0. d loss/d logp[k, t] = -A_k / L_k / K: row 0 (1 token) -1/3, row 1 (2 tokens)
    # 0.5/2/3 = 1/12 each, row 2 (1 token) 0.5/3 = 1/6.
    b = hand_batch([[-1.0], [-1.0, -2.0], [-3.0]], [[-1.0], [-1.0, -2.0], [-3.0]], [1, 0, 0])
    loss, stats = objective("rloo", b)
    assert loss.item() == pytest.approx(0.0, abs=1e-15) and stats["units"] == 1 and stats["groups_flat"] == 0
    want = torch.tensor([[-1 / 3, 0], [1 / 12, 1 / 12], [1 / 6, 0]])
    torch.testing.assert_close(torch.autograd.grad(loss, b.logp)[0], want, rtol=0, atol=1e-15)


@pytest.mark.parametrize(("preset", "opts", "ctx", "composed"), [
    ("grpo", {"clip_eps": 0.1, "beta": 0.04, "eps": 1e-3}, {},
     {"advantage": "normalised", "aggregation": "seq-mean", "clip_low": 0.1, "clip_high": 0.1, "beta": 0.04, "eps": 1e-3}),
    ("dr-grpo", {}, {"max_new_tokens": 8}, {"advantage": "centred", "aggregation": "seq-sum-over-limit"}),
    ("rloo", {"clip_eps": 0.3}, {}, {"advantage": "leave-one-out", "aggregation": "seq-mean", "clip_low": 0.3, "clip_high": 0.3}),
])
def test_a_preset_is_its_composition_by_name(preset, opts, ctx, composed):
    b = make_batch(0)
    loss, stats = run(preset, b, opts, ctx)
    loss2, stats2 = run("pg", b, composed, ctx)
    assert loss.item() == loss2.item() and stats == stats2
    assert torch.equal(torch.autograd.grad(loss, b.logp)[0], torch.autograd.grad(loss2, b.logp)[0])


def test_clip_fractions_are_split_by_side():
    # One group, rewards [1, 0]: A = +-0.707 (eps 0). Positive: ratios 1.25 and 1.1; negative: 0.75 and 0.9.
    # GRPO (0.8, 1.2) clips 1.25 (high side) and 0.75 (low side): 1/4 each. DAPO's (0.8, 1.28) leaves 1.25 alone.
    lr = [math.log(x) for x in (1.25, 1.1, 0.75, 0.9)]
    b = hand_batch([lr[:2], lr[2:]], [[0.0, 0.0], [0.0, 0.0]], [1, 0])
    _, grpo = objective("grpo", b, eps=0.0)
    assert (grpo["clip_frac_low"], grpo["clip_frac_high"], grpo["clip_frac"]) == pytest.approx((0.25, 0.25, 0.5))
    _, dapo = objective("dapo", b, Context(max_new_tokens=4), overlong_cache=0, eps=0.0)
    assert (dapo["clip_frac_low"], dapo["clip_frac_high"], dapo["clip_frac"]) == pytest.approx((0.25, 0.0, 0.25))


@pytest.mark.parametrize(("name", "opts", "ctx"), CASES, ids=IDS)
def test_a_statistic_is_a_count_of_groups_or_a_mean_by_type(name, opts, ctx):
    b = make_batch(0)
    if name.startswith("disco"):
        ctx = {**ctx, "step": step_of(b)}
    out = get_objective(name)(b, Context(**ctx), **opts)
    assert set(out.counts) <= {"groups_dropped", "groups_flat"} and "units" not in out.means
    assert all(isinstance(v, float) and math.isfinite(v) for v in (*out.means.values(), *out.counts.values(), out.units))


# ---- options and errors -------------------------------------------------------------------------


def test_documented_defaults():
    assert options("conspo") == {"tau": 10.0, "inverse": False, "margin": 0.01, "alpha": 0.3}
    assert options("disco") == {"score": "loglik", "tau": None, "delta": 1e-4, "beta": 1e3}
    assert options("dapo")["clip_low"] == 0.2 and options("dapo")["clip_high"] == 0.28
    assert options("grpo") == {"clip_eps": 0.2, "beta": 0.0, "eps": 1e-4}
    assert options("rence")["form"] == "per-positive" and options("rence")["score"] == "logratio"


def test_disco_tau_follows_the_score():
    b = make_batch(7)
    for score, tau in (("loglik", 10.0), ("ratio", 1.0)):
        assert objective("disco", b, score=score)[0].item() == pytest.approx(objective("disco", b, score=score, tau=tau)[0].item())


@pytest.mark.parametrize(("name", "given", "words"), [
    ("rence", {"form": "pairs"}, "form"), ("disco", {"score": "logit"}, "score"), ("disco", {"tau": "nan"}, "finite"),
    ("conspo", {"tau": "0"}, "tau"), ("conspo", {"tau": "-1"}, "tau"), ("grpo", {"clip_eps": "1.5"}, "clip_eps"),
    ("dapo", {"overlong_cache": "x"}, "int"), ("conspo", {"nope": "1"}, "nope"), ("online-dpo", {"beta": "inf"}, "finite"),
])
def test_bad_options_are_user_errors(name, given, words):
    with pytest.raises(CrlError, match=words):
        check_options(name, given)


def test_options_are_typed_from_the_signature():
    assert check_options("dapo", {"overlong_cache": "4", "clip_high": "0.3"}) == {"overlong_cache": 4, "clip_high": 0.3}
    assert check_options("conspo", {"inverse": "true", "tau": "5"}) == {"inverse": True, "tau": 5.0}
    with pytest.raises(CrlError):
        get_objective("no-such-thing")


def test_dapo_cache_must_leave_room_below_the_limit():
    with pytest.raises(CrlError, match="overlong_cache"):
        get_objective("dapo")(make_batch(0), Context(max_new_tokens=8), overlong_cache=8)


def test_reference_objectives_never_fall_back_to_the_behaviour_policy():
    """online-dpo and copg used old_logp as their reference when none was given, so the anchor moved every round
    (and online DPO's first step was exactly log 2); they now need one, and the trainer gives the run's start."""
    b = make_batch(0, ref=False)
    for name in ("online-dpo", "copg"):
        assert needs_reference(name, {})
        with pytest.raises(ValueError, match="reference"):
            get_objective(name)(b)
    assert needs_reference("grpo", {"beta": 0.04}) and not needs_reference("grpo", {})
    assert needs_reference("rence", {"kl_coef": 0.1}) and not needs_reference("conspo", {})


def test_disco_constraint_is_over_the_whole_step_not_the_micro_batch():
    """Before, a micro-batch computed the KL of its own tokens: one with no drift switched the constraint off."""
    b = make_batch(4)
    step = step_of(b)
    rows = torch.isin(b.group, torch.tensor([1]))  # one micro-batch alone
    mb = Batch(b.logp[rows], b.old_logp[rows], b.mask[rows], b.reward[rows], torch.zeros(int(rows.sum()), dtype=torch.long), b.ref_logp[rows],
               behaviour_logp=b.behaviour_logp[rows])
    _, with_step = objective("disco", mb, Context(step=step), delta=0.0)
    _, alone = objective("disco", mb, delta=0.0)
    assert with_step["kl"] == pytest.approx(step.kl) and alone["kl"] != pytest.approx(step.kl)


def test_conspo_inverse_temperature_concentrates_on_the_hardest_negative():
    b = make_batch(0)
    _, divided = objective("conspo", b, tau=10.0)
    _, inverse = objective("conspo", b, tau=10.0, inverse=True)
    assert inverse["hardest_neg_weight"] > divided["hardest_neg_weight"] + 0.1


def test_a_second_registration_of_a_name_is_refused():
    from crl.objectives import register

    with pytest.raises(ValueError, match="registered twice"):
        register("grpo")(lambda b, ctx: None)


def test_the_listing_names_every_objective_and_marks_the_default_once(cli):
    from crl.config.settings import Train

    code, out, _ = cli("train", "--list-objectives")
    assert code == 0 and out.count("(default)") == 1 and f"{Train.objective} (default)" in out
    assert all(name in out for name in OBJECTIVES)


# ---- the numbers of the release before objectives were composed, pinned --------------------------------
# tests/objective_values.json holds, for every case above on fixed batches (several groups, ragged lengths,
# flat groups, with and without reference log-probs), the loss, every statistic and a digest of the gradient
# as f148ed5 computed them (float64). A refactoring of the objectives must leave each of them where it was.

PINNED = Path(__file__).with_name("objective_values.json")
BATCHES = {  # name: (seed, kinds, with reference log-probs)
    "mixed": (0, KINDS, True),
    "mixed-no-reference": (1, KINDS, False),
    "flat-only": (5, ("pos", "neg", "pos"), True),
    "one-group": (9, ("mixed",), True),
}


RELEASED = ("conspo", "rence", "disco", "disco-b", "copg", "online-dpo", "grpo", "dapo", "dr-grpo", "rft")


def pinned_cases():
    for (name, opts, ctx), case in zip(CASES, IDS):
        for batch, (seed, kinds, ref) in BATCHES.items() if name in RELEASED else ():
            if not ref and needs_reference(name, opts):
                continue
            yield f"{case}/{batch}", name, opts, ctx, (seed, kinds, ref)
            if name.startswith("disco"):
                yield f"{case}/{batch}/step", name, opts, ctx, (seed, kinds, ref)


def measure(key: str, name: str, opts: dict, ctx: dict, batch: tuple) -> dict:
    """Loss, statistics and a digest of d loss / d logp: its sum, its square sum, and its projections on two
    fixed random directions (any change to any element shows in them)."""
    seed, kinds, ref = batch
    b = make_batch(seed, kinds=kinds, ref=ref)
    if key.endswith("/step"):
        ctx = {**ctx, "step": step_of(b)}
    loss, stats = run(name, b, opts, ctx)
    (grad,) = torch.autograd.grad(loss, b.logp)
    directions = torch.randn((2, *grad.shape), generator=torch.Generator().manual_seed(100))
    digest = [grad.sum(), (grad * grad).sum(), *(grad * directions).sum((1, 2))]
    return {"loss": loss.item(), "stats": stats, "grad": [float(x) for x in digest]}


@pytest.mark.parametrize(("key", "name", "opts", "ctx", "batch"), list(pinned_cases()), ids=[c[0] for c in pinned_cases()])
def test_loss_statistics_and_gradient_are_those_pinned(key, name, opts, ctx, batch):
    want = json.loads(PINNED.read_text())[key]
    got = measure(key, name, opts, ctx, batch)
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-12, abs=1e-15)
    assert got["grad"] == pytest.approx(want["grad"], rel=1e-12, abs=1e-15)
    assert {k: got["stats"][k] for k in want["stats"]} == pytest.approx(want["stats"], rel=1e-12, abs=1e-15)


def test_every_pinned_case_is_measured():
    assert sorted(json.loads(PINNED.read_text())) == sorted(c[0] for c in pinned_cases())


def test_rence_sampler_score_is_the_logratio_score_when_the_sampler_is_the_old_policy():
    """score=sampler scores by the ratio to the policy that drew each sample: online that is the old policy, so
    both scores give the same loss; on stored rounds of an older policy they differ, and without the sampler's
    log-probs it is refused."""
    b = make_batch(5)
    online = dataclasses.replace(b, behaviour_logp=b.old_logp)
    assert objective("rence", online, score="sampler")[0].item() == pytest.approx(objective("rence", online)[0].item(), rel=1e-12)
    assert objective("rence", b, score="sampler")[0].item() != pytest.approx(objective("rence", b)[0].item(), rel=1e-3)
    with pytest.raises(ValueError, match="sampler"):
        objective("rence", dataclasses.replace(b, behaviour_logp=None), score="sampler")
