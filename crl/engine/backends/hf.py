"""Generation with a transformers model: the backend that runs anywhere torch runs.

Prompts are sorted by length and sampled in batches by crl's own decoding loop (crl/engine/backends/sampler.py), which
seeds each completion from its prompt's seed and returns the behaviour log-probs as it samples. The model is
loaded from a folder, or handed over live: ``crl iterate`` passes the trainer's own module, so the sampler
always has the current weights and nothing is copied between rounds (``live``). There is no engine to put to
sleep: ``sleep`` and ``wake`` do nothing.
"""

from __future__ import annotations

import torch

from crl.config import Sampling
from crl.engine.backends.base import Progress, Sample, WeightUpdate
from crl.engine.backends.sampler import sample_batch
from crl.engine.checkpoint import default_device, load_model, load_tokenizer


class HFBackend:
    """Samples ``n`` completions per prompt with a transformers causal LM (a path, or a live module)."""

    can_sleep = False

    def __init__(self, model: str | torch.nn.Module, tokenizer=None, device: str | None = None, batch_size: int = 64) -> None:
        self.live = isinstance(model, torch.nn.Module)
        if self.live:
            self.model, self.tokenizer = model, tokenizer
        else:
            device = device or default_device()
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
            self.tokenizer = load_tokenizer(model)
            self.model = load_model(model, device, dtype)
        self.batch_size = batch_size
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        config_eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        self.eos_ids = set(_as_list(config_eos if config_eos is not None else self.tokenizer.eos_token_id))

    def sample(
        self, prompt_ids: list[list[int]], seeds: list[int], cfg: Sampling, progress: Progress | None = None
    ) -> list[list[Sample]]:
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
        out: list[list[Sample]] = [[] for _ in prompt_ids]
        training = self.model.training
        self.model.eval()
        try:
            for lo in range(0, len(order), self.batch_size):
                idx = order[lo : lo + self.batch_size]
                batch = sample_batch(self.model, [prompt_ids[i] for i in idx], [seeds[i] for i in idx], cfg,
                                     self.eos_ids, self.pad_id, self.tokenizer)
                for i, samples in zip(idx, batch):
                    out[i] = samples
                if progress:
                    progress(len(idx))
        finally:
            self.model.train(training)
        return out

    def sleep(self) -> None:
        pass

    def wake(self) -> None:
        pass

    def update_weights(self, update: WeightUpdate) -> None:
        """A live module already is the trainer's; a loaded one takes the full weights (not an adapter)."""
        if self.live:
            return
        if update.adapter is not None:
            raise ValueError("the transformers backend takes the full weights, not a LoRA adapter")
        self.model.load_state_dict(update.tensors, strict=False)  # a tied output layer is not in the tensors

    def close(self) -> None:
        self.model = None


def _as_list(x: int | list[int] | None) -> list[int]:
    return [] if x is None else [x] if isinstance(x, int) else list(x)
