"""The interface every generation backend implements, so transformers and vLLM are interchangeable.

A backend takes already-tokenised prompts, one seed per prompt, and the sampling settings, and returns for each
prompt ``n`` samples with the token ids and the behaviour log-prob of every sampled token: the log-softmax of
the logits divided by the temperature (before top-k/top-p truncation), which is what the trainer recomputes.

Seeds belong to prompts, not to positions in a batch: ``prompt_seed(base, prompt_id)`` hashes a prompt's id
with the run's seed, so a prompt gets the same samples whether it is generated alone, in another batch, or
in one shard of many.

What ``crl iterate`` needs beyond sampling is declared here too, so the loop never probes a backend for what it
can do: ``live`` (it samples with the trainer's own module, so no weights ever move), ``sleep``/``wake`` (free
the accelerator's memory while the trainer runs; a no-op where the engine cannot sleep, ``can_sleep`` says
which) and ``update_weights`` (take the trainer's new weights: the full model, or only a LoRA adapter's).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from torch import Tensor

from crl.config import Sampling


@dataclass(frozen=True)
class Sample:
    token_ids: list[int]  # the completion, including the end-of-sequence token when it stopped on one
    logprobs: list[float]  # behaviour log-prob of each token of token_ids
    text: str  # decoded completion, special tokens removed, cut at a stop string
    finish_reason: str  # "stop" | "length"


@dataclass(frozen=True)
class WeightUpdate:
    """New weights for a sampler: the full model's tensors named as transformers saves them, or, with
    ``adapter`` (a PEFT ``adapter_config.json`` as a dict), only a LoRA adapter's tensors named as PEFT saves them."""

    tensors: dict[str, Tensor]
    adapter: dict[str, Any] | None = field(default=None)


Progress = Callable[[int], None]  # called with the number of prompts just finished


def prompt_seed(base: int, prompt_id: str) -> int:
    """The seed of one prompt's samples: a hash of the base seed and the prompt's id (63 bits)."""
    digest = hashlib.sha256(f"{base}:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class Backend(Protocol):
    live: bool  # samples with the trainer's own module: update_weights has nothing to do
    can_sleep: bool  # sleep() really frees the accelerator's memory

    def sample(
        self, prompt_ids: list[list[int]], seeds: list[int], cfg: Sampling, progress: Progress | None = None
    ) -> list[list[Sample]]:
        """For each prompt, ``cfg.n`` samples drawn with that prompt's seed."""
        ...

    def sleep(self) -> None:
        """Free the engine's accelerator memory while the trainer runs (a no-op when ``can_sleep`` is False)."""
        ...

    def wake(self) -> None:
        """Undo ``sleep``, before the next ``sample`` or ``update_weights``."""
        ...

    def update_weights(self, update: WeightUpdate) -> None:
        """Sample with these weights from now on."""
        ...

    def close(self) -> None: ...
