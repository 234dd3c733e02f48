"""The result tables the commands print (on standard output; progress and messages go to standard error):
a verify summary, per-task evaluation metrics, and a run's rounds with the held-out accuracy before and after.
The metrics' names are those of crl/data/rounds.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from crl.data.rounds import ROLLOUTS, SECONDS, TRAIN, eval_columns, metric

stdout = Console()
ROUND_COLUMNS = (metric(ROLLOUTS, "pass_rate"), metric(ROLLOUTS, "mixed"), metric(TRAIN, "loss"), metric(TRAIN, "grad_norm"),
                 metric(ROLLOUTS, "mean_completion_tokens"))


def _cell(v: Any) -> str:
    return "" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def print_listing(title: str, columns: list[tuple[str, str]], rows: list[list[str]]) -> None:
    """A catalogue table (``crl data list``, ``crl model list``): (name, justify) columns, rows of rich text."""
    table = Table(title=title)
    for col, justify in columns:
        table.add_column(col, justify=justify, overflow="fold")
    for row in rows:
        table.add_row(*row)
    stdout.print(table)


def print_summary(stats: dict[str, Any], title: str) -> None:
    table = Table(title=title, show_header=False)
    for key, value in stats.items():
        table.add_row(key, _cell(value))
    stdout.print(table)


def print_metrics(table: pl.DataFrame, title: str) -> None:
    out = Table(title=title)
    for col in table.columns:
        out.add_column(col, justify="left" if col == "task" else "right")
    for row in table.iter_rows():
        out.add_row(*map(_cell, row))
    stdout.print(out)


def print_run(table: pl.DataFrame, run: Path) -> None:
    """Rounds as rows with training and held-out columns, then the first-versus-last evaluation."""
    cols = ["round"] + [c for c in (*ROUND_COLUMNS, *eval_columns(table)) if c in table.columns]
    out = Table(title=f"{run}/metrics.parquet")
    for c in cols:
        out.add_column(c, justify="right")
    for row in table.select(cols).iter_rows():
        out.add_row(*map(_cell, row))
    stdout.print(out)
    evals = table.drop_nulls(subset=eval_columns(table)[:1]) if eval_columns(table) else table.clear()
    if evals.height >= 2:
        first, last = evals.row(0, named=True), evals.row(-1, named=True)
        for c in eval_columns(table):
            stdout.print(f"{c}: round {first['round']} {first[c]:.3f} -> round {last['round']} {last[c]:.3f} ({100 * (last[c] - first[c]):+.1f} points)")
    in_rounds, evaluation = metric(SECONDS, "round"), metric(SECONDS, "eval")
    if in_rounds in table.columns:
        spent = table[evaluation].sum() if evaluation in table.columns else 0.0
        stdout.print(f"time in rounds: {table[in_rounds].sum():.0f} s, evaluation: {spent:.0f} s")
