"""Stage 4, eval: a model and one or more prompt sets in, eval.parquet (one row per sample) out.

Samples k completions per problem, verifies them, and reports per task: avg@k (mean accuracy over the
samples), unbiased pass@k ``1 - C(n-c, k) / C(n, k)``, maj@k (the most frequent extracted answer is
correct), mean completion length in tokens and the share of completions cut at the length limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb
from pathlib import Path

import polars as pl

from crl.io import write_parquet
from crl.engine.backends import Backend, make_backend
from crl.engine.checkpoint import load_tokenizer
from crl.stages.generate import GenerateConfig, rollout_rows
from crl.data.prompts import load_prompts
from crl.stages.verify import VerifyConfig, score


@dataclass(frozen=True)
class EvalConfig:
    generate: GenerateConfig
    verify: VerifyConfig = VerifyConfig()


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def majority_correct(preds: list[str | None], rewards: list[float]) -> float:
    """1.0 when the most frequent extracted answer (first seen wins ties) is a correct one."""
    counts: dict[str, int] = {}
    for p in preds:
        if p is not None:
            counts[p] = counts.get(p, 0) + 1
    if not counts:
        return 0.0
    top = max(counts, key=counts.get)
    return float(any(r > 0 for p, r in zip(preds, rewards) if p == top))


def metrics(samples: pl.DataFrame, k: int) -> pl.DataFrame:
    """One row per task with avg@k, pass@k, maj@k, mean completion tokens and truncation rate."""
    per_problem = samples.group_by("task", "prompt_id", maintain_order=True).agg(
        n=pl.len(), c=(pl.col("reward") > 0).sum(), preds=pl.col("pred"), rewards=pl.col("reward")
    )
    per_problem = per_problem.with_columns(
        pass_k=pl.struct("n", "c").map_elements(lambda s: pass_at_k(s["n"], s["c"], k), return_dtype=pl.Float64),
        maj=pl.struct("preds", "rewards").map_elements(
            lambda s: majority_correct(s["preds"], s["rewards"]), return_dtype=pl.Float64
        ),
    )
    lengths = samples.group_by("task", maintain_order=True).agg(
        avg=(pl.col("reward") > 0).mean(),
        mean_tokens=pl.col("completion_ids").list.len().mean(),
        truncated=(pl.col("finish_reason") == "length").mean(),
    )
    scores = per_problem.group_by("task", maintain_order=True).agg(
        problems=pl.len(), pass_k=pl.col("pass_k").mean(), maj=pl.col("maj").mean()
    )
    return (
        scores.join(lengths, on="task", maintain_order="left")
        .select(
            "task",
            "problems",
            pl.lit(k).alias("k"),
            pl.col("avg").alias(f"avg@{k}"),
            pl.col("pass_k").alias(f"pass@{k}"),
            pl.col("maj").alias(f"maj@{k}"),
            "mean_tokens",
            "truncated",
        )
    )


def evaluate(
    tasks: list[str], out: Path | None, cfg: EvalConfig, backend: Backend | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Sample, verify and score each task; write eval.parquet to ``out``; return (metrics, samples)."""
    tokenizer = load_tokenizer(cfg.generate.model)
    own = backend is None
    backend = backend or make_backend(cfg.generate.backend, cfg.generate.model)
    frames = []
    try:
        for task in tasks:
            prompts = load_prompts(task, cfg.generate.limit)
            rows = rollout_rows(prompts, cfg.generate, backend, tokenizer)
            frames.append(score(rows, cfg.verify).with_columns(task=pl.lit(Path(task).stem)))
    finally:
        if own:
            backend.close()
    samples = pl.concat(frames)
    table = metrics(samples, cfg.generate.sampling.n)
    if out is not None:
        write_parquet(samples, out, {"metrics": table.to_dicts(), "model": cfg.generate.model})
    return table, samples
