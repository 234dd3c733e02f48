"""Log-probs of the taken tokens, a micro-batch of whole sequences at a time, in vocabulary-sized chunks.

Three layouts, chosen by the attention kernel and activation recomputation (crl/engine/policy.py):

- shared prompts (sdpa, eager; the default): each distinct prompt of the micro-batch runs once, right-padded
  into a [U, P] batch, and its keys and values are copied to the rows of its completions, which then run as a
  [B, C] batch attending to them (the sampler shares its prefill the same way). A group's K completions share
  one prompt, so the prompt is computed once instead of K times: the same log-probs and gradients, the
  prompt's gradient summed over its completions through the copies. Transformers' caches are switched off
  under activation recomputation (a replayed layer would write them twice), so recomputation takes the
  padded layout instead.
- padded (sdpa, eager, with activation recomputation): the sequences are right-padded into a [B, T] batch with
  no attention mask. Causal attention never looks to the right, so no real token sees the padding, and sdpa
  runs its plain causal kernel.
- packed (flex_attention): the sequences are laid end to end in one row with position ids that restart at each
  sequence; transformers turns restarting positions into a block-diagonal document mask, which flex_attention
  stores block-sparse, so attention skips the blocks between sequences. Its cost is the sum of the lengths.
  (Through sdpa that mask would be dense, quadratic in the whole row: the reason sdpa gets the padded layouts.)

A micro-batch is sized by ``cost``: rows x longest sequence padded (an upper bound for shared prompts, whose
completions still attend to a full prompt each), the sum of the lengths packed. Only the hidden states that
predict completion tokens go through the output layer, a chunk of rows at a time under activation
checkpointing, so full-vocabulary float32 logits never exist for more than ``chunk`` rows.
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
    share_prompts: bool = False,
) -> list[Tensor]:
    """Log-prob of each completion token of each sequence under ``model`` (grad follows torch's mode), in
    the packed layout, the shared-prompt one or the padded one (see the module docstring)."""
    device = next(model.parameters()).device
    if packed:
        inputs = _packed_inputs(seqs)
    elif share_prompts:
        inputs = _shared_prompt_inputs(seqs)
    else:
        inputs = _padded_inputs(seqs)
    input_ids, position_ids, gather_at, targets = (None if x is None else torch.tensor(x, dtype=torch.long, device=device) for x in inputs[:4])
    prompts = None if inputs[4] is None else tuple(torch.tensor(x, dtype=torch.long, device=device) for x in inputs[4])
    # A model sharded by FSDP2 carries this pass as a method, so the shards are gathered around all of it.
    run = getattr(model, "packed_logprobs", None) or functools.partial(packed_logprobs, model)
    flat = run(input_ids, position_ids, gather_at, targets, temperature, chunk, prompts)
    return list(flat.split([len(s.completion_ids) for s in seqs]))


Inputs = tuple  # input_ids, position_ids (or None), gather_at, targets, prompts (or None), as nested lists


def _packed_inputs(seqs: Sequence[TokenSeq]) -> Inputs:
    ids: list[int] = []
    positions: list[int] = []
    gather_at: list[int] = []
    for s in seqs:
        gather_at.extend(range(len(ids) + len(s.prompt_ids) - 1, len(ids) + len(s) - 1))
        ids.extend([*s.prompt_ids, *s.completion_ids])
        positions.extend(range(len(s)))
    return [ids], [positions], gather_at, [ids[i + 1] for i in gather_at], None


def _padded_inputs(seqs: Sequence[TokenSeq]) -> Inputs:
    width = max(len(s) for s in seqs)
    rows = [[*s.prompt_ids, *s.completion_ids] for s in seqs]
    gather_at = [b * width + j for b, s in enumerate(seqs) for j in range(len(s.prompt_ids) - 1, len(s) - 1)]
    targets = [t for s in seqs for t in s.completion_ids]
    return [r + [0] * (width - len(r)) for r in rows], None, gather_at, targets, None


def _shared_prompt_inputs(seqs: Sequence[TokenSeq]) -> Inputs:
    """The distinct prompts (right-padded), each row's prompt index, and the completions but their last
    token (which predicts nothing) at positions after their prompt. Hidden row b of ``packed_logprobs`` is
    then [prompt's last hidden state, completion hidden states], so completion token j is predicted at j."""
    distinct: dict[tuple[int, ...], int] = {}
    index = [distinct.setdefault(tuple(s.prompt_ids), len(distinct)) for s in seqs]
    prompts = list(distinct)
    prompt_width = max(len(p) for p in prompts)
    width = max(len(s.completion_ids) for s in seqs)  # hidden columns: the prompt's last, then width - 1
    following = [list(s.completion_ids[:-1]) + [0] * (width - 1 - len(s.completion_ids[:-1])) for s in seqs]
    positions = [[len(s.prompt_ids) + j for j in range(width - 1)] for s in seqs]
    gather_at = [b * width + j for b, s in enumerate(seqs) for j in range(len(s.completion_ids))]
    targets = [t for s in seqs for t in s.completion_ids]
    padded_prompts = [list(p) + [0] * (prompt_width - len(p)) for p in prompts]
    return following, positions, gather_at, targets, (padded_prompts, [len(p) for p in prompts], index)


def packed_logprobs(
    model: torch.nn.Module, input_ids: Tensor, position_ids: Tensor | None, gather_at: Tensor, targets: Tensor,
    temperature: float, chunk: int, prompts: tuple[Tensor, Tensor, Tensor] | None = None,
) -> Tensor:
    """The decoder over a [B, T] batch (after the shared ``prompts``, when given), then the output layer
    ``chunk`` rows at a time at ``gather_at`` (indices into the flattened hidden states): the log-prob of
    ``targets``, as one flat float32 tensor.

    The attention mask is left to transformers: with restarting ``position_ids`` it builds a document mask
    (block-diagonal causal), with none the plain causal mask.
    """
    decoder = model.get_decoder()
    if prompts is None:
        hidden = decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state
    else:
        hidden = _after_shared_prompts(decoder, input_ids, position_ids, *prompts)
    hidden = hidden.flatten(0, 1)[gather_at]
    weight = model.get_output_embeddings().weight
    parts = []
    for lo in range(0, len(gather_at), chunk):
        h, t = hidden[lo : lo + chunk], targets[lo : lo + chunk]
        if torch.is_grad_enabled():
            parts.append(checkpoint(_taken_logprobs, h, weight, t, temperature, use_reentrant=False))
        else:
            parts.append(_taken_logprobs(h, weight, t, temperature))
    if not parts:  # no completion token at all: an empty result that still has a gradient path
        return hidden.sum(-1).to(torch.promote_types(hidden.dtype, torch.float32))
    return torch.cat(parts)


def _after_shared_prompts(
    decoder: torch.nn.Module, following: Tensor, positions: Tensor, prompt_ids: Tensor, lengths: Tensor, index: Tensor
) -> Tensor:
    """[B, 1 + T] hidden states: each row's prompt's last one, then those of ``following`` attending to a copy
    of its prompt's keys and values (the padding after a shorter prompt masked out)."""
    out = decoder(input_ids=prompt_ids, use_cache=True)  # right-padded: causal attention keeps pads unseen
    last = out.last_hidden_state[torch.arange(len(lengths), device=lengths.device), lengths - 1][index, None]
    if following.shape[1] == 0:
        return last
    cache = out.past_key_values
    cache.batch_select_indices(index)
    prompt_mask = torch.arange(prompt_ids.shape[1], device=lengths.device)[None, :] < lengths[:, None]
    mask = torch.cat([prompt_mask[index], torch.ones_like(following, dtype=torch.bool)], 1).long()
    hidden = decoder(input_ids=following, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
    return torch.cat([last, hidden.last_hidden_state], 1)


def padded(rows: Sequence[Tensor], fill: float = 0.0) -> tuple[Tensor, Tensor]:
    """Ragged 1-d tensors as a [B, T] tensor and its float mask."""
    values = pad_sequence(list(rows), batch_first=True, padding_value=fill)
    lengths = torch.tensor([len(r) for r in rows], device=values.device)
    mask = (torch.arange(values.shape[1], device=values.device)[None, :] < lengths[:, None]).float()
    return values, mask
