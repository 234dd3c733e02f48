"""The trainer: a policy, its AdamW state and its reference model, kept in memory across rounds.

``crl iterate`` builds one ``Trainer`` and calls ``train_round`` every round, saving only every ``save_every``
rounds; ``crl train`` builds one from a checkpoint folder (crl/engine/checkpoint.py), trains one round and
saves. A round: its groups (one prompt's samples in one round) planned into optimiser steps, every row's old
and reference log-probs computed once, then the steps (crl/engine/step.py).

The same code runs on N processes under torchrun (FSDP2, crl/engine/distributed.py): each optimiser step's
groups are dealt whole to the ranks, balanced by tokens, the units and statistics are summed over ranks, and
the update and the log are those of one process seeing all the groups.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Callable

import polars as pl
import torch

from crl.config import RunConfig
from crl.config.settings import REPLAY_TIS_CAP
from crl.config.seeds import training_seed
from crl.data.models import resolve_model
from crl.data.rounds import GROUP_KEY, TrainLog, in_groups, mixed_groups
from crl.data.schemas import RolloutMeta, tokenizer_fingerprint
from crl.engine import distributed
from crl.engine.checkpoint import full_weights, load_tokenizer, make_optimizer, save_checkpoint, trainer_state
from crl.engine.lora import is_lora, without_adapters
from crl.engine.policy import load_frozen, load_policy
from crl.engine.step import Reference, optimizer_step, plan, rollouts_from, step_info, with_logprobs
from crl.errors import CrlError
from crl.objectives import Context, check_options, get_objective, needs_reference, spec

DROPPED = "groups_dropped"


class Trainer:
    """One policy under training; see the module docstring."""

    def __init__(self, model: str, run: RunConfig, reference: str | None = None) -> None:
        """``model``: a model folder (a previous round's checkpoint continues its AdamW state and counters);
        ``reference``: the frozen reference model when the objective needs one (default: the run's start)."""
        train = run.train
        self.run, self.objective, self.spec = run, get_objective(train.objective), spec(train.objective)
        self.options = check_options(train.objective, train.options)
        if train.tis_cap is not None and not self.spec.tis:
            raise CrlError(f"train.tis_cap: {train.objective} has no importance ratio to correct (clipped objectives: grpo, dapo, dr-grpo, rloo, pg)")
        # replayed rounds were sampled by older policies: a clipped objective's ratio to the trainer's old policy
        # is corrected by the truncated ratio of that policy to the sampler; a contrastive loss needs nothing
        replay_cap = REPLAY_TIS_CAP if train.replay > 1 and self.spec.tis else None
        self.tis_cap = train.tis_cap if train.tis_cap is not None else replay_cap
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

    def train_round(self, rows: pl.DataFrame, meta: RolloutMeta, on_step: Callable[[dict], None] | None = None,
                    left_out: int = 0) -> TrainLog:
        """One round of updates on verified rows (with the ``positive`` column); ``left_out`` groups of the
        round were left out before (by dynamic sampling) and count as dropped. Returns its per-step log."""
        train = self.run.train
        rows, flat = self._without_flat_groups(rows)
        dropped = left_out + flat
        if rows.is_empty():  # nothing this objective can learn from: no update, one row saying so
            self.rounds_done += 1
            row = {"step": self.steps_done, "round": self.rounds_done, "epoch": 0, "groups": 0, DROPPED: float(dropped), "units": 0.0}
            return TrainLog(pl.DataFrame([row]), frozenset({DROPPED}))
        data = rollouts_from(rows, meta, self.rt.device)
        steps = plan(data, train, self.rt, torch.Generator().manual_seed(training_seed(self.run.seed, self.rounds_done)))
        recompute = train.old_logprobs == "recompute"
        data = with_logprobs(self.model, data, steps, self.rt, self.reference, recompute)
        ctx = Context(fraction_done=min(self.rounds_done / self.run.rounds, 1.0), max_new_tokens=data.max_new_tokens)
        self.model.train()
        log, counts, start = [], set(), time.perf_counter()
        for k, step in enumerate(steps):
            if self.spec.needs_step:
                ctx = dataclasses.replace(ctx, step=step_info(self.model, data, step, self.rt, first=k == 0 and recompute))
            stats = optimizer_step(self.model, self.optimizer, data, step, self.rt, self.objective, ctx, self.options,
                                   train.max_grad_norm, self.tis_cap)
            if k == 0 and dropped:
                stats.counts[DROPPED] = stats.counts.get(DROPPED, 0.0) + dropped  # left out before planning
            self.steps_done += 1
            counts |= stats.counts.keys()
            row = {**stats.row(), "groups": len(step.groups), "tokens": sum(len(data.seqs[i]) for g in step.groups for i in g),
                   "step": self.steps_done, "round": self.rounds_done + 1, "epoch": step.epoch, "lr": train.lr,
                   "seconds": time.perf_counter() - start}
            log.append(row)
            if on_step is not None:
                on_step(row)
        self.rounds_done += 1
        return TrainLog(pl.from_dicts(log, infer_schema_length=None), frozenset(counts))

    def _without_flat_groups(self, rows: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        """The rows without the groups that are not mixed, when the objective gets nothing from them
        (``drops_flat``): the same update for less compute. Also the number of groups left out."""
        if not self.spec.drops_flat:
            return rows, 0
        keep = mixed_groups(rows)
        return rows.filter(in_groups(rows, keep)), rows.select(GROUP_KEY).n_unique() - keep.height

    def weights(self) -> dict[str, torch.Tensor]:
        """The full weights as the base architecture names them (LoRA adapters folded in), for a sampler."""
        return full_weights(self.model)

    def save(self, out: Path, log: pl.DataFrame | None = None) -> None:
        """A checkpoint folder with the weights, optimizer state and counters (crl/engine/checkpoint.py)."""
        state = {"step": self.steps_done, "round": self.rounds_done, "objective": self.run.train.objective, "base": self.base}
        save_checkpoint(out, self.model, self.optimizer, self.tokenizer, state, log)


@contextlib.contextmanager
def _entered(context: contextlib.AbstractContextManager, value: torch.nn.Module):
    with context:
        yield value
