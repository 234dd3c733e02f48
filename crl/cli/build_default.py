"""``crl build-default``: rebuild the shipped tiny model and arithmetic data reproducibly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from crl.cli import app
from crl.cli.options import Given, Overwrite, out_option, settings_command
from crl.progress import console


@settings_command(app, "build-default", ["seed"])
def build_default_cmd(
    out: Annotated[Optional[Path], out_option("Folder to write into (default: the package's crl/default/shipped/).")] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Warm-start steps (default: the shipped recipe's).")] = None,
    overwrite: Overwrite = False,
    *,
    given: Given,
) -> None:
    """Generate the arithmetic train/test sets, the tokenizer, and warm-start the tiny model (a few minutes on a CPU);
    --seed seeds the task split, the initial weights and the warm start."""
    from crl.default import SHIPPED_DIR
    from crl.default.warmstart import build_default

    build_default(out or SHIPPED_DIR, seed=given.resolve().config.seed, steps=steps, overwrite=overwrite)
    console.print(f"wrote the default model and data to {out or SHIPPED_DIR}")
