"""The interface every generation backend implements, so transformers and vLLM are interchangeable.

A backend takes already-tokenised prompts and returns, for each, ``n`` samples with the token ids and the
behaviour log-prob of every sampled token: the log-softmax of the logits divided by the temperature
(before top-p truncation), which is what the trainer recomputes for importance ratios.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol


@dataclass(frozen=True)
class SamplingConfig:
    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sample:
    token_ids: list[int]  # the completion, including the end-of-sequence token when it stopped on one
    logprobs: list[float]  # behaviour log-prob of each token of token_ids
    text: str  # decoded completion, special tokens removed, cut at a stop string
    finish_reason: str  # "stop" | "length"


Progress = Callable[[int], None]  # called with the number of prompts just finished


class Backend(Protocol):
    def sample(
        self, prompt_ids: list[list[int]], cfg: SamplingConfig, progress: Progress | None = None
    ) -> list[list[Sample]]:
        """For each prompt, ``cfg.n`` samples; the i-th prompt is seeded with ``cfg.seed + i``."""
        ...

    def close(self) -> None: ...
