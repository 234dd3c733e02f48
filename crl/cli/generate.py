"""``crl generate``: sample K completions per prompt into rollouts.parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from crl.cli import app
from crl.cli.options import SAMPLING, Given, Overwrite, out_option, settings_command


@settings_command(app, "generate", ["model", "template", "instruction", "seed", *(f"generate.{f}" for f in SAMPLING), "backend.*"])
def generate_cmd(
    prompts: Annotated[str, typer.Argument(help="Prompt set: .parquet/.jsonl file or a named set (see `crl data list`).")],
    out: Annotated[Path, out_option("Output file (a folder of shards with --shard).")] = Path("rollouts.parquet"),
    limit: Annotated[Optional[int], typer.Option(min=1, help="Use only the first N prompts.")] = None,
    shard: Annotated[Optional[str], typer.Option(help="i/n: take every n-th prompt from the i-th, write one shard.")] = None,
    round: Annotated[int, typer.Option(min=0, help="Round number recorded in the rows.")] = 0,
    overwrite: Overwrite = False,
    *,
    given: Given,
) -> None:
    """Sample K completions per prompt and write rollouts.parquet (token ids and behaviour log-probs kept)."""
    from crl.data.models import resolve_model
    from crl.progress import console
    from crl.stages.generate import generate

    run = given.resolve().config
    path = generate(prompts, out, run, resolve_model(run.model), limit=limit, shard_spec=shard, round=round, overwrite=overwrite)
    console.print(f"wrote {path}")
