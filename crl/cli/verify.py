"""``crl verify``: check rollouts and split them into positives and negatives."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crl.cli import app
from crl.cli.options import Given, Overwrite, out_option, settings_command


@settings_command(app, "verify", ["verify.*"])
def verify_cmd(
    rollouts: Annotated[Path, typer.Argument(help="rollouts.parquet, or a folder of rollout shards.")],
    out: Annotated[Path, out_option("Output folder.")] = Path("verified"),
    overwrite: Overwrite = False,
    *,
    given: Given,
) -> None:
    """Extract each completion's answer, compare it with the gold answer, write verified/{positive,negative,groups}."""
    from crl.stages.verify import verify
    from crl.views.report import print_summary

    print_summary(verify(rollouts, out, given.resolve().config.verify, overwrite), str(out))
