"""Stage 1, generate: a prompt set in, rollouts.parquet out (one row per completion).

Each prompt is rendered (chat template or plain), tokenised once, and sampled K times by a backend; the
token ids and the behaviour log-prob of every sampled token are kept so the trainer can use them without
re-tokenising. With ``--shard i/n`` the stage takes every n-th prompt and writes
``rollouts-0000i-of-0000n.parquet`` into the output folder; later stages read such a folder as one file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from crl.io import write_parquet
from crl.engine.backends import Backend, SamplingConfig, make_backend
from crl.engine.checkpoint import load_tokenizer, tokenizer_fingerprint
from crl.data.prompts import load_prompts, render, shard
from crl.data.schemas import ROLLOUT_SCHEMA
from crl.progress import progress_bar


@dataclass(frozen=True)
class GenerateConfig:
    model: str
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    template: str = "auto"
    instruction: str = ""
    limit: int | None = None
    shard: str | None = None
    backend: str = "auto"
    round: int = 0
    progress: bool = True


def rollout_rows(
    prompts: pl.DataFrame, cfg: GenerateConfig, backend: Backend, tokenizer: object
) -> pl.DataFrame:
    """Sample ``cfg.sampling.n`` completions for each prompt: the rows of rollouts.parquet."""
    rendered = [render(p, tokenizer, cfg.template, cfg.instruction) for p in prompts["prompt"]]
    prompt_ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in rendered]
    with progress_bar("generate", len(prompt_ids), cfg.progress) as advance:
        samples = backend.sample(prompt_ids, cfg.sampling, advance)
    rows: dict[str, list] = {c: [] for c in ROLLOUT_SCHEMA}
    for i, (pid, answer, source) in enumerate(prompts.select("id", "answer", "source").iter_rows()):
        for k, s in enumerate(samples[i]):
            rows["prompt_id"].append(pid)
            rows["sample"].append(k)
            rows["prompt"].append(rendered[i])
            rows["completion"].append(s.text)
            rows["answer"].append(answer)
            rows["source"].append(source)
            rows["prompt_ids"].append(prompt_ids[i])
            rows["completion_ids"].append(s.token_ids)
            rows["logprobs"].append(s.logprobs)
            rows["finish_reason"].append(s.finish_reason)
            rows["model"].append(cfg.model)
            rows["round"].append(cfg.round)
            rows["temperature"].append(cfg.sampling.temperature)
            rows["seed"].append(cfg.sampling.seed + i)
    return pl.DataFrame(rows, schema=ROLLOUT_SCHEMA)


def output_path(out: Path, shard_of: tuple[int, int] | None) -> Path:
    if shard_of is None:
        return out
    i, n = shard_of
    return out / f"rollouts-{i:05d}-of-{n:05d}.parquet"


def generate(prompt_set: str | Path, out: Path, cfg: GenerateConfig, backend: Backend | None = None) -> Path:
    """Run the stage; ``backend`` may be passed in to reuse a live engine across rounds."""
    prompts, shard_of = shard(load_prompts(prompt_set, cfg.limit), cfg.shard)
    tokenizer = load_tokenizer(cfg.model)
    own = backend is None
    backend = backend or make_backend(cfg.backend, cfg.model)
    try:
        df = rollout_rows(prompts, cfg, backend, tokenizer)
    finally:
        if own:
            backend.close()
    path = output_path(out, shard_of)
    write_parquet(df, path, rollout_metadata(cfg, tokenizer, prompt_set=str(prompt_set)))
    return path


def rollout_metadata(cfg: GenerateConfig, tokenizer: object, **extra: object) -> dict[str, object]:
    """What goes into rollouts.parquet's key-value metadata: the settings and the tokenizer's fingerprint."""
    return {**asdict(cfg), "tokenizer": tokenizer_fingerprint(tokenizer), **extra}
