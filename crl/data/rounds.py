"""The vocabulary of a verified round: its groups, what makes a group mixed, its summary, and the metrics of a
round as ``round.json`` and ``metrics.parquet`` hold them.

- A group is one prompt's samples in one round (rows that share ``GROUP_KEY``): the same prompt drawn in two
  rounds makes two groups, so training on the groups of several rounds never merges their samples.
- A group is mixed when it holds a right and a wrong answer (``mixed``): the only kind a contrastive or
  group-relative objective learns from. ``mixed`` takes counts, so dynamic sampling, the trainer, the summary
  of ``crl verify``, ``crl inspect`` (polars) and the objectives (torch tensors) use this one definition.
- A round's metrics are named ``SECTION/NAME`` (``metric``): ``rollouts/`` the verify summary of its samples,
  ``train/`` its optimiser steps (``TrainLog.summary``), ``seconds/`` its timings, ``TASK/`` its held-out
  evaluation; ``RoundSummary`` builds the row and the views find columns by these names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

import polars as pl

from crl.data.schemas import GROUP_SCHEMA, STATUSES

GROUP_KEY = ("round", "prompt_id")
ROLLOUTS, TRAIN, SECONDS = "rollouts", "train", "seconds"
EVAL_METRICS = ("avg@", "pass@", "maj@")
T = TypeVar("T")


def mixed(n_pos: T, n: T) -> T:
    """Whether a group of ``n`` samples with ``n_pos`` right ones holds both a right and a wrong answer
    (elementwise for polars expressions and torch tensors)."""
    return (n_pos > 0) & (n_pos < n)


def group_key(rows: pl.DataFrame) -> tuple[str, ...]:
    """The columns that name a group in ``rows``: ``GROUP_KEY``, or ``prompt_id`` alone in a table of completions
    made by another tool (which has no ``round``: one round)."""
    return GROUP_KEY if "round" in rows.columns else ("prompt_id",)


def group_counts(scored: pl.DataFrame) -> pl.DataFrame:
    """One row per group, in order of first appearance: its key, ``n`` and ``n_pos``."""
    return scored.group_by(*group_key(scored), maintain_order=True).agg(n=pl.len(), n_pos=pl.col("positive").sum())


def mixed_groups(scored: pl.DataFrame) -> pl.DataFrame:
    """The keys of the mixed groups, in order of first appearance."""
    return group_counts(scored).filter(mixed(pl.col("n_pos"), pl.col("n"))).select(group_key(scored))


def in_groups(rows: pl.DataFrame, keys: pl.DataFrame) -> pl.Series:
    """For each row, whether its group is one of those ``keys`` names."""
    wanted = set(keys.select(group_key(rows)).iter_rows())
    return pl.Series([key in wanted for key in rows.select(group_key(rows)).iter_rows()], dtype=pl.Boolean)


def groups(scored: pl.DataFrame) -> pl.DataFrame:
    """groups.parquet: one row per group, its prompt_id, n, n_pos, n_neg and pass_rate."""
    return (
        group_counts(scored)
        .with_columns(n_neg=pl.col("n") - pl.col("n_pos"), pass_rate=pl.col("n_pos") / pl.col("n"))
        .select(list(GROUP_SCHEMA))
        .cast(GROUP_SCHEMA)
    )


def summary(scored: pl.DataFrame, grouped: pl.DataFrame) -> dict[str, float]:
    """Pass rate, group kinds and status counts: what ``crl verify`` prints, and a round's ``rollouts/``."""
    out = {
        "completions": scored.height,
        "pass_rate": float(scored["positive"].mean()),
        "reward": float(scored["reward"].mean()),
        "groups": grouped.height,
        "all_positive": int((grouped["n_neg"] == 0).sum()),
        "all_negative": int((grouped["n_pos"] == 0).sum()),
        "mixed": int(mixed(grouped["n_pos"], grouped["n"]).sum()),
    }
    if "completion_ids" in scored.columns:  # absent from a plain completion table (crl verify on another tool's)
        out["mean_completion_tokens"] = float(scored["completion_ids"].list.len().mean())
    if "finish_reason" in scored.columns:
        out["truncated"] = float((scored["finish_reason"] == "length").mean())
    out.update({c: float(scored[c].mean()) for c in scored.columns if c.startswith("reward/")})
    counts = dict(scored["status"].value_counts().iter_rows())
    out.update({f"status_{s}": int(counts.get(s, 0)) for s in STATUSES})
    return out


def metric(section: str, name: str) -> str:
    """The column of a round's metric: ``rollouts/pass_rate``, ``train/loss``, ``arith_test/avg@4``."""
    return f"{section}/{name}"


def section_columns(table: pl.DataFrame, section: str) -> list[str]:
    """The numeric columns of one section of a metrics table, in its order."""
    return [c for c, t in table.schema.items() if c.startswith(f"{section}/") and t.is_numeric()]


def eval_columns(table: pl.DataFrame) -> list[str]:
    """The held-out metric columns of a metrics table (``TASK/avg@k``, ``TASK/pass@k``, ``TASK/maj@k``)."""
    return [c for c in table.columns if any(f"/{m}" in c for m in EVAL_METRICS)]


@dataclass(frozen=True)
class TrainLog:
    """A round's optimiser steps, one row each (train_log.parquet), and which of its columns count groups.

    A round reports each statistic's mean over its steps, except the counts (groups dropped, groups flat),
    which it sums over the steps of one epoch: each group of the round is in one step of every epoch."""

    steps: pl.DataFrame
    counts: frozenset[str] = frozenset()

    def summary(self) -> dict[str, float | None]:
        """The round's ``train/`` statistics (a step without a unit has NaN means: they are left out)."""
        numeric = [c for c, t in self.steps.schema.items() if t.is_numeric() and c not in ("step", "round", "epoch", "seconds")]
        first = self.steps.filter(pl.col("epoch") == 0) if "epoch" in self.steps.columns else self.steps
        values = self.steps.select(pl.col(numeric).cast(pl.Float64).fill_nan(None).mean()).to_dicts()[0]
        values.update({c: float(first[c].sum()) for c in numeric if c in self.counts})
        return values


@dataclass
class RoundSummary:
    """One round as round.json holds it (written last: the round is done) and metrics.parquet lists it."""

    round: int
    rollouts: dict[str, Any] = field(default_factory=dict)  # the verify summary of the round's samples
    attempts: int | None = None  # draws of dynamic sampling
    train: dict[str, Any] = field(default_factory=dict)  # TrainLog.summary
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)  # task: avg@k, pass@k, maj@k, ...
    seconds: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {"round": self.round, **{metric(ROLLOUTS, k): v for k, v in self.rollouts.items()}}
        if self.attempts is not None:
            out["attempts"] = self.attempts
        out.update({metric(TRAIN, k): v for k, v in self.train.items()})
        out.update({metric(task, k): v for task, values in self.evals.items() for k, v in values.items()})
        out.update({metric(SECONDS, k): v for k, v in self.seconds.items()})
        return out
