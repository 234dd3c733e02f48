"""Stage 4, eval: a model and one or more prompt sets in, eval.parquet (one row per sample) out.

Samples k completions per problem, verifies them, and reports per task: avg@k (mean accuracy over the
samples), unbiased pass@k ``1 - C(n-c, k) / C(n, k)``, maj@k (the most frequent extracted answer is
correct), mean completion length in tokens and the share of completions cut at the length limit.
"""

from __future__ import annotations

import dataclasses
from math import comb
from pathlib import Path

import polars as pl

from crl.config import RunConfig, Verify
from crl.data.catalogue import known
from crl.data.prompts import load_prompts, resolve as resolve_prompts
from crl.data.schemas import rollout_metadata
from crl.engine.backends import Backend, make_backend
from crl.engine.checkpoint import load_tokenizer, model_positions
from crl.io import check_output, write_parquet
from crl.stages.generate import check_positions, rollout_rows, tokenize_prompts
from crl.stages.verify import score

EVAL_SEED = 12345  # added to the run's seed, so evaluation samples never coincide with training rollouts


def task_name(task: str) -> str:
    return Path(task).stem


def task_verifier(task: str, settings: Verify, named: bool) -> Verify:
    """The run's verifiers when the user named them, else the one the catalogue gives the task (gsm8k for
    GSM8K, math otherwise)."""
    entry = known(task_name(task))
    if named or entry is None:
        return settings
    return dataclasses.replace(settings, verifier={entry.verifier: 1.0})


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
    """One row per task with avg@k, pass@k, maj@k, mean completion tokens and truncation rate (null for a table
    scored from another tool, which has no token ids or finish reasons)."""
    per_problem = samples.group_by("task", "prompt_id", maintain_order=True).agg(
        n=pl.len(), c=pl.col("positive").sum(), preds=pl.col("pred"), rewards=pl.col("positive").cast(pl.Float64)
    )
    per_problem = per_problem.with_columns(
        pass_k=pl.struct("n", "c").map_elements(lambda s: pass_at_k(s["n"], s["c"], k), return_dtype=pl.Float64),
        maj=pl.struct("preds", "rewards").map_elements(
            lambda s: majority_correct(s["preds"], s["rewards"]), return_dtype=pl.Float64
        ),
    )
    has = set(samples.columns)  # a table scored from another tool has no token ids or finish reasons: null
    lengths = samples.group_by("task", maintain_order=True).agg(
        avg=pl.col("positive").mean(),
        mean_tokens=pl.col("completion_ids").list.len().mean() if "completion_ids" in has else pl.lit(None, pl.Float64),
        truncated=(pl.col("finish_reason") == "length").mean() if "finish_reason" in has else pl.lit(None, pl.Float64),
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
    tasks: list[str], out: Path | None, run: RunConfig, model: str, *, backend: Backend | None = None,
    tokenizer: object = None, verifier_named: bool = False, overwrite: bool = False, show_progress: bool = True,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Sample, verify and score each task with the ``[eval]`` settings; write eval.parquet to ``out`` (whole or
    not at all); return (metrics, samples). ``backend`` and ``tokenizer`` may be a live engine's (iterate's)."""
    paths = [resolve_prompts(t) for t in tasks]
    sets = [load_prompts(p, run.eval.limit) for p in paths]
    if out is not None:
        out = check_output(out, kind="eval", overwrite=overwrite, inputs=[*paths, model])
    tokenizer = tokenizer or load_tokenizer(model)
    positions = model_positions(model)
    for prompts in sets:  # before an engine starts
        check_positions(positions, tokenize_prompts(prompts, run, tokenizer)[1], run.eval.max_new_tokens)
    own = backend is None
    backend = backend or make_backend(run.backend, model)
    frames = []
    try:
        for task, prompts in zip(tasks, sets):
            rows = rollout_rows(prompts, run, run.eval, run.seed + EVAL_SEED, backend, tokenizer, model=model,
                                show_progress=show_progress, positions=positions)
            scored = score(rows, task_verifier(task, run.verify, verifier_named), show_progress)
            frames.append(scored.with_columns(task=pl.lit(task_name(task))))
    finally:
        if own:
            backend.close()
    samples = pl.concat(frames, how="diagonal_relaxed")
    table = metrics(samples, run.eval.n)
    if out is not None:
        meta = rollout_metadata(run.eval, tokenizer, model=model, seed=run.seed + EVAL_SEED, metrics=table.to_dicts())
        write_parquet(samples, out, meta, kind="eval")
    return table, samples
