"""Stage 2, verify: rollouts in, verified/{positive,negative,groups}.parquet out.

Each completion's final answer is extracted and checked against the gold answer by a verifier chosen
by name (worker processes, a wall-clock limit per item); a completion stopped by the length limit gets
credit only when its final answer is complete. Rows with reward > 0 go to positive.parquet,
the rest to negative.parquet; groups.parquet has one row per prompt with its pass rate, which is what
the contrastive objectives need to know (groups with no positive or no negative give no contrast).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from crl.io import atomic_path, read_metadata, write_parquet
from crl.pipeline.schemas import GROUP_SCHEMA, STATUSES, VERDICT_SCHEMA, parquet_files, read_rollouts
from crl.verifiers import verify_many


@dataclass(frozen=True)
class VerifyConfig:
    verifier: str = "math"
    workers: int = 0
    timeout: float = 5.0
    progress: bool = True


def score(rollouts: pl.DataFrame, cfg: VerifyConfig) -> pl.DataFrame:
    """The rollouts with reward, pred and status columns added."""
    truncated = (rollouts["finish_reason"] == "length").to_list() if "finish_reason" in rollouts.columns else None
    verdicts = verify_many(
        rollouts["completion"].to_list(), rollouts["answer"].to_list(), cfg.verifier, cfg.workers, cfg.timeout,
        progress=cfg.progress, truncated=truncated,
    )
    return rollouts.with_columns(
        pl.Series("reward", [v.reward for v in verdicts], VERDICT_SCHEMA["reward"]),
        pl.Series("pred", [v.pred for v in verdicts], VERDICT_SCHEMA["pred"]),
        pl.Series("status", [v.status for v in verdicts], VERDICT_SCHEMA["status"]),
    )


def groups(scored: pl.DataFrame) -> pl.DataFrame:
    """One row per prompt: n, n_pos, n_neg, pass_rate."""
    return (
        scored.group_by("prompt_id", maintain_order=True)
        .agg(n=pl.len(), n_pos=(pl.col("reward") > 0).sum())
        .with_columns(n_neg=pl.col("n") - pl.col("n_pos"), pass_rate=pl.col("n_pos") / pl.col("n"))
        .cast(GROUP_SCHEMA)
    )


def summary(scored: pl.DataFrame, grouped: pl.DataFrame) -> dict[str, float]:
    """Pass rate, group kinds and status counts, as printed by ``crl verify`` and logged by iterate."""
    out = {
        "completions": scored.height,
        "pass_rate": float(scored["reward"].gt(0).mean()),
        "groups": grouped.height,
        "all_positive": int((grouped["n_neg"] == 0).sum()),
        "all_negative": int((grouped["n_pos"] == 0).sum()),
        "mixed": int(((grouped["n_pos"] > 0) & (grouped["n_neg"] > 0)).sum()),
        "mean_completion_tokens": float(scored["completion_ids"].list.len().mean()),
        "truncated": float((scored["finish_reason"] == "length").mean()),
    }
    counts = dict(scored["status"].value_counts().iter_rows())
    out.update({f"status_{s}": int(counts.get(s, 0)) for s in STATUSES})
    return out


def verify(rollouts_path: Path, out: Path, cfg: VerifyConfig) -> dict[str, float]:
    """Run the stage and return its summary; the verified/ folder appears whole or not at all."""
    rollouts, _ = read_rollouts(rollouts_path)
    meta = {**read_metadata(parquet_files(rollouts_path)[0]), "verifier": cfg.verifier}
    scored = score(rollouts, cfg)
    grouped = groups(scored)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        write_parquet(scored.filter(pl.col("reward") > 0), tmp / "positive.parquet", meta)
        write_parquet(scored.filter(pl.col("reward") <= 0), tmp / "negative.parquet", meta)
        write_parquet(grouped, tmp / "groups.parquet", meta)
    return summary(scored, grouped)
