"""A round's samples in ``crl iterate``: the round's prompts sampled and verified, and the groups to train on.

Without dynamic sampling every group of the round's ``prompts_per_round`` prompts is trained on. With it (on
by default for DAPO, ``generate.dynamic_sampling``), prompts are drawn until the round holds
``prompts_per_round`` mixed groups (crl/data/rounds.py), and exactly that many are trained on: the first ones
in the order drawn. A further draw (another shuffle of the prompts, at most ``generate.max_attempts`` draws) is
sampled in pieces sized to the shortfall; each prompt's samples depend only on its seed, so the groups kept are
those of sampling the whole draw, at a fraction of the generation. The groups left out (not mixed, or mixed
beyond the batch) are counted, and the trainer reports them as dropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import polars as pl

from crl.config import RunConfig
from crl.config.seeds import draw_seed, sampling_seed
from crl.data.rounds import GROUP_KEY, in_groups, mixed_groups
from crl.engine.generator import Generator
from crl.objectives import spec
from crl.stages.generate import rollout_rows
from crl.stages.verify import score


@dataclass(frozen=True)
class RoundSamples:
    """What a round sampled, what it trains on, and what it cost."""

    rollouts: pl.DataFrame  # every sample drawn (rollouts.parquet)
    scored: pl.DataFrame  # the same, verified (verified/)
    train: pl.DataFrame  # the rows to train on: every group, or the mixed groups kept
    attempts: int  # draws made
    left_out: int  # groups sampled but not trained on
    seconds: dict[str, float] = field(default_factory=dict)  # generate, verify


def dynamic_sampling(run: RunConfig) -> bool:
    """Whether the round fills its batch with mixed groups: the setting, else the objective's default."""
    return run.generate.dynamic_sampling if run.generate.dynamic_sampling is not None else spec(run.train.objective).dynamic_sampling


def round_prompts(prompts: pl.DataFrame, r: int, per_round: int, seed: int, attempt: int = 0) -> pl.DataFrame:
    """The prompts of round ``r`` (1-based): consecutive slices of a seeded shuffle, wrapping around; each
    further draw of dynamic sampling slices another shuffle."""
    order = prompts.sample(fraction=1.0, shuffle=True, seed=draw_seed(seed, attempt))
    start = ((r - 1) * per_round) % order.height
    return order[[(start + i) % order.height for i in range(min(per_round, order.height))]]


def next_draw(short: int, mixed: int, drawn: int, left: int) -> int:
    """Prompts to sample next: the shortfall over the share of mixed groups so far, with a quarter more for luck."""
    return left if mixed == 0 else min(left, -(-5 * short * drawn // (4 * mixed)))


def sample_round(run: RunConfig, gen: Generator, prompts: pl.DataFrame, r: int) -> RoundSamples:
    """Round ``r``'s rollouts, each verified once, and the rows to train on (see the module docstring)."""
    seed, dynamic, wanted = sampling_seed(run.seed, r), dynamic_sampling(run), run.prompts_per_round
    frames, scored, attempts, seen, mixed, seconds = [], [], 0, set(), 0, {"generate": 0.0, "verify": 0.0}
    while attempts < (run.generate.max_attempts if dynamic else 1) and mixed < wanted:
        batch = round_prompts(prompts, r, wanted, run.seed, attempts).filter(~pl.col("id").is_in(list(seen)))
        attempts += 1
        while batch.height and mixed < wanted:
            take = next_draw(wanted - mixed, mixed, len(seen), batch.height) if frames else batch.height
            chunk, batch = batch.head(take), batch.slice(take)
            seen.update(chunk["id"].to_list())
            start = time.perf_counter()
            frames.append(rollout_rows(chunk, run, run.generate, seed, gen.backend, gen.trainer.tokenizer, r, run.model))
            seconds["generate"] += time.perf_counter() - start
            start = time.perf_counter()
            scored.append(score(frames[-1], run.verify))
            seconds["verify"] += time.perf_counter() - start
            mixed += mixed_groups(scored[-1]).height  # the pieces hold distinct prompts
    rollouts, every = pl.concat(frames), pl.concat(scored)
    if not dynamic:
        return RoundSamples(rollouts, every, every, attempts, 0, seconds)
    keep = mixed_groups(every).head(wanted)
    left_out = every.select(GROUP_KEY).n_unique() - keep.height
    return RoundSamples(rollouts, every, every.filter(in_groups(every, keep)), attempts, left_out, seconds)
