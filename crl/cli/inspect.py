"""``crl inspect``: a summary of any crl output, and completions of one prompt side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from crl.cli import app


@app.command("inspect")
def inspect_cmd(
    path: Annotated[Path, typer.Argument(help="rollouts (file or shard folder), verified/, train_log.parquet or checkpoint, metrics.parquet or run folder, eval.parquet, prompt set.")],
    prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="prompt_id whose completions to show (default: a mixed group).")] = None,
    n: Annotated[int, typer.Option("--n", "-n", min=0, help="Completions to show per side (positive / negative).")] = 2,
    width: Annotated[Optional[int], typer.Option(min=40, help="Output width in characters (default: the terminal's).")] = None,
) -> None:
    """Counts, pass rates, length distribution, statuses and finish reasons of a crl output; positives next to negatives."""
    from rich.console import Console

    from crl.views.inspect import summarize

    kind, parts = summarize(path, prompt, n)
    console = Console(width=width)
    for part in parts:
        console.print(part)
