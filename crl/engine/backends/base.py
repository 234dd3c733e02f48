"""The interface every generation backend implements, so transformers and vLLM are interchangeable.

A backend takes already-tokenised prompts, one seed per prompt, and the sampling settings, and returns for each
prompt ``n`` samples with the token ids and the behaviour log-prob of every sampled token: the log-softmax of
the logits divided by the temperature (before top-k/top-p truncation), which is what the trainer recomputes.

Seeds belong to prompts, not to positions in a batch: ``prompt_seed(base, prompt_id)`` hashes a prompt's id
with the run's seed, so a prompt gets the same samples whether it is generated alone, in another batch, or
in one shard of many.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Protocol

from crl.config import Sampling


@dataclass(frozen=True)
class Sample:
    token_ids: list[int]  # the completion, including the end-of-sequence token when it stopped on one
    logprobs: list[float]  # behaviour log-prob of each token of token_ids
    text: str  # decoded completion, special tokens removed, cut at a stop string
    finish_reason: str  # "stop" | "length"


Progress = Callable[[int], None]  # called with the number of prompts just finished


def prompt_seed(base: int, prompt_id: str) -> int:
    """The seed of one prompt's samples: a hash of the base seed and the prompt's id (63 bits)."""
    digest = hashlib.sha256(f"{base}:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class Backend(Protocol):
    def sample(
        self, prompt_ids: list[list[int]], seeds: list[int], cfg: Sampling, progress: Progress | None = None
    ) -> list[list[Sample]]:
        """For each prompt, ``cfg.n`` samples drawn with that prompt's seed."""
        ...

    def close(self) -> None: ...
