"""The trainer: a policy, its AdamW state and its reference model, kept in memory across rounds.

``crl iterate`` builds one ``Trainer`` and calls ``train_round`` every round, saving (``save``) only every
``save_every`` rounds; ``crl train`` builds one from a checkpoint folder, trains one round and saves. A
checkpoint folder holds the model (or, with LoRA, the adapters) and tokenizer, which transformers and vLLM
load, ``optimizer.pt`` (the full AdamW state keyed by parameter name, which a run with any number of
processes can load), ``trainer_state.json`` (steps and rounds done, the run's starting model) and, from
``crl train``, ``train_log.parquet``.

The same code runs on N processes under torchrun (FSDP2, crl/engine/distributed.py): each optimiser step's
groups are dealt whole to the ranks, balanced by tokens, the units and statistics are summed over ranks, and
the update and the log are those of one process seeing all the groups.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Callable

import polars as pl
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from crl.config import RunConfig
from crl.data.models import resolve_model
from crl.data.schemas import RolloutMeta, tokenizer_fingerprint
from crl.engine import distributed
from crl.engine.checkpoint import OPTIMIZER_FILE, STATE_FILE, TRAIN_LOG, load_optimizer_state, load_tokenizer, trainer_state
from crl.engine.lora import is_lora, merged_state_dict, without_adapters
from crl.engine.policy import load_frozen, load_policy
from crl.engine.steps import (
    Reference,
    before_update,
    logprobs_of,
    optimizer_step,
    plan,
    rollouts_from,
    share_old,
)
from crl.errors import CrlError
from crl.io import atomic_path
from crl.objectives import StepInfo, check_options, get_objective, needs_reference, spec


class Trainer:
    """One policy under training; see the module docstring."""

    def __init__(self, model: str, run: RunConfig, reference: str | None = None) -> None:
        """``model``: a model folder (a previous round's checkpoint continues its AdamW state and counters);
        ``reference``: the frozen reference model when the objective needs one (default: the run's start)."""
        train = run.train
        self.run, self.objective, self.spec = run, get_objective(train.objective), spec(train.objective)
        self.options = check_options(train.objective, train.options)
        if train.tis_cap is not None and not self.spec.tis:
            raise CrlError(f"train.tis_cap: {train.objective} has no importance ratio to correct (clipped objectives: grpo, dapo, dr-grpo)")
        if run.lora.rank and distributed.world() > 1:
            raise CrlError("LoRA runs on one process (FSDP2 sharding of adapters is not supported)")
        state = trainer_state(model)
        self.steps_done, self.rounds_done = int(state.get("step", 0)), int(state.get("round", 0))
        self.base = str(state.get("base", model))
        self.tokenizer = load_tokenizer(model)
        self.fingerprint = tokenizer_fingerprint(self.tokenizer)
        self.model, self.rt = load_policy(model, train, run.lora)
        self.optimizer = make_optimizer(self.model, run, model)
        self.reference = self._reference(reference or train.ref or self.base) if needs_reference(train.objective, self.options) else None

    def _reference(self, path: str) -> Reference:
        if is_lora(self.model) and path == self.base:
            return lambda: _entered(without_adapters(self.model), self.model)  # the base model, for free
        frozen = load_frozen(resolve_model(path, "--ref"), self.rt, self.run.train.attn)
        return lambda: contextlib.nullcontext(frozen)

    def check(self, rows: pl.DataFrame, meta: RolloutMeta, where: str) -> None:
        """Refuse rollouts this model cannot train on: another tokenizer's ids, ids past the embedding table."""
        if meta.tokenizer != self.fingerprint:
            raise CrlError(f"{where}: the rollouts were made with another tokenizer (vocabulary {meta.tokenizer}, the model's is {self.fingerprint}); generate them with this model")
        vocab = self.model.get_input_embeddings().num_embeddings
        too_big = rows.filter((pl.col("prompt_ids").list.max() >= vocab) | (pl.col("completion_ids").list.max() >= vocab))
        if too_big.height:
            raise CrlError(f"{where}: prompt {too_big['prompt_id'][0]} has token ids beyond the vocabulary ({vocab})")

    def train_round(self, rows: pl.DataFrame, meta: RolloutMeta, on_step: Callable[[dict], None] | None = None) -> pl.DataFrame:
        """One round of updates on verified rows (with the ``positive`` column); returns its per-step log."""
        train = self.run.train
        rows, flat = self._without_flat_groups(rows)
        if rows.is_empty():  # nothing this objective can learn from: no update, one row saying so
            self.rounds_done += 1
            return pl.DataFrame([{"step": self.steps_done, "round": self.rounds_done, "groups": 0, "groups_dropped": float(flat), "units": 0.0}])
        data = rollouts_from(rows, meta, self.rt.device)
        generator = torch.Generator().manual_seed(self.run.seed * 1_000_003 + self.rounds_done + 1)
        steps = plan(data, train, self.rt, generator)
        self.model.train()
        before_update(self.model, data, steps, train, self.rt, self.reference)
        context = {"progress": min(self.rounds_done / self.run.rounds, 1.0), "max_new_tokens": data.max_new_tokens}
        kwargs = {**self.options, **{k: v for k, v in context.items() if k in self.spec.context}}
        log, start = [], time.perf_counter()
        for k, step in enumerate(steps):
            if "step" in self.spec.context:
                kwargs["step"] = self._step_info(data, step, first=k == 0 and train.old_logprobs == "recompute")
            row = optimizer_step(self.model, self.optimizer, data, step, self.rt, self.objective, kwargs,
                                 train.max_grad_norm, train.tis_cap)
            if k == 0 and len(steps) > 1 and distributed.world() > 1:
                share_old(data, self.rt.device)
            self.steps_done += 1
            row.update(step=self.steps_done, round=self.rounds_done + 1, lr=train.lr, seconds=time.perf_counter() - start)
            if k == 0 and flat:
                row["groups_dropped"] = row.get("groups_dropped", 0.0) + flat  # left out before planning
            log.append(row)
            if on_step is not None:
                on_step(row)
        self.rounds_done += 1
        return pl.from_dicts(log, infer_schema_length=None)

    def _without_flat_groups(self, rows: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        """The rows without the groups whose rollouts are all right or all wrong, when the objective gets nothing
        from them (``drops_flat``): the same update for less compute. Also the number of groups left out."""
        if not self.spec.drops_flat:
            return rows, 0
        mixed = rows.group_by("prompt_id").agg(mixed=pl.col("positive").any() & ~pl.col("positive").all())
        keep = mixed.filter("mixed")["prompt_id"]
        return rows.filter(pl.col("prompt_id").is_in(keep.to_list())), mixed.height - keep.len()

    @torch.no_grad()
    def _step_info(self, data, step, first: bool) -> StepInfo:
        """The KL to the behaviour policy over a whole step, before its update (0 for the first step of a round
        whose old log-probs are its own forward pass)."""
        tokens = float(sum(len(data.seqs[i].completion_ids) for g in step.groups for i in g))
        kl_sum = 0.0
        if not first:
            for i, lp in logprobs_of(self.model, data, step, self.rt).items():
                kl_sum += float((data.old[i] - lp).sum())
            kl_sum = distributed.all_reduce_sum({"kl": kl_sum})["kl"]
        return StepInfo(kl=kl_sum / max(tokens, 1.0), tokens=tokens, groups=float(len(step.groups)))

    def weights(self) -> dict[str, torch.Tensor]:
        """The full weights as the base architecture names them (LoRA adapters folded in), for a sampler."""
        if is_lora(self.model):
            return merged_state_dict(self.model)
        full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=distributed.world() > 1))
        names = {n for n, _ in self.model.named_parameters()} | {n for n, _ in self.model.named_buffers()}
        return {k: v for k, v in full.items() if k in names}  # tied weights once, as transformers saves them

    def save(self, out: Path, log: pl.DataFrame | None = None) -> None:
        """A checkpoint folder, whole or not at all: every rank takes part in gathering the full weights and
        optimizer state (on CPU), the first one writes them. Weights that are not finite are never written."""
        weights = None if is_lora(self.model) else self.weights()
        if weights is not None and not all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()):
            raise CrlError("the weights are not finite after training; nothing was saved (lower the learning rate)")
        optimizer_state = get_optimizer_state_dict(self.model, self.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        state = {"step": self.steps_done, "round": self.rounds_done, "objective": self.run.train.objective, "base": self.base}
        if distributed.is_main():
            with atomic_path(out, kind="checkpoint") as tmp:
                self.model.save_pretrained(tmp, state_dict=weights, safe_serialization=True)
                self.tokenizer.save_pretrained(tmp)
                torch.save(optimizer_state, tmp / OPTIMIZER_FILE)
                (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
                if log is not None:
                    log.write_parquet(tmp / TRAIN_LOG)
        distributed.barrier()


@contextlib.contextmanager
def _entered(context: contextlib.AbstractContextManager, value: torch.nn.Module):
    with context:
        yield value


def make_optimizer(model: torch.nn.Module, run: RunConfig, folder: str) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, continuing the state saved in ``folder`` when there is one (the
    previous round's; a checkpoint without it is refused unless ``train.fresh_optimizer``), loaded into this
    run's shards; the learning rate and weight decay are this run's."""
    train = run.train
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay, fused=str(next(model.parameters()).device).startswith("cuda"))
    state = load_optimizer_state(folder, train.fresh_optimizer)
    if state is not None:
        try:
            set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
        except (ValueError, KeyError, IndexError, RuntimeError, AssertionError):
            raise CrlError(f"--model {folder}: optimizer.pt does not match the model's parameters") from None
        for group in optimizer.param_groups:
            group["lr"], group["weight_decay"] = train.lr, train.weight_decay
    return optimizer
