"""Stage 2, verify: rollouts in, verified/{positive,negative,groups}.parquet out.

The input may also be any table of completions made by another tool (prompt_id, completion, answer): re-scoring
another generator's outputs or a peer's evaluation dump needs no token ids or sampling metadata; the output then
has that table's columns plus the verdicts, and no columns are invented for it.

Each completion's final answer is extracted and checked against the gold answer by the verifiers named in the
``[verify]`` settings (worker processes, a wall-clock limit per item); a completion stopped by the length limit
gets credit only when its final answer is complete. With several verifiers the reward is
their weighted sum and each one's reward is kept as ``reward/NAME``; ``pred`` and ``status`` are the first
verifier's. A completion is a positive when its reward is more than half the most it could get (the sum of the
positive weights): with one 0/1 verifier, exactly when it is right. positive.parquet and negative.parquet hold
the two sides; groups.parquet has one row per group with its pass rate (crl/data/rounds.py: the groups, the
summary and what makes a group mixed, which is what the contrastive objectives learn from).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from crl.config import Verify
from crl.data.rounds import groups, summary
from crl.data.schemas import VERDICT_SCHEMA, read_completions
from crl.io import atomic_path, check_output, write_parquet
from crl.verifiers import verify_many


def score(rollouts: pl.DataFrame, settings: Verify, show_progress: bool = True) -> pl.DataFrame:
    """The rollouts with reward, pred, status and positive columns (and reward/NAME per verifier if several)."""
    completions, answers = rollouts["completion"].to_list(), rollouts["answer"].to_list()
    truncated = (rollouts["finish_reason"] == "length").to_list() if "finish_reason" in rollouts.columns else None
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
    rollouts, meta = read_completions(rollouts_path)  # crl rollouts, or any table of prompt_id, completion, answer
    return write_verified(score(rollouts, settings), out, {**(meta.to_dict() if meta else {}), "verifier": settings.verifier})
