"""Stage 3, train: a verified/ folder and a model in, a checkpoint (with optimizer state) out.

One round of updates with a chosen objective. The groups (all rollouts of one prompt) are shuffled and
split into ``minibatches`` optimiser steps per epoch; each step packs whole groups into micro-batches
under a token budget, so group-level objectives see every rollout of a group together. Each micro-batch
back-propagates ``loss * units`` and the step divides the summed gradient by the total units, which makes
the update independent of how the groups were split (see crl/objectives.py).

Before the first update the behaviour log-probs are recomputed with the loaded weights (or taken from the
rollouts with ``--old-logprobs rollout``) and, with ``--ref``, the reference log-probs computed once.
The checkpoint folder holds the model and tokenizer (loadable by transformers and vLLM), optimizer.pt so
the next round continues the same AdamW state, trainer_state.json and train_log.parquet (one row per step).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch
from torch import Tensor

from crl.errors import CrlError
from crl.io import write_parquet
from crl.objectives import CONTEXT, Batch, get_objective, options
from crl.pipeline.checkpoint import (
    default_device,
    load_model,
    load_optimizer_state,
    load_tokenizer,
    load_trainer_state,
    save_checkpoint,
    tokenizer_fingerprint,
)
from crl.pipeline.logprobs import TokenSeq, batched_logprobs, completion_logprobs, pack, padded
from crl.pipeline.schemas import read_verified
from crl.progress import progress_bar

SUMMED_STATS = ("units", "groups_dropped")


@dataclass(frozen=True)
class TrainConfig:
    model: str
    objective: str = "conspo"
    options: dict[str, float | str | bool] = field(default_factory=dict)
    lr: float = 2e-6
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    epochs: int = 1
    minibatches: int = 1
    token_budget: int = 16384
    progress: float = 0.0
    old_logprobs: str = "recompute"
    ref: str | None = None
    device: str | None = None
    gradient_checkpointing: bool = False
    seed: int = 0
    show_progress: bool = True


@dataclass
class Rollouts:
    """The training rows of one round as token sequences with their per-row tensors."""

    seqs: list[TokenSeq]
    reward: Tensor
    groups: list[list[int]]  # row indices of each prompt's group
    old_logp: list[Tensor]
    ref_logp: list[Tensor] | None
    temperature: float
    max_new_tokens: int


def check_options(objective: str, given: dict[str, object]) -> dict[str, object]:
    """Validate ``-o NAME=VALUE`` options against the objective's keyword options, casting to their type."""
    known = options(objective)
    out: dict[str, object] = {}
    for key, value in given.items():
        if key not in known:
            raise CrlError(f"-o {key}: {objective} has no such option; it takes {', '.join(known) or 'none'}")
        default = known[key]
        try:
            if isinstance(default, bool) and isinstance(value, str):
                out[key] = value.lower() in ("1", "true", "yes", "on")
            elif isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(value, str):
                out[key] = type(default)(float(value)) if isinstance(default, int) else float(value)
            else:
                out[key] = value
        except ValueError:
            raise CrlError(f"-o {key}={value}: expected a {type(default).__name__}") from None
    return out


def load_rollouts(verified: Path, tokenizer: object, vocab: int) -> tuple[pl.DataFrame, dict]:
    """The verified rows, refused when another tokenizer made them or their ids exceed the embedding table."""
    rows, _, meta = read_verified(verified)
    fingerprint = tokenizer_fingerprint(tokenizer)
    if meta.get("tokenizer") and meta["tokenizer"] != fingerprint:
        raise CrlError(
            f"{verified}: the rollouts were made with another tokenizer "
            f"(vocabulary {meta['tokenizer']}, the model's is {fingerprint}); generate them with this model"
        )
    too_big = rows.filter(
        (pl.col("prompt_ids").list.max() >= vocab) | (pl.col("completion_ids").list.max() >= vocab)
    )
    if too_big.height:
        raise CrlError(f"{verified}: prompt {too_big['prompt_id'][0]} has token ids beyond the vocabulary ({vocab})")
    return rows, meta


def prepare(
    rows: pl.DataFrame, meta: dict, model: torch.nn.Module, cfg: TrainConfig, device: str
) -> tuple[Rollouts, dict[str, float]]:
    """Token sequences, rewards, groups, behaviour and reference log-probs for one round."""
    seqs = [TokenSeq(p, c) for p, c in zip(rows["prompt_ids"].to_list(), rows["completion_ids"].to_list())]
    temperature = float(rows["temperature"][0]) or 1.0
    rollout_logp = [torch.tensor(lp, dtype=torch.float32, device=device) for lp in rows["logprobs"].to_list()]
    group_ids = rows["prompt_id"].to_list()
    index: dict[str, list[int]] = {}
    for i, pid in enumerate(group_ids):
        index.setdefault(pid, []).append(i)
    stats: dict[str, float] = {}
    model.eval()
    with torch.no_grad(), autocast(device):
        recomputed = [lp.float() for lp in batched_logprobs(model, seqs, temperature, cfg.token_budget)]
    diffs = [(a - b).abs().sum() for a, b in zip(recomputed, rollout_logp) if len(a) == len(b)]
    n_tokens = sum(len(s.completion_ids) for s in seqs)
    stats["logprob_mismatch"] = float(sum(diffs) / max(n_tokens, 1)) if diffs else math.nan
    old = recomputed if cfg.old_logprobs == "recompute" else rollout_logp
    ref = None
    if cfg.ref:
        ref_model = load_model(cfg.ref, device).eval()
        with torch.no_grad(), autocast(device):
            ref = [lp.float() for lp in batched_logprobs(ref_model, seqs, temperature, cfg.token_budget)]
        del ref_model
    sampling = meta.get("sampling") or {}
    max_new = int(sampling.get("max_new_tokens") or max(len(s.completion_ids) for s in seqs))
    reward = torch.tensor(rows["reward"].to_list(), dtype=torch.float32, device=device)
    return Rollouts(seqs, reward, list(index.values()), old, ref, temperature, max_new), stats


def autocast(device: str) -> contextlib.AbstractContextManager:
    """bf16 compute with fp32 master weights on GPU; plain fp32 on CPU."""
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def micro_batch(model: torch.nn.Module, data: Rollouts, group_list: list[list[int]]) -> Batch:
    """The padded tensors of some whole groups, with the policy log-probs computed (with gradient)."""
    rows = [i for g in group_list for i in g]
    logp = completion_logprobs(model, [data.seqs[i] for i in rows], data.temperature)
    logp_pad, mask = padded(logp)
    group = torch.tensor([k for k, g in enumerate(group_list) for _ in g], device=logp_pad.device)
    return Batch(
        logp=logp_pad,
        old_logp=padded([data.old_logp[i] for i in rows])[0],
        mask=mask,
        reward=data.reward[rows],
        group=group,
        ref_logp=padded([data.ref_logp[i] for i in rows])[0] if data.ref_logp is not None else None,
    )


def optimizer_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Rollouts,
    groups: list[list[int]],
    cfg: TrainConfig,
    objective_kwargs: dict,
    device: str,
) -> dict[str, float]:
    """One optimiser step over some groups: accumulate over micro-batches, normalise, clip, step."""
    objective = get_objective(cfg.objective)
    optimizer.zero_grad(set_to_none=True)
    sizes = [sum(len(data.seqs[i]) for i in g) for g in groups]
    totals: dict[str, float] = {}
    for bin_ in pack(sizes, cfg.token_budget):
        with autocast(device):
            batch = micro_batch(model, data, [groups[k] for k in bin_])
        loss, stats = objective(batch, **objective_kwargs)
        units = stats.get("units", 1.0)
        if units > 0:
            (loss * units).backward()
        for key, value in {"loss": loss.item(), **stats}.items():
            weight = 1.0 if key in SUMMED_STATS else units
            totals[key] = totals.get(key, 0.0) + value * weight
    units = totals.get("units", 0.0)
    if units > 0:
        for p in model.parameters():
            if p.grad is not None:
                p.grad.div_(units)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    if units > 0 and torch.isfinite(grad_norm):
        optimizer.step()
    out = {k: (v if k in SUMMED_STATS else v / units if units else math.nan) for k, v in totals.items()}
    out.update(grad_norm=float(grad_norm), groups=len(groups), tokens=sum(sizes))
    return out


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: str) -> torch.optim.AdamW:
    """AdamW, continuing the state saved beside the model when there is one (the previous round's)."""
    fused = device.startswith("cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    state = load_optimizer_state(cfg.model)
    if state is not None:
        try:
            optimizer.load_state_dict(state)
        except (ValueError, KeyError):
            raise CrlError(f"--model {cfg.model}: optimizer.pt does not match the model's parameters") from None
        for group in optimizer.param_groups:
            group["lr"], group["weight_decay"] = cfg.lr, cfg.weight_decay
    return optimizer


def context_kwargs(objective: str, cfg: TrainConfig, data: Rollouts) -> dict[str, object]:
    """The run-time facts an objective asks for by name (training progress, the generation limit)."""
    wanted = inspect.signature(get_objective(objective)).parameters
    context = {"progress": cfg.progress, "max_new_tokens": data.max_new_tokens}
    return {k: v for k, v in context.items() if k in wanted and k in CONTEXT}


def train(verified: Path, out: Path, cfg: TrainConfig) -> pl.DataFrame:
    """Run one round of training and write the checkpoint folder; returns the per-step log."""
    if cfg.old_logprobs not in ("recompute", "rollout"):
        raise CrlError(f"--old-logprobs {cfg.old_logprobs}: choose recompute or rollout")
    objective_kwargs = check_options(cfg.objective, cfg.options)
    device = cfg.device or default_device()
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(cfg.model, device)
    rows, meta = load_rollouts(verified, tokenizer, model.get_input_embeddings().num_embeddings)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    optimizer = make_optimizer(model, cfg, device)
    data, prep_stats = prepare(rows, meta, model, cfg, device)
    objective_kwargs.update(context_kwargs(cfg.objective, cfg, data))
    model.train()
    previous = load_trainer_state(cfg.model)
    step0 = int(previous.get("step", 0))
    log: list[dict[str, float]] = []
    generator = torch.Generator().manual_seed(cfg.seed)
    n_steps = cfg.epochs * cfg.minibatches
    start = time.perf_counter()
    with progress_bar(f"train {cfg.objective}", n_steps, cfg.show_progress) as advance:
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(data.groups), generator=generator).tolist()
            for chunk in torch.tensor(order).chunk(cfg.minibatches):
                groups = [data.groups[k] for k in chunk.tolist()]
                row = optimizer_step(model, optimizer, data, groups, cfg, objective_kwargs, device)
                row.update(step=step0 + len(log) + 1, epoch=epoch, lr=cfg.lr, seconds=time.perf_counter() - start)
                log.append({**prep_stats, **row})
                advance(1)
    train_log = pl.from_dicts(log, infer_schema_length=None)
    state = {"step": step0 + len(log), "objective": cfg.objective, "base": previous.get("base", cfg.model)}
    save_checkpoint(out, model, tokenizer, optimizer, state, train_log)
    return train_log
