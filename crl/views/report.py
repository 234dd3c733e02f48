"""The tables ``crl iterate`` prints: per-round progress and the held-out accuracy before and after."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from rich.table import Table

from crl.progress import console

ROUND_COLUMNS = ("rollouts/pass_rate", "rollouts/mixed", "train/loss", "train/grad_norm", "rollouts/mean_completion_tokens")


def eval_columns(table: pl.DataFrame) -> list[str]:
    return [c for c in table.columns if "/avg@" in c or "/pass@" in c or "/maj@" in c]


def print_run(table: pl.DataFrame, run: Path) -> None:
    """Rounds as rows with training and held-out columns, then the first-versus-last evaluation."""
    cols = ["round"] + [c for c in (*ROUND_COLUMNS, *eval_columns(table)) if c in table.columns]
    out = Table(title=f"{run}/metrics.parquet")
    for c in cols:
        out.add_column(c, justify="right")
    for row in table.select(cols).iter_rows():
        out.add_row(*["" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    console.print(out)
    evals = table.drop_nulls(subset=eval_columns(table)[:1]) if eval_columns(table) else table.clear()
    if evals.height >= 2:
        first, last = evals.row(0, named=True), evals.row(-1, named=True)
        for c in eval_columns(table):
            console.print(
                f"{c}: round {first['round']} {first[c]:.3f} -> round {last['round']} {last[c]:.3f} "
                f"({100 * (last[c] - first[c]):+.1f} points)"
            )
    seconds = [c for c in table.columns if c.startswith("seconds/")]
    if seconds:
        console.print(f"stage time: {table.select(seconds).sum().sum_horizontal()[0]:.0f} s")
