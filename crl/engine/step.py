"""One optimiser step as a reader who knows PyTorch expects it: forward, loss, backward, normalise, clip, step.

- ``rollouts_from``: a round's training rows as token sequences with their rewards, the verifier's split and the
  sampler's own log-probs (``behaviour``), their groups keyed by (round, prompt_id).
- ``plan``: ``epochs`` shuffles of the groups, each cut into ``minibatches`` steps; each step's groups are dealt
  to the ranks (one rank without torchrun) and packed, whole, into micro-batches under the token budget, so a
  group-level objective sees every rollout of a group together.
- ``with_logprobs``: before any update, every row's old log-probs (the policy before the round's update) and,
  for objectives that need them, its reference log-probs, each row in the micro-batch of the first step it
  appears in: the packing of its training forward, so the first update's ratios are exactly 1. The rollouts
  are not changed after that.
- ``optimizer_step``: each micro-batch back-propagates ``loss * units``; the summed gradient is divided by the
  step's units, so the update does not depend on how the groups were split. A loss or a gradient that is not
  finite stops the run (an error, never a NaN checkpoint). The statistics add up as the objective's ``Loss``
  types them: means weighted by units, counts summed.

On N processes (torchrun, FSDP2) every forward and backward is collective: ``across_ranks`` runs the passes a
rank with fewer micro-batches still owes the others and sums the statistics over ranks; on one process it
returns them as they are.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, ContextManager

import polars as pl
import torch
from torch import Tensor

from crl.config import Train
from crl.data.rounds import GROUP_KEY
from crl.data.schemas import RolloutMeta
from crl.engine import distributed
from crl.engine.logprobs import TokenSeq, completion_logprobs, pack, padded
from crl.engine.policy import Runtime, autocast
from crl.errors import CrlError
from crl.objectives import Batch, Context, Loss, StepInfo

Reference = Callable[[], ContextManager[torch.nn.Module]]
Objective = Callable[..., Loss]


@dataclass(frozen=True)
class Rollouts:
    """The training rows of one round as token sequences with their per-row tensors."""

    seqs: tuple[TokenSeq, ...]
    reward: Tensor
    positive: Tensor
    groups: tuple[tuple[int, ...], ...]  # row indices of each group
    behaviour: tuple[Tensor, ...]  # the sampler's log-probs
    temperature: float
    max_new_tokens: int
    old: tuple[Tensor, ...] = ()  # the trainer's log-probs before the round's first update (with_logprobs)
    ref: tuple[Tensor, ...] | None = None  # the reference model's, for the objectives that need them


def rollouts_from(rows: pl.DataFrame, meta: RolloutMeta, device: str) -> Rollouts:
    keys = rows.select(GROUP_KEY).rows()
    index: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        index.setdefault(key, []).append(i)
    return Rollouts(
        seqs=tuple(TokenSeq(p, c) for p, c in zip(rows["prompt_ids"].to_list(), rows["completion_ids"].to_list())),
        reward=torch.tensor(rows["reward"].to_list(), dtype=torch.float32, device=device),
        positive=torch.tensor(rows["positive"].to_list(), dtype=torch.bool, device=device),
        groups=tuple(tuple(g) for g in index.values()),
        behaviour=tuple(torch.tensor(lp, dtype=torch.float32, device=device) for lp in rows["logprobs"].to_list()),
        temperature=meta.sampling.temperature or 1.0,
        max_new_tokens=meta.sampling.max_new_tokens,
    )


@dataclass(frozen=True)
class Step:
    groups: list[tuple[int, ...]]  # the rows of each group of this step (all ranks)
    bins: list[list[int]]  # this rank's micro-batches, as indices into ``groups``
    passes: int  # the micro-batches of the busiest rank: every rank runs as many forward and backward passes
    epoch: int

    def rows(self, b: int) -> list[int]:
        return [i for k in self.bins[b] for i in self.groups[k]]


def plan(data: Rollouts, train: Train, rt: Runtime, generator: torch.Generator) -> list[Step]:
    """The round's optimiser steps: ``epochs`` shuffles of the groups, each cut into ``minibatches`` steps."""
    steps = []
    for epoch in range(train.epochs):
        order = torch.randperm(len(data.groups), generator=generator)
        for chunk in order.chunk(train.minibatches):
            groups = [data.groups[k] for k in chunk.tolist()]
            lengths = [[len(data.seqs[i]) for i in g] for g in groups]
            shares = distributed.deal_groups(range(len(groups)), [sum(n) for n in lengths], distributed.world())
            bins = [[[share[k] for k in b] for b in pack([lengths[k] for k in share], rt.token_budget, rt.packed)] for share in shares]
            steps.append(Step(groups, bins[distributed.rank()], max(map(len, bins)), epoch))
    return steps


def _forward(model: torch.nn.Module, data: Rollouts, rows: list[int], rt: Runtime) -> list[Tensor]:
    with autocast(rt):
        return completion_logprobs(model, [data.seqs[i] for i in rows], data.temperature, packed=rt.packed, share_prompts=rt.share_prompts)


def _shortest(data: Rollouts) -> list[int]:
    return [min(range(len(data.seqs)), key=lambda i: len(data.seqs[i]))]


@torch.no_grad()
def logprobs_of(model: torch.nn.Module, data: Rollouts, step: Step, rt: Runtime) -> dict[int, Tensor]:
    """Log-probs (float32, no gradient) of this rank's rows of ``step``, packed as its training passes are (and
    the passes other ranks still need)."""
    out: dict[int, Tensor] = {}
    for b in range(step.passes):
        rows = step.rows(b) if b < len(step.bins) else _shortest(data)
        logp = _forward(model, data, rows, rt)
        if b < len(step.bins):
            out.update((i, lp.float()) for i, lp in zip(rows, logp))
    return out


def with_logprobs(
    model: torch.nn.Module, data: Rollouts, steps: list[Step], rt: Runtime, reference: Reference | None, recompute: bool
) -> Rollouts:
    """The rollouts with every row's old log-probs (recomputed, or the sampler's) and reference log-probs
    (where ``reference`` gives a model), each row packed as in the first step it appears in."""
    first: dict[int, int] = {}
    for s, step in enumerate(steps):
        for g in step.groups:
            for i in g:
                first.setdefault(i, s)
    firsts = sorted(set(first.values()))

    def every_row(m: torch.nn.Module) -> tuple[Tensor, ...]:
        mine = {i: lp for s in firsts for i, lp in logprobs_of(m, data, steps[s], rt).items()}
        every = distributed.gathered(mine, rt.device)  # a later epoch may deal a group to another rank
        return tuple(every[i] for i in range(len(data.seqs)))

    was_training = model.training
    model.eval()
    old = every_row(model) if recompute else data.behaviour
    ref = None
    if reference is not None:
        with reference() as ref_model:
            ref = every_row(ref_model)
    model.train(was_training)
    return dataclasses.replace(data, old=old, ref=ref)


@torch.no_grad()
def step_info(model: torch.nn.Module, data: Rollouts, step: Step, rt: Runtime, first: bool) -> StepInfo:
    """The KL to the old policy over a whole step, before its update (0 for a round's first step when the old
    log-probs are the trainer's own), its completion tokens and its groups."""
    tokens = float(sum(len(data.seqs[i].completion_ids) for g in step.groups for i in g))
    kl_sum = 0.0
    if not first:
        for i, lp in logprobs_of(model, data, step, rt).items():
            kl_sum += float((data.old[i] - lp).sum())
        kl_sum = distributed.all_reduce_sum({"kl": kl_sum})["kl"]
    return StepInfo(kl=kl_sum / max(tokens, 1.0), tokens=tokens, groups=float(len(step.groups)))


def micro_batch(model: torch.nn.Module, data: Rollouts, step: Step, b: int, rt: Runtime, tis_cap: float | None) -> Batch:
    """The padded tensors of some whole groups, with the policy log-probs computed (with gradient)."""
    rows = step.rows(b)
    logp, mask = padded(_forward(model, data, rows, rt))
    old = padded([data.old[i] for i in rows])[0]
    behaviour = padded([data.behaviour[i] for i in rows])[0]
    weight = None if tis_cap is None else torch.exp((old - behaviour).clamp(max=math.log(tis_cap))) * mask
    group = torch.tensor([j for j, k in enumerate(step.bins[b]) for _ in step.groups[k]], device=logp.device)
    return Batch(
        logp=logp, old_logp=old, mask=mask, reward=data.reward[rows], group=group,
        ref_logp=None if data.ref is None else padded([data.ref[i] for i in rows])[0],
        positive=data.positive[rows], behaviour_logp=behaviour, is_weight=weight,
    )


@dataclass
class StepStats:
    """An optimiser step's statistics, summed over its micro-batches and ranks."""

    units: float = 0.0
    weighted: dict[str, float] = field(default_factory=dict)  # the objective's means, each times its units
    counts: dict[str, float] = field(default_factory=dict)  # the objective's counts
    token_sums: dict[str, float] = field(default_factory=dict)  # over completion tokens: mismatch, tis weights
    tokens: float = 0.0  # completion tokens
    grad_norm: float = math.nan  # before clipping

    def add(self, loss: Loss, batch: Batch, tis_cap: float | None) -> None:
        """One micro-batch's loss and statistics, and the trainer's own per-token ones."""
        for key, value in {"loss": loss.value.item(), **loss.means}.items():
            self.weighted[key] = self.weighted.get(key, 0.0) + value * loss.units
        for key, value in loss.counts.items():
            self.counts[key] = self.counts.get(key, 0.0) + value
        self.units += loss.units
        sums = {"logprob_mismatch": float(((batch.old_logp - batch.behaviour_logp).abs() * batch.mask).sum())}
        if batch.is_weight is not None:
            capped = (batch.is_weight >= tis_cap * (1 - 1e-6)) & (batch.mask > 0)
            sums.update(tis_weight=float(batch.is_weight.sum()), tis_capped=float(capped.sum()))
        for key, value in sums.items():
            self.token_sums[key] = self.token_sums.get(key, 0.0) + value
        self.tokens += float(batch.mask.sum())

    def row(self) -> dict[str, float]:
        """The step's log row: means (NaN for a step without a unit), counts, units, per-token means."""
        means = {k: v / self.units if self.units else math.nan for k, v in self.weighted.items()}
        per_token = {k: v / max(self.tokens, 1.0) for k, v in self.token_sums.items()}
        return {**means, **self.counts, "units": self.units, **per_token, "grad_norm": self.grad_norm}


def across_ranks(model: torch.nn.Module, data: Rollouts, step: Step, rt: Runtime, stats: StepStats) -> StepStats:
    """With N processes: the zero-weight passes this rank owes the busier ranks (FSDP2 gathers and reduces in
    every forward and backward, so every rank runs as many), then the statistics summed over ranks. On one
    process: ``stats`` as they are."""
    if distributed.world() == 1:
        return stats
    for _ in range(step.passes - len(step.bins)):
        (logp,) = _forward(model, data, _shortest(data), rt)
        (logp.sum() * 0.0).backward()
    parts = {"weighted": stats.weighted, "counts": stats.counts, "token_sums": stats.token_sums,
             "scalars": {"units": stats.units, "tokens": stats.tokens}}
    summed = {name: distributed.all_reduce_sum(part) for name, part in parts.items()}
    return StepStats(summed["scalars"]["units"], summed["weighted"], summed["counts"], summed["token_sums"],
                     summed["scalars"]["tokens"])


def normalise(model: torch.nn.Module, units: float) -> None:
    """Divide the summed gradient by the step's units (FSDP2 has averaged it over ranks: times their number)."""
    if units > 0:
        for p in model.parameters():
            if p.grad is not None:
                p.grad.div_(units / distributed.world())


def optimizer_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, data: Rollouts, step: Step, rt: Runtime,
    objective: Objective, ctx: Context, options: dict, max_grad_norm: float, tis_cap: float | None,
) -> StepStats:
    """One optimiser step over ``step``'s micro-batches; returns its statistics (see the module docstring)."""
    optimizer.zero_grad(set_to_none=True)
    stats = StepStats()
    for b in range(len(step.bins)):
        batch = micro_batch(model, data, step, b, rt, tis_cap)
        loss = objective(batch, ctx, **options)
        if not torch.isfinite(loss.value):
            raise CrlError(f"the {objective.__name__} loss is not finite ({loss.value.item()}): check the learning rate and the objective's options")
        (loss.value * loss.units).backward()  # units 0: a zero gradient, still a backward pass for the collectives
        stats.add(loss, batch, tis_cap)
    stats = across_ranks(model, data, step, rt, stats)
    normalise(model, stats.units)
    grad_norm = distributed.full(torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm))
    if not torch.isfinite(grad_norm):
        raise CrlError(f"the gradient is not finite (norm {float(grad_norm)}): check the learning rate and the objective's options")
    if stats.units > 0:
        optimizer.step()
    stats.grad_norm = float(grad_norm)
    return stats
