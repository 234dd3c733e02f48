"""Log-probs of the taken tokens, a micro-batch of whole sequences at a time, in vocabulary-sized chunks.

Two layouts, chosen by the attention kernel (``packed``):

- padded (sdpa, eager): the sequences are right-padded into a [B, T] batch with no attention mask. Causal
  attention never looks to the right, so no real token sees the padding, and sdpa runs its plain causal kernel.
  A micro-batch's cost is rows x longest sequence.
- packed (flex_attention): the sequences are laid end to end in one row with position ids that restart at each
  sequence; transformers turns restarting positions into a block-diagonal document mask, which flex_attention
  stores block-sparse, so attention skips the blocks between sequences. Its cost is the sum of the lengths.
  (Through sdpa that mask would be dense, quadratic in the whole row: the reason sdpa gets the padded layout.)

Only the hidden states that predict completion tokens go through the output layer, a chunk of rows at a time
under activation checkpointing, so full-vocabulary float32 logits never exist for more than ``chunk`` rows.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

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


def cost(lengths: Sequence[int], packed: bool) -> int:
    """Tokens a micro-batch of sequences of these lengths computes on: their sum packed, rows x longest padded."""
    return sum(lengths) if packed else len(lengths) * max(lengths, default=0)


def pack(items: Sequence[Sequence[int]], budget: int, packed: bool = True) -> list[list[int]]:
    """Split items (in order), each a list of sequence lengths (a group), into consecutive bins whose ``cost`` is
    at most ``budget``; an oversize item gets a bin of its own. Callers pass whole groups as items when an
    objective needs whole groups."""
    bins: list[list[int]] = []
    lengths: list[int] = []
    for i, item in enumerate(items):
        if not bins or cost([*lengths, *item], packed) > budget:
            bins.append([])
            lengths = []
        bins[-1].append(i)
        lengths.extend(item)
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
    packed: bool = False,
) -> list[Tensor]:
    """Log-prob of each completion token of each sequence under ``model`` (grad follows torch's mode)."""
    device = next(model.parameters()).device
    gather_at: list[int] = []
    if packed:
        ids: list[int] = []
        positions: list[int] = []
        for s in seqs:
            gather_at.extend(range(len(ids) + len(s.prompt_ids) - 1, len(ids) + len(s) - 1))
            ids.extend([*s.prompt_ids, *s.completion_ids])
            positions.extend(range(len(s)))
        input_ids = torch.tensor([ids], device=device)
        position_ids = torch.tensor([positions], device=device)
    else:
        width = max(len(s) for s in seqs)
        rows = [[*s.prompt_ids, *s.completion_ids] for s in seqs]
        input_ids = torch.tensor([r + [0] * (width - len(r)) for r in rows], device=device)
        position_ids = None
        for b, s in enumerate(seqs):
            gather_at.extend(range(b * width + len(s.prompt_ids) - 1, b * width + len(s) - 1))
    # A model sharded by FSDP2 carries this pass as a method, so the shards are gathered around all of it.
    run = getattr(model, "packed_logprobs", None) or functools.partial(packed_logprobs, model)
    flat = run(input_ids, position_ids, torch.tensor(gather_at, device=device), temperature, chunk)
    return list(flat.split([len(s.completion_ids) for s in seqs]))


def packed_logprobs(
    model: torch.nn.Module, input_ids: Tensor, position_ids: Tensor | None, gather_at: Tensor, temperature: float, chunk: int
) -> Tensor:
    """The decoder over a [B, T] batch, then the output layer ``chunk`` rows at a time at ``gather_at`` (indices
    into the flattened batch): the log-prob of the token that follows each of those positions, as one flat
    float32 tensor.

    The attention mask is left to transformers: with restarting ``position_ids`` it builds a document mask
    (block-diagonal causal), with none the plain causal mask.
    """
    hidden = model.get_decoder()(input_ids=input_ids, position_ids=position_ids, use_cache=False)
    hidden = hidden.last_hidden_state.flatten(0, 1)[gather_at]
    targets = input_ids.flatten()[gather_at + 1]
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
