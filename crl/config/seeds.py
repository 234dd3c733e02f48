"""How a run's one ``seed`` becomes the seed of each random stream of ``crl iterate``, so that no two coincide.

The multipliers are primes: for any seed a user gives, the streams of different rounds and draws stay apart,
and a round's streams do not depend on how many rounds ran before it in this process (a resumed run redoes
them exactly). Each prompt's samples are then seeded by a hash of its stream's seed and the prompt's id
(crl/engine/backends/base.py), and evaluation adds its own offset (crl/stages/eval.py).
"""

from __future__ import annotations

SEED_STRIDE = 1_000_003  # between the seeds of one run: far more rounds than any run has
ROUND_STRIDE = 10_007  # between the sampling streams of a run's rounds
DRAW_STRIDE = 7_919  # between the prompt orders of a round's draws (dynamic sampling)


def sampling_seed(seed: int, round: int) -> int:
    """The seed of round ``round``'s samples."""
    return seed * SEED_STRIDE + round * ROUND_STRIDE


def draw_seed(seed: int, attempt: int) -> int:
    """The seed of the prompt order of a round's draw ``attempt`` (0 for the first)."""
    return seed + DRAW_STRIDE * attempt


def training_seed(seed: int, rounds_done: int) -> int:
    """The seed of the order in which the groups of the next round are cut into optimiser steps."""
    return seed * SEED_STRIDE + rounds_done + 1
