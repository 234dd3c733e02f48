"""Generation with transformers' ``generate``: the fallback backend that runs anywhere torch runs.

Prompts are sorted by length and left-padded in batches; each batch samples ``n`` completions per prompt
with the KV cache. The behaviour log-probs are recomputed after sampling by one packed forward pass with
the same weights (cheaper in memory than keeping the logits of every step for a large vocabulary).
"""

from __future__ import annotations

import torch

from crl.engine.backends.base import Progress, Sample, SamplingConfig
from crl.engine.checkpoint import default_device, load_model, load_tokenizer
from crl.engine.logprobs import TokenSeq, batched_logprobs


class HFBackend:
    """Samples with ``model.generate``; seeds each batch with ``cfg.seed`` plus its first prompt's index."""

    def __init__(self, model: str, device: str | None = None, batch_size: int = 64) -> None:
        self.device = device or default_device()
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.tokenizer = load_tokenizer(model)
        self.model = load_model(model, self.device, dtype).eval()
        self.batch_size = batch_size
        # Packed rows get a dense block-diagonal mask under sdpa: short rows keep attention cheap on a CPU.
        self.logprob_tokens = 16384 if self.device.startswith("cuda") else 2048
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self.eos_ids = set(_as_list(self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id))

    def sample(
        self, prompt_ids: list[list[int]], cfg: SamplingConfig, progress: Progress | None = None
    ) -> list[list[Sample]]:
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
        out: list[list[Sample]] = [[] for _ in prompt_ids]
        for lo in range(0, len(order), self.batch_size):
            idx = order[lo : lo + self.batch_size]
            for i, samples in zip(idx, self._sample_batch([prompt_ids[i] for i in idx], cfg, cfg.seed + idx[0])):
                out[i] = samples
            if progress:
                progress(len(idx))
        return out

    @torch.no_grad()
    def _sample_batch(self, prompts: list[list[int]], cfg: SamplingConfig, seed: int) -> list[list[Sample]]:
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        torch.manual_seed(seed)
        sampling = cfg.temperature > 0
        generated = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            do_sample=sampling,
            temperature=cfg.temperature if sampling else None,
            top_p=cfg.top_p if sampling else None,
            top_k=0 if sampling else None,
            max_new_tokens=cfg.max_new_tokens,
            num_return_sequences=cfg.n,
            pad_token_id=self.pad_id,
            stop_strings=list(cfg.stop) or None,
            tokenizer=self.tokenizer if cfg.stop else None,
        )[:, width:].tolist()
        completions = [self._cut(row) for row in generated]
        seqs = [TokenSeq(prompts[k // cfg.n], ids) for k, (ids, _) in enumerate(completions)]
        logprobs = list(batched_logprobs(self.model, seqs, cfg.temperature or 1.0, self.logprob_tokens))
        samples = [
            Sample(ids, lp.tolist(), *self._text(ids, finish, cfg.stop))
            for (ids, finish), lp in zip(completions, logprobs)
        ]
        return [samples[k : k + cfg.n] for k in range(0, len(samples), cfg.n)]

    def _cut(self, row: list[int]) -> tuple[list[int], str]:
        """Tokens up to and including the first end-of-sequence token, and why generation ended."""
        for j, tok in enumerate(row):
            if tok in self.eos_ids:
                return row[: j + 1], "stop"
        return row, "length"

    def _text(self, ids: list[int], finish: str, stop: tuple[str, ...]) -> tuple[str, str]:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for s in stop:
            if s in text:
                return text[: text.index(s)], "stop"
        return text, finish

    def close(self) -> None:
        self.model = None


def _as_list(x: int | list[int] | None) -> list[int]:
    return [] if x is None else [x] if isinstance(x, int) else list(x)
