"""One round of updates as a plan of optimiser steps, each a set of whole groups packed into micro-batches.

The groups (all rollouts of one prompt) are shuffled and split into ``minibatches`` steps per epoch; each
step's groups are dealt to the ranks (one rank without torchrun) and packed into micro-batches under the token
budget, so group-level objectives see every rollout of a group together. Each micro-batch back-propagates
``loss * units`` and the step divides the summed gradient by the total units, which makes the update
independent of how the groups were split (crl/objectives/__init__.py).

Behaviour log-probs ("old", the policy before the round's first update) are computed with exactly the
packing the training forward uses, so they agree with it to the last bit: the first step takes them from its
own forward pass (detached), the later steps' from a no-grad pass over their micro-batches before any update.
Reference log-probs come from the same kind of pass through the frozen reference model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Iterator

import polars as pl
import torch
from torch import Tensor

from crl.config import Train
from crl.data.schemas import RolloutMeta
from crl.engine import distributed
from crl.engine.logprobs import TokenSeq, completion_logprobs, pack, padded
from crl.engine.policy import Runtime, autocast
from crl.errors import CrlError
from crl.objectives import Batch

SUMMED_STATS = ("units", "groups_dropped", "groups_flat", "mismatch_sum", "mismatch_tokens", "tis_sum", "tis_capped_sum")
Reference = Callable[[], ContextManager[torch.nn.Module]]


@dataclass
class Rollouts:
    """The training rows of one round as token sequences with their per-row tensors."""

    seqs: list[TokenSeq]
    reward: Tensor
    positive: Tensor
    groups: list[list[int]]  # row indices of each prompt's group
    behaviour: list[Tensor]  # the sampler's log-probs
    temperature: float
    max_new_tokens: int
    old: dict[int, Tensor] = field(default_factory=dict)  # the trainer's log-probs before the round's update
    ref: dict[int, Tensor] = field(default_factory=dict)


def rollouts_from(rows: pl.DataFrame, meta: RolloutMeta, device: str) -> Rollouts:
    seqs = [TokenSeq(p, c) for p, c in zip(rows["prompt_ids"].to_list(), rows["completion_ids"].to_list())]
    index: dict[str, list[int]] = {}
    for i, pid in enumerate(rows["prompt_id"].to_list()):
        index.setdefault(pid, []).append(i)
    return Rollouts(
        seqs=seqs,
        reward=torch.tensor(rows["reward"].to_list(), dtype=torch.float32, device=device),
        positive=torch.tensor(rows["positive"].to_list(), dtype=torch.bool, device=device),
        groups=list(index.values()),
        behaviour=[torch.tensor(lp, dtype=torch.float32, device=device) for lp in rows["logprobs"].to_list()],
        temperature=meta.sampling.temperature or 1.0,
        max_new_tokens=meta.sampling.max_new_tokens,
    )


@dataclass(frozen=True)
class Step:
    groups: list[list[int]]  # the rows of each group of this step (all ranks)
    bins: list[list[int]]  # this rank's micro-batches, as indices into ``groups``

    def rows(self, b: int) -> list[int]:
        return [i for k in self.bins[b] for i in self.groups[k]]


def plan(data: Rollouts, train: Train, rt: Runtime, generator: torch.Generator) -> list[Step]:
    """The round's optimiser steps: ``epochs`` shuffles of the groups, each cut into ``minibatches`` steps."""
    steps = []
    for _ in range(train.epochs):
        order = torch.randperm(len(data.groups), generator=generator)
        for chunk in order.chunk(train.minibatches):
            groups = [data.groups[k] for k in chunk.tolist()]
            lengths = [[len(data.seqs[i]) for i in g] for g in groups]
            mine = distributed.deal_groups(range(len(groups)), [sum(n) for n in lengths], distributed.world())[distributed.rank()]
            steps.append(Step(groups, [[mine[k] for k in b] for b in pack([lengths[k] for k in mine], rt.token_budget, rt.packed)]))
    return steps


def each_bin(step: Step) -> Iterator[int | None]:
    """This rank's micro-batches, then ``None`` for each padding pass the other ranks still need (FSDP2's
    gathers and reductions need every rank in every forward and backward)."""
    passes = distributed.all_reduce_max(len(step.bins))  # a collective: before any forward pass
    yield from range(len(step.bins))
    yield from [None] * (passes - len(step.bins))


def _forward(model: torch.nn.Module, data: Rollouts, rows: list[int], rt: Runtime) -> list[Tensor]:
    with autocast(rt):
        return completion_logprobs(model, [data.seqs[i] for i in rows], data.temperature, packed=rt.packed, share_prompts=rt.share_prompts)


def _shortest(data: Rollouts) -> list[int]:
    return [min(range(len(data.seqs)), key=lambda i: len(data.seqs[i]))]


@torch.no_grad()
def logprobs_of(model: torch.nn.Module, data: Rollouts, step: Step, rt: Runtime) -> dict[int, Tensor]:
    """Log-probs (float32, no gradient) of this rank's rows of ``step``, packed as its training passes are."""
    out: dict[int, Tensor] = {}
    for b in each_bin(step):
        rows = step.rows(b) if b is not None else _shortest(data)
        logp = _forward(model, data, rows, rt)
        if b is not None:
            out.update((i, lp.float()) for i, lp in zip(rows, logp))
    return out


def share_old(data: Rollouts, device: str) -> None:
    """Every rank gets every row's old log-probs (a later epoch may deal a group to another rank)."""
    data.old = _gathered(data.old, device)


def _gathered(part: dict[int, Tensor], device: str) -> dict[int, Tensor]:
    if distributed.world() == 1:
        return part
    parts = distributed.all_gather({i: t.cpu() for i, t in part.items()})
    return {i: t.to(device) for p in parts for i, t in p.items()}


def before_update(model: torch.nn.Module, data: Rollouts, steps: list[Step], train: Train, rt: Runtime, reference: Reference | None) -> None:
    """Fill ``data.old`` (rows the first step does not cover, when recomputing) and ``data.ref`` (every row),
    each row with the packing of the first step it appears in."""
    first: dict[int, int] = {}
    for s, step in enumerate(steps):
        for g in step.groups:
            for i in g:
                first.setdefault(i, s)
    firsts = sorted(set(first.values()))
    was_training = model.training
    model.eval()
    if train.old_logprobs == "rollout":
        data.old.update(enumerate(data.behaviour))
    else:
        for s in firsts[1:]:
            data.old.update(_gathered(logprobs_of(model, data, steps[s], rt), rt.device))
    if reference is not None:
        with reference() as ref_model:
            for s in firsts:
                data.ref.update(_gathered(logprobs_of(ref_model, data, steps[s], rt), rt.device))
    model.train(was_training)


def micro_batch(model: torch.nn.Module, data: Rollouts, step: Step, b: int, rt: Runtime, tis_cap: float | None) -> Batch:
    """The padded tensors of some whole groups, with the policy log-probs computed (with gradient)."""
    rows = step.rows(b)
    logp = _forward(model, data, rows, rt)
    for i, lp in zip(rows, logp):
        data.old.setdefault(i, lp.detach().float())  # the first step: its own forward is the old policy
    logp_pad, mask = padded(logp)
    old = padded([data.old[i] for i in rows])[0]
    behaviour = padded([data.behaviour[i] for i in rows])[0]
    weight = None
    if tis_cap is not None:
        weight = torch.exp((old - behaviour).clamp(max=math.log(tis_cap))) * mask
    group = torch.tensor([j for j, k in enumerate(step.bins[b]) for _ in step.groups[k]], device=logp_pad.device)
    return Batch(
        logp=logp_pad, old_logp=old, mask=mask, reward=data.reward[rows], group=group,
        ref_logp=padded([data.ref[i] for i in rows])[0] if data.ref else None,
        positive=data.positive[rows], behaviour_logp=behaviour, is_weight=weight,
    )


def optimizer_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, data: Rollouts, step: Step, rt: Runtime,
    objective: Callable, kwargs: dict, max_grad_norm: float, tis_cap: float | None,
) -> dict[str, float]:
    """One optimiser step: accumulate over micro-batches, normalise by the units, clip, step. A loss or a
    gradient that is not finite stops the run (an error, never a NaN checkpoint)."""
    optimizer.zero_grad(set_to_none=True)
    totals: dict[str, float] = {}
    for b in each_bin(step):
        if b is None:
            (logp,) = _forward(model, data, _shortest(data), rt)
            (logp.sum() * 0.0).backward()  # a pass that changes nothing, for the other ranks' collectives
            continue
        batch = micro_batch(model, data, step, b, rt, tis_cap)
        loss, stats = objective(batch, **kwargs)
        if not torch.isfinite(loss):
            raise CrlError(f"the {objective.__name__} loss is not finite ({loss.item()}): check the learning rate and the objective's options")
        units = stats.get("units", 1.0)
        (loss * units).backward()  # units 0: a zero gradient, still a backward pass for the collectives
        mismatch = ((batch.old_logp - batch.behaviour_logp).abs() * batch.mask).sum()
        stats = {"loss": loss.item(), **stats, "mismatch_sum": float(mismatch), "mismatch_tokens": float(batch.mask.sum())}
        if batch.is_weight is not None:
            capped = (batch.is_weight >= tis_cap * (1 - 1e-6)) & (batch.mask > 0)
            stats.update(tis_sum=float(batch.is_weight.sum()), tis_capped_sum=float(capped.sum()))
        for key, value in stats.items():
            totals[key] = totals.get(key, 0.0) + value * (1.0 if key in SUMMED_STATS else units)
    totals = distributed.all_reduce_sum(totals)
    units = totals.get("units", 0.0)
    if units > 0:
        for p in model.parameters():
            if p.grad is not None:
                p.grad.div_(units / distributed.world())  # FSDP2 has averaged over ranks: make it sum / units
    grad_norm = distributed.full(torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm))
    if not torch.isfinite(grad_norm):
        raise CrlError(f"the gradient is not finite (norm {float(grad_norm)}): check the learning rate and the objective's options")
    if units > 0:
        optimizer.step()
    completion_tokens = max(totals.pop("mismatch_tokens", 0.0), 1.0)
    per_token = {name: totals.pop(f"{key}_sum") / completion_tokens for name, key in
                 (("logprob_mismatch", "mismatch"), ("tis_weight", "tis"), ("tis_capped", "tis_capped")) if f"{key}_sum" in totals}
    out = {k: (v if k in SUMMED_STATS else v / units if units else math.nan) for k, v in totals.items()}
    out.update(per_token, grad_norm=float(grad_norm), groups=len(step.groups),
               tokens=sum(len(data.seqs[i]) for g in step.groups for i in g))
    return out
