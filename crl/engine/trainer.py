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

The same command runs on N processes (``torchrun --nproc-per-node N -m crl train ...``, docs/multinode.md):
the model is sharded with FSDP2 (crl/engine/distributed.py) and each optimiser step's groups are dealt
whole to the ranks, balanced by tokens. Every forward/backward is then collective, so a rank that runs
out of micro-batches before the others runs zero-weight passes (the shortest sequence, loss times 0)
until all have run as many. The units and the stats are summed over ranks, so the update and the log
are those of one process seeing all the groups. optimizer.pt holds the full (unsharded) AdamW state
keyed by parameter name, which a run with any number of processes can load.

Throughput options (bench/README.md has the figures): ``precision`` (fp32, bf16-mixed: fp32 master
weights under bf16 autocast, bf16: bf16 weights and AdamW state), ``attn`` (transformers' attention
kernel; flex_attention turns packed rows into a block-sparse document mask), ``compile`` (torch.compile
of each decoder layer), and gradient checkpointing and the micro-batch token budget, which default by
model size (``memory_defaults``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch
from torch import Tensor
from torch.distributed.fsdp import MixedPrecisionPolicy
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from crl.errors import CrlError
from crl.objectives import CONTEXT, Batch, get_objective, options
from crl.engine import distributed
from crl.engine.checkpoint import (
    default_device,
    load_model,
    load_optimizer_state,
    load_tokenizer,
    load_trainer_state,
    save_checkpoint,
    tokenizer_fingerprint,
)
from crl.engine.logprobs import TokenSeq, completion_logprobs, pack, packed_logprobs, padded
from crl.data.schemas import read_verified
from crl.progress import progress_bar

SUMMED_STATS = ("units", "groups_dropped", "groups_flat")


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
    token_budget: int | None = None  # None: by model size (memory_defaults)
    progress: float = 0.0
    old_logprobs: str = "recompute"
    ref: str | None = None
    device: str | None = None
    gradient_checkpointing: bool | None = None  # None: by model size (memory_defaults)
    seed: int = 0
    show_progress: bool = True
    precision: str | None = None  # fp32 | bf16-mixed | bf16; None: bf16-mixed on GPU, fp32 on CPU
    attn: str | None = None  # sdpa | flex_attention | eager; None: the model's default (sdpa)
    compile: bool = False


PRECISIONS = ("fp32", "bf16-mixed", "bf16")
ATTENTION = ("sdpa", "flex_attention", "eager")


def memory_defaults(n_params: int, device: str) -> tuple[int, bool]:
    """The micro-batch token budget and whether to recompute activations, by model size.

    From the H100 80 GB measurements in MEASUREMENTS.md (Qwen2.5-1.5B shape, bf16): a packed 16k-token
    row needs 29 GiB with gradient checkpointing and runs out of memory without it, and chunked log-probs
    keep the output layer small, so a 1.5B model gets 16k tokens with checkpointing. Below 1B the saved
    activations of a 16k row (about 1 MB a token for the 0.5B shape, an estimate) fit beside the weights
    and AdamW state, and recomputing them would only cost time (about a third more compute). Above 4B the
    budget halves (an extrapolation, not measured). On a CPU memory is rarely the limit, but sdpa's dense
    block-diagonal mask makes attention cost grow with the square of the packed row: 2k tokens, no recompute.
    """
    if not device.startswith("cuda"):
        return 2048, False
    if n_params < 1e9:
        return 16384, False
    return (16384, True) if n_params < 4e9 else (8192, True)


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
    recomputed = all_logprobs(model, seqs, temperature, cfg)
    diffs = [(a - b).abs().sum() for a, b in zip(recomputed, rollout_logp) if len(a) == len(b)]
    n_tokens = sum(len(s.completion_ids) for s in seqs)
    stats["logprob_mismatch"] = float(sum(diffs) / max(n_tokens, 1)) if diffs else math.nan
    old = recomputed if cfg.old_logprobs == "recompute" else rollout_logp
    ref = None
    if cfg.ref:
        ref_model = load_policy(cfg.ref, cfg)
        distributed.shard_model(ref_model, {"packed_logprobs": packed_logprobs}, mixed_precision(cfg))
        ref = all_logprobs(ref_model, seqs, temperature, cfg)
        del ref_model
    sampling = meta.get("sampling") or {}
    max_new = int(sampling.get("max_new_tokens") or max(len(s.completion_ids) for s in seqs))
    reward = torch.tensor(rows["reward"].to_list(), dtype=torch.float32, device=device)
    return Rollouts(seqs, reward, list(index.values()), old, ref, temperature, max_new), stats


@torch.no_grad()
def all_logprobs(model: torch.nn.Module, seqs: list[TokenSeq], temperature: float, cfg: TrainConfig) -> list[Tensor]:
    """Completion log-probs (float32, no gradient) of every sequence. With N processes each rank computes a
    share of whole micro-batches, balanced by tokens, and the shares are exchanged."""
    model.eval()
    sizes = [len(s) for s in seqs]
    share = distributed.deal_groups(range(len(seqs)), sizes, distributed.world())[distributed.rank()]
    bins = [[share[k] for k in b] for b in pack([sizes[i] for i in share], cfg.token_budget)]
    mine: dict[int, Tensor] = {}
    for b in range(distributed.all_reduce_max(len(bins))):
        rows = bins[b] if b < len(bins) else [min(range(len(seqs)), key=sizes.__getitem__)]  # a pad pass
        with autocast(cfg):
            logp = completion_logprobs(model, [seqs[i] for i in rows], temperature)
        if b < len(bins):
            mine.update((i, lp.float() if distributed.world() == 1 else lp.float().cpu()) for i, lp in zip(rows, logp))
    merged = {i: lp for part in distributed.all_gather(mine) for i, lp in part.items()}
    return [merged[i].to(cfg.device) for i in range(len(seqs))]


def mixed_precision(cfg: TrainConfig) -> MixedPrecisionPolicy | None:
    """With N processes and bf16-mixed, FSDP2 gathers the weights in bf16 and reduces gradients in fp32."""
    if cfg.precision != "bf16-mixed":
        return None
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def autocast(cfg: TrainConfig) -> contextlib.AbstractContextManager:
    """bf16 compute over fp32 master weights with bf16-mixed; nothing to do for fp32 and bf16."""
    if cfg.precision == "bf16-mixed":
        return torch.autocast(cfg.device.split(":")[0], dtype=torch.bfloat16)
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
) -> dict[str, float]:
    """One optimiser step over some groups: accumulate over micro-batches, normalise, clip, step.

    With N processes this rank takes its deal of the groups; all ranks run as many micro-batches (the
    last ones zero-weight passes where a rank has run out) and the gradient is divided by the units of
    all ranks together."""
    objective = get_objective(cfg.objective)
    optimizer.zero_grad(set_to_none=True)
    sizes = [sum(len(data.seqs[i]) for i in g) for g in groups]
    mine = distributed.deal_groups(range(len(groups)), sizes, distributed.world())[distributed.rank()]
    bins = [[mine[k] for k in b] for b in pack([sizes[k] for k in mine], cfg.token_budget)]
    totals: dict[str, float] = {}
    for b in range(distributed.all_reduce_max(len(bins))):
        if b >= len(bins):
            zero_weight_pass(model, data, cfg)
            continue
        with autocast(cfg):
            batch = micro_batch(model, data, [groups[k] for k in bins[b]])
        loss, stats = objective(batch, **objective_kwargs)
        units = stats.get("units", 1.0)
        (loss * units).backward()  # units 0: a zero gradient, still a backward pass for the collectives
        for key, value in {"loss": loss.item(), **stats}.items():
            weight = 1.0 if key in SUMMED_STATS else units
            totals[key] = totals.get(key, 0.0) + value * weight
    totals = distributed.all_reduce_sum(totals)
    units = totals.get("units", 0.0)
    if units > 0:
        for p in model.parameters():
            if p.grad is not None:
                p.grad.div_(units / distributed.world())  # FSDP2 has averaged over ranks: make it sum / units
    grad_norm = distributed.full(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
    if units > 0 and torch.isfinite(grad_norm):
        optimizer.step()
    out = {k: (v if k in SUMMED_STATS else v / units if units else math.nan) for k, v in totals.items()}
    out.update(grad_norm=float(grad_norm), groups=len(groups), tokens=sum(sizes))
    return out


def zero_weight_pass(model: torch.nn.Module, data: Rollouts, cfg: TrainConfig) -> None:
    """A forward and backward that change nothing (the shortest sequence, loss times 0): what a rank runs
    while the others still have micro-batches, since FSDP2's gathers and reductions need every rank."""
    shortest = min(data.seqs, key=len)
    with autocast(cfg):
        (logp,) = completion_logprobs(model, [shortest], data.temperature)
    (logp.sum() * 0.0).backward()


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer in backward (non-reentrant: the kind FSDP2 and torch.compile work with)."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def load_policy(name: str, cfg: TrainConfig) -> torch.nn.Module:
    """A model in the run's precision and attention kernel (not yet sharded)."""
    model = load_model(name, cfg.device, torch.bfloat16 if cfg.precision == "bf16" else torch.float32)
    if cfg.attn:
        model.set_attn_implementation(cfg.attn)
    return model


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW, continuing the state saved beside the model when there is one (the previous round's).

    The saved state is the full one keyed by parameter name, loaded into this run's shards (a state
    saved by older crl, keyed by position, is renamed first)."""
    fused = cfg.device.startswith("cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    state = load_optimizer_state(cfg.model)
    if state is not None:
        if any(isinstance(k, int) for k in state.get("state", {})):
            names = [n for n, _ in model.named_parameters()]
            state = {
                "state": {names[k]: v for k, v in state["state"].items()},
                "param_groups": [{**g, "params": [names[k] for k in g["params"]]} for g in state["param_groups"]],
            }
        try:
            set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
        except (ValueError, KeyError, IndexError, RuntimeError, AssertionError):
            raise CrlError(f"--model {cfg.model}: optimizer.pt does not match the model's parameters") from None
        for group in optimizer.param_groups:
            group["lr"], group["weight_decay"] = cfg.lr, cfg.weight_decay
    return optimizer


def save_round(
    out: Path, model: torch.nn.Module, tokenizer: object, optimizer: torch.optim.Optimizer, state: dict, log: pl.DataFrame
) -> None:
    """The checkpoint folder, whole or not at all: every rank takes part in gathering the full weights and
    optimizer state (on CPU), the first one writes them."""
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=full)
    names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    weights = {k: v for k, v in weights.items() if k in names}  # tied weights once, as transformers saves them
    optimizer_state = get_optimizer_state_dict(model, optimizer, options=full)
    if distributed.is_main():
        save_checkpoint(out, model, weights, tokenizer, optimizer_state, state, log)
    distributed.barrier()


def context_kwargs(objective: str, cfg: TrainConfig, data: Rollouts) -> dict[str, object]:
    """The run-time facts an objective asks for by name (training progress, the generation limit)."""
    wanted = inspect.signature(get_objective(objective)).parameters
    context = {"progress": cfg.progress, "max_new_tokens": data.max_new_tokens}
    return {k: v for k, v in context.items() if k in wanted and k in CONTEXT}


def train(verified: Path, out: Path, cfg: TrainConfig) -> pl.DataFrame:
    """Run one round of training and write the checkpoint folder; returns the per-step log."""
    if cfg.old_logprobs not in ("recompute", "rollout"):
        raise CrlError(f"--old-logprobs {cfg.old_logprobs}: choose recompute or rollout")
    if cfg.precision not in (None, *PRECISIONS):
        raise CrlError(f"--precision {cfg.precision}: choose one of {', '.join(PRECISIONS)}")
    if cfg.attn not in (None, *ATTENTION):
        raise CrlError(f"--attn {cfg.attn}: choose one of {', '.join(ATTENTION)}")
    objective_kwargs = check_options(cfg.objective, cfg.options)
    with distributed.session(cfg.device):
        return train_round(verified, out, cfg, objective_kwargs)


def train_round(verified: Path, out: Path, cfg: TrainConfig, objective_kwargs: dict) -> pl.DataFrame:
    device = distributed.local_device(cfg.device or default_device())
    precision = cfg.precision or ("bf16-mixed" if device.startswith("cuda") else "fp32")
    cfg = dataclasses.replace(cfg, device=device, precision=precision)
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg.model)
    model = load_policy(cfg.model, cfg)
    budget, recompute = memory_defaults(sum(p.numel() for p in model.parameters()), device)
    cfg = dataclasses.replace(
        cfg,
        token_budget=cfg.token_budget or budget,
        gradient_checkpointing=recompute if cfg.gradient_checkpointing is None else cfg.gradient_checkpointing,
    )
    rows, meta = load_rollouts(verified, tokenizer, model.get_input_embeddings().num_embeddings)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    if cfg.compile:
        for layer in model.base_model.layers:
            layer.compile()
    distributed.shard_model(model, {"packed_logprobs": packed_logprobs}, mixed_precision(cfg))
    optimizer = make_optimizer(model, cfg)
    data, prep_stats = prepare(rows, meta, model, cfg, device)
    objective_kwargs.update(context_kwargs(cfg.objective, cfg, data))
    model.train()
    previous = load_trainer_state(cfg.model)
    step0 = int(previous.get("step", 0))
    log: list[dict[str, float]] = []
    generator = torch.Generator().manual_seed(cfg.seed)
    n_steps = cfg.epochs * cfg.minibatches
    start = time.perf_counter()
    with progress_bar(f"train {cfg.objective}", n_steps, cfg.show_progress and distributed.is_main()) as advance:
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(data.groups), generator=generator).tolist()
            for chunk in torch.tensor(order).chunk(cfg.minibatches):
                groups = [data.groups[k] for k in chunk.tolist()]
                row = optimizer_step(model, optimizer, data, groups, cfg, objective_kwargs)
                row.update(step=step0 + len(log) + 1, epoch=epoch, lr=cfg.lr, seconds=time.perf_counter() - start)
                log.append({**prep_stats, **row})
                advance(1)
    train_log = pl.from_dicts(log, infer_schema_length=None)
    state = {"step": step0 + len(log), "objective": cfg.objective, "base": previous.get("base", cfg.model)}
    save_round(out, model, tokenizer, optimizer, state, train_log)
    return train_log
