"""Stage 2, verify: rollouts in, verified/{positive,negative,groups}.parquet out.

Each completion's final answer is extracted and checked against the gold answer by the verifiers named in the
``[verify]`` settings (worker processes, a wall-clock limit per item); a completion stopped by the length limit
gets credit only when its final answer is complete. With several verifiers the reward is
their weighted sum and each one's reward is kept as ``reward/NAME``; ``pred`` and ``status`` are the first
verifier's. A completion is a positive when its reward is more than half the most it could get (the sum of the
positive weights): with one 0/1 verifier, exactly when it is right. positive.parquet and negative.parquet hold
the two sides; groups.parquet has one row per prompt with its pass rate, which is what the contrastive
objectives need to know (groups with no positive or no negative give no contrast).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from crl.config import Verify
from crl.data.schemas import GROUP_SCHEMA, STATUSES, VERDICT_SCHEMA, read_rollouts
from crl.io import atomic_path, check_output, write_parquet
from crl.verifiers import verify_many


def score(rollouts: pl.DataFrame, settings: Verify, show_progress: bool = True) -> pl.DataFrame:
    """The rollouts with reward, pred, status and positive columns (and reward/NAME per verifier if several)."""
    completions, answers = rollouts["completion"].to_list(), rollouts["answer"].to_list()
    truncated = (rollouts["finish_reason"] == "length").to_list()
    total = pl.Series("reward", [0.0] * rollouts.height, pl.Float64)
    columns = []
    for k, (name, weight) in enumerate(settings.verifier.items()):
        verdicts = verify_many(completions, answers, name, settings.workers or 0, settings.timeout, progress=show_progress,
                               truncated=truncated)
        reward = pl.Series(f"reward/{name}", [v.reward for v in verdicts], VERDICT_SCHEMA["reward"])
        total = total + weight * reward.cast(pl.Float64)
        if k == 0:
            columns += [
                pl.Series("pred", [v.pred for v in verdicts], VERDICT_SCHEMA["pred"]),
                pl.Series("status", [v.status for v in verdicts], VERDICT_SCHEMA["status"]),
            ]
        if len(settings.verifier) > 1:
            columns.append(reward)
    best = sum(w for w in settings.verifier.values() if w > 0)
    return rollouts.with_columns(
        total.cast(VERDICT_SCHEMA["reward"]).alias("reward"), *columns, positive=total > best / 2
    )


def groups(scored: pl.DataFrame) -> pl.DataFrame:
    """One row per prompt: n, n_pos, n_neg, pass_rate."""
    return (
        scored.group_by("prompt_id", maintain_order=True)
        .agg(n=pl.len(), n_pos=pl.col("positive").sum())
        .with_columns(n_neg=pl.col("n") - pl.col("n_pos"), pass_rate=pl.col("n_pos") / pl.col("n"))
        .cast(GROUP_SCHEMA)
    )


def summary(scored: pl.DataFrame, grouped: pl.DataFrame) -> dict[str, float]:
    """Pass rate, group kinds and status counts, as printed by ``crl verify`` and logged by iterate."""
    out = {
        "completions": scored.height,
        "pass_rate": float(scored["positive"].mean()),
        "reward": float(scored["reward"].mean()),
        "groups": grouped.height,
        "all_positive": int((grouped["n_neg"] == 0).sum()),
        "all_negative": int((grouped["n_pos"] == 0).sum()),
        "mixed": int(((grouped["n_pos"] > 0) & (grouped["n_neg"] > 0)).sum()),
        "mean_completion_tokens": float(scored["completion_ids"].list.len().mean()),
        "truncated": float((scored["finish_reason"] == "length").mean()),
    }
    out.update({c: float(scored[c].mean()) for c in scored.columns if c.startswith("reward/")})
    counts = dict(scored["status"].value_counts().iter_rows())
    out.update({f"status_{s}": int(counts.get(s, 0)) for s in STATUSES})
    return out


def write_verified(scored: pl.DataFrame, out: Path, meta: dict[str, object]) -> dict[str, float]:
    """The verified/ folder, whole or not at all; returns its summary (also kept in its metadata)."""
    grouped = groups(scored)
    stats = summary(scored, grouped)
    meta = {**meta, "summary": stats}
    rows = scored.drop("positive")
    with atomic_path(out, kind="verified") as tmp:
        tmp.mkdir()
        write_parquet(rows.filter(scored["positive"]), tmp / "positive.parquet", meta, kind="verified")
        write_parquet(rows.filter(~scored["positive"]), tmp / "negative.parquet", meta, kind="verified")
        write_parquet(grouped, tmp / "groups.parquet", meta, kind="verified")
    return stats


def verify(rollouts_path: Path, out: Path, settings: Verify, overwrite: bool = False) -> dict[str, float]:
    """Run the stage and return its summary."""
    out = check_output(out, kind="verified", overwrite=overwrite, inputs=[rollouts_path])
    rollouts, meta = read_rollouts(rollouts_path)
    return write_verified(score(rollouts, settings), out, {**meta.to_dict(), "verifier": settings.verifier})
