"""Sampling with a transformers model: a decoding loop with one random stream per completion.

Why not ``model.generate``: it draws every row of a batch from one global random stream, so a prompt's samples
depend on which prompts share its batch (and on sharding), and it does not return the log-probs of the sampled
tokens under the sampling distribution, which then cost a second forward pass. Here each completion (prompt
i, sample k) draws its uniforms from its own generator seeded by the prompt's seed and k, and takes its token
by inverse-CDF from the softmax of logits / temperature after top-k/top-p; the behaviour log-prob kept is the
log-softmax of logits / temperature before truncation, the quantity the trainer recomputes. Each prompt is
prefilled once and its n samples share copies of its KV cache; each step is then one token per row.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import torch
from torch import Tensor
from transformers import DynamicCache

from crl.config import Sampling
from crl.engine.backends.base import Sample


def row_generator(seed: int, k: int) -> torch.Generator:
    """The random stream of sample ``k`` of a prompt seeded ``seed``."""
    digest = hashlib.sha256(f"{seed}:{k}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def truncate(logits: Tensor, top_k: int | None, top_p: float) -> Tensor:
    """Logits with the tokens outside the top-k and outside the top-p nucleus set to -inf."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -torch.inf)
    if top_p < 1.0:
        probs, order = logits.softmax(-1).sort(-1, descending=True)
        outside = probs.cumsum(-1) - probs >= top_p  # the token that crosses top_p stays in
        logits = logits.masked_fill(outside.scatter(-1, order, outside), -torch.inf)
    return logits


def draw(logits: Tensor, u: Tensor) -> Tensor:
    """One token per row by inverse CDF: the first token whose cumulative probability exceeds u."""
    cdf = logits.softmax(-1).double().cumsum(-1)
    return torch.searchsorted(cdf, u[:, None] * cdf[:, -1:], right=True).clamp(max=logits.shape[-1] - 1)[:, 0]


@torch.no_grad()
def sample_batch(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    seeds: Sequence[int],
    cfg: Sampling,
    eos_ids: set[int],
    pad_id: int,
    tokenizer: Any,
) -> list[list[Sample]]:
    """``cfg.n`` samples for each prompt (a list of token ids), as ``Sample`` rows grouped by prompt."""
    device = next(model.parameters()).device
    gens = [row_generator(s, k) for s in seeds for k in range(cfg.n)]
    u = torch.stack([torch.rand(cfg.max_new_tokens, generator=g, dtype=torch.float64) for g in gens]).to(device)
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
    # each prompt is prefilled once; its n samples then share a copy of its cache
    cache.batch_repeat_interleave(cfg.n)
    out.logits = out.logits[:, -1:].repeat_interleave(cfg.n, 0)
    mask, positions = mask.repeat_interleave(cfg.n, 0), positions.repeat_interleave(cfg.n, 0)
    B, eos = len(prompts) * cfg.n, torch.tensor(sorted(eos_ids), device=device)
    tokens, logps = [], []
    done = torch.zeros(B, dtype=torch.bool, device=device)
    last = positions[:, -1]
    for t in range(cfg.max_new_tokens):
        logits = out.logits[:, -1].float()
        greedy = cfg.temperature == 0
        logp = (logits / (1.0 if greedy else cfg.temperature)).log_softmax(-1)
        if greedy:
            token = logits.argmax(-1)
        else:
            token = draw(truncate(logp, cfg.top_k, cfg.top_p), u[:, t])
        token = torch.where(done, pad_id, token)
        tokens.append(token)
        logps.append(logp.gather(-1, token[:, None])[:, 0])
        done |= torch.isin(token, eos)
        if cfg.stop:
            done |= _hit_stop(tokenizer, torch.stack(tokens, 1), done, cfg.stop)
        if bool(done.all()) or t == cfg.max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=device)], 1)
        last = last + 1
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=last[:, None], past_key_values=cache, use_cache=True)
    token_rows, logp_rows = torch.stack(tokens, 1).tolist(), torch.stack(logps, 1).tolist()
    samples = [_finish(ids_, lps, eos_ids, tokenizer, cfg.stop) for ids_, lps in zip(token_rows, logp_rows)]
    return [samples[i : i + cfg.n] for i in range(0, B, cfg.n)]


def _hit_stop(tokenizer: Any, tokens: Tensor, done: Tensor, stop: tuple[str, ...]) -> Tensor:
    """Rows (not yet done) whose recent text holds a stop string."""
    window = max(len(s) for s in stop) + 8
    hit = torch.zeros_like(done)
    for r in (~done).nonzero()[:, 0].tolist():
        tail = tokenizer.decode(tokens[r, -window:].tolist(), skip_special_tokens=True)
        hit[r] = any(s in tail for s in stop)
    return hit


def _finish(ids: list[int], logps: list[float], eos_ids: set[int], tokenizer: Any, stop: tuple[str, ...]) -> Sample:
    """A row cut after its end-of-sequence token or the token that completes a stop string."""
    end = next((j + 1 for j, tok in enumerate(ids) if tok in eos_ids), None)
    finish = "stop" if end is not None else "length"
    ids, logps = ids[:end], logps[:end]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    hits = [text.index(s) for s in stop if s in text]
    if hits:
        cut = min(hits)
        while len(ids) > 1 and any(s in tokenizer.decode(ids[:-1], skip_special_tokens=True) for s in stop):
            ids, logps = ids[:-1], logps[:-1]  # drop tokens generated after the stop string was complete
        text, finish = text[:cut], "stop"
    return Sample(token_ids=ids, logprobs=logps, text=text, finish_reason=finish)
