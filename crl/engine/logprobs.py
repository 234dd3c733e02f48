"""Log-probs of the taken tokens, computed on packed sequences in vocabulary-sized chunks.

Sequences (prompt + completion) are packed end to end into one row per micro-batch, with position ids
that restart at each sequence; transformers turns restarting positions into a block-diagonal attention
mask, so no token sees another sequence and no compute is spent on padding. With sdpa (and eager) that mask
is dense, so attention still computes the blocks between sequences; with flex_attention it is a block-sparse
BlockMask that skips them (``crl train --attn``). Only the hidden states that
predict completion tokens go through the output layer, a chunk of rows at a time under activation
checkpointing, so full-vocabulary float32 logits never exist for more than ``chunk`` rows at once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class TokenSeq:
    prompt_ids: Sequence[int]
    completion_ids: Sequence[int]

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


def pack(sizes: Sequence[int], budget: int) -> list[list[int]]:
    """Split items (in order) into consecutive bins of at most ``budget`` total size; an oversize item
    gets a bin of its own. Callers pass whole groups as items when an objective needs whole groups."""
    bins: list[list[int]] = []
    total = budget + 1
    for i, size in enumerate(sizes):
        if total + size > budget:
            bins.append([])
            total = 0
        bins[-1].append(i)
        total += size
    return bins


def _taken_logprobs(hidden: Tensor, weight: Tensor, targets: Tensor, temperature: float) -> Tensor:
    logits = hidden @ weight.T
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature  # bf16 up, float64 kept
    return logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)


def completion_logprobs(
    model: torch.nn.Module,
    seqs: Sequence[TokenSeq],
    temperature: float = 1.0,
    chunk: int = 2048,
) -> list[Tensor]:
    """Log-prob of each completion token of each sequence under ``model`` (grad follows torch's mode)."""
    device = next(model.parameters()).device
    ids, positions, gather_at = [], [], []
    offset = 0
    for s in seqs:
        n_prompt, n = len(s.prompt_ids), len(s)
        ids.extend(s.prompt_ids)
        ids.extend(s.completion_ids)
        positions.extend(range(n))
        gather_at.extend(range(offset + n_prompt - 1, offset + n - 1))
        offset += n
    input_ids = torch.tensor([ids], device=device)
    position_ids = torch.tensor([positions], device=device)
    # A model sharded by FSDP2 carries this pass as a method, so the shards are gathered around all of it.
    run = getattr(model, "packed_logprobs", None) or functools.partial(packed_logprobs, model)
    flat = run(input_ids, position_ids, torch.tensor(gather_at, device=device), temperature, chunk)
    return list(flat.split([len(s.completion_ids) for s in seqs]))


def packed_logprobs(
    model: torch.nn.Module, input_ids: Tensor, position_ids: Tensor, gather_at: Tensor, temperature: float, chunk: int
) -> Tensor:
    """The decoder over one packed row, then the output layer ``chunk`` rows at a time at ``gather_at``:
    the log-prob of the token that follows each of those positions, as one flat float32 tensor.

    The attention mask is left to transformers: with no 2-d mask and restarting ``position_ids`` it builds a
    document mask (block-diagonal causal), dense for sdpa/eager, a block-sparse BlockMask for flex_attention.
    """
    hidden = model.base_model(input_ids=input_ids, position_ids=position_ids, use_cache=False)
    hidden = hidden.last_hidden_state[0, gather_at]
    targets = input_ids[0, gather_at + 1]
    weight = model.get_output_embeddings().weight
    parts = []
    for lo in range(0, len(gather_at), chunk):
        h, t = hidden[lo : lo + chunk], targets[lo : lo + chunk]
        if torch.is_grad_enabled():
            parts.append(checkpoint(_taken_logprobs, h, weight, t, temperature, use_reentrant=False))
        else:
            parts.append(_taken_logprobs(h, weight, t, temperature))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def padded(rows: Sequence[Tensor], fill: float = 0.0) -> tuple[Tensor, Tensor]:
    """Ragged 1-d tensors as a [B, T] tensor and its float mask."""
    values = pad_sequence(list(rows), batch_first=True, padding_value=fill)
    lengths = torch.tensor([len(r) for r in rows], device=values.device)
    mask = (torch.arange(values.shape[1], device=values.device)[None, :] < lengths[:, None]).float()
    return values, mask


@torch.no_grad()
def batched_logprobs(
    model: torch.nn.Module, seqs: Sequence[TokenSeq], temperature: float = 1.0, budget: int = 8192
) -> Iterator[Tensor]:
    """Completion log-probs of many sequences without gradient, a token budget per forward pass."""
    for bin_ in pack([len(s) for s in seqs], budget):
        yield from completion_logprobs(model, [seqs[i] for i in bin_], temperature)
