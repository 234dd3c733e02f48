"""Stage 1, generate: a prompt set in, rollouts.parquet out (one row per completion).

Each prompt is rendered (chat template or plain), tokenised once, and sampled K times by a backend with its
own seed (a hash of the run's seed and the prompt's id), so a prompt's samples are the same whichever batch or
shard it is in. The token ids and the behaviour log-prob of every sampled token are kept so the trainer can use
them without re-tokenising. With ``--shard i/n`` the stage takes every n-th prompt and writes
``rollouts-0000i-of-0000n.parquet`` into the output folder; later stages read such a folder as one file.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from crl.config import RunConfig, Sampling
from crl.data.prompts import load_prompts, render, shard
from crl.data.prompts import resolve as resolve_prompts
from crl.data.schemas import ROLLOUT_SCHEMA, rollout_metadata
from crl.engine.backends import Backend, make_backend, prompt_seed
from crl.engine.checkpoint import load_tokenizer, model_positions
from crl.errors import CrlError
from crl.io import check_output, write_parquet
from crl.progress import progress_bar


def tokenize_prompts(prompts: pl.DataFrame, run: RunConfig, tokenizer: object) -> tuple[list[str], list[list[int]]]:
    """The rendered text of each prompt and its token ids (no special tokens added: the template has them)."""
    rendered = [render(p, tokenizer, run.template, run.instruction) for p in prompts["prompt"]]
    return rendered, [tokenizer(text, add_special_tokens=False)["input_ids"] for text in rendered]


def check_positions(positions: int | None, prompt_ids: list[list[int]], max_new_tokens: int) -> None:
    """Refuse a generation limit that would run past the model's positions (one line, before sampling)."""
    longest = max(len(p) for p in prompt_ids)
    if positions and longest + max_new_tokens > positions:
        raise CrlError(
            f"--max-new-tokens {max_new_tokens}: the longest prompt ({longest} tokens) plus {max_new_tokens} new "
            f"tokens exceeds the model's {positions} positions"
        )


def rollout_rows(
    prompts: pl.DataFrame, run: RunConfig, sampling: Sampling, seed: int, backend: Backend, tokenizer: object,
    round: int = 0, model: str = "", show_progress: bool = True, positions: int | None = None,
) -> pl.DataFrame:
    """Sample ``sampling.n`` completions for each prompt: the rows of rollouts.parquet."""
    rendered, prompt_ids = tokenize_prompts(prompts, run, tokenizer)
    check_positions(positions, prompt_ids, sampling.max_new_tokens)
    seeds = [prompt_seed(seed, pid) for pid in prompts["id"]]
    with progress_bar("generate", len(prompt_ids), show_progress) as advance:
        samples = backend.sample(prompt_ids, seeds, sampling, advance)
    rows: dict[str, list] = {c: [] for c in ROLLOUT_SCHEMA}
    for i, (pid, answer, source) in enumerate(prompts.select("id", "answer", "source").iter_rows()):
        for k, s in enumerate(samples[i]):
            for column, value in (
                ("prompt_id", pid), ("sample", k), ("prompt", rendered[i]), ("completion", s.text), ("answer", answer),
                ("source", source), ("prompt_ids", prompt_ids[i]), ("completion_ids", s.token_ids), ("logprobs", s.logprobs),
                ("finish_reason", s.finish_reason), ("model", model), ("round", round),
                ("temperature", sampling.temperature), ("seed", seeds[i]),
            ):
                rows[column].append(value)
    return pl.DataFrame(rows, schema=ROLLOUT_SCHEMA)


def output_path(out: Path, shard_of: tuple[int, int] | None) -> Path:
    if shard_of is None:
        return out
    i, n = shard_of
    return out / f"rollouts-{i:05d}-of-{n:05d}.parquet"


def check_shard_folder(out: Path) -> None:
    """A shard goes into a new folder or one that holds only rollout shards, never into a user's folder."""
    if out.exists() and (not out.is_dir() or any(not p.name.startswith("rollouts-") for p in out.iterdir() if not p.name.startswith("."))):
        raise CrlError(f"--out {out}: with --shard, --out is a folder of rollout shards; this one holds other files (choose another --out)")


def generate(
    prompt_set: str | Path, out: Path, run: RunConfig, model: str, *, limit: int | None = None,
    shard_spec: str | None = None, round: int = 0, overwrite: bool = False,
) -> Path:
    """Run the stage: check everything, sample, write the rollouts whole."""
    prompts, shard_of = shard(load_prompts(prompt_set, limit), shard_spec)
    path = output_path(out, shard_of)
    if shard_of is not None:
        check_shard_folder(out)
    path = check_output(path, kind="rollouts", overwrite=overwrite, inputs=[resolve_prompts(prompt_set), model])
    tokenizer, positions = load_tokenizer(model), model_positions(model)
    check_positions(positions, tokenize_prompts(prompts, run, tokenizer)[1], run.generate.max_new_tokens)  # before an engine starts
    backend = make_backend(run.backend, model)
    try:
        df = rollout_rows(prompts, run, run.generate, run.seed, backend, tokenizer, round, model, positions=positions)
    finally:
        backend.close()
    write_parquet(df, path, rollout_metadata(run.generate, tokenizer, model=model, prompt_set=str(prompt_set), seed=run.seed), kind="rollouts")
    return path
