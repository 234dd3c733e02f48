"""``crl verify``: check rollouts and split them into positives and negatives."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from crl.cli import app
from crl.progress import console


@app.command("verify")
def verify_cmd(
    rollouts: Annotated[Path, typer.Argument(help="rollouts.parquet, or a folder of rollout shards.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("verified"),
    verifier: Annotated[str, typer.Option(help="math, gsm8k, exact, choice, or package.module:function.")] = "math",
    workers: Annotated[int, typer.Option(min=0, help="Worker processes; 0 uses every core.")] = 0,
    timeout: Annotated[float, typer.Option(min=0.01, help="Wall-clock limit per item, in seconds.")] = 5.0,
) -> None:
    """Extract each completion's answer, compare it with the gold answer, write verified/{positive,negative,groups}."""
    from crl.stages.verify import VerifyConfig, verify

    stats = verify(rollouts, out, VerifyConfig(verifier, workers, timeout))
    table = Table(title=f"{out}", show_header=False)
    for key, value in stats.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)
