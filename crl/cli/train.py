"""``crl train``: one round of updates on a verified/ folder.

On N processes: ``torchrun --nproc-per-node N -m crl train VERIFIED ...`` (docs/multinode.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from crl.cli import app
from crl.cli.options import Given, Overwrite, out_option, settings_command
from crl.errors import CrlError


def list_objectives() -> None:
    from rich.table import Table

    from crl.config.settings import Train
    from crl.objectives import OBJECTIVES, options, spec
    from crl.views.report import stdout

    table = Table(title="objectives (--option NAME=VALUE sets an option)")
    for column in ("objective", "options and defaults", "needs", "what it does"):
        table.add_column(column)
    for name, fn in sorted(OBJECTIVES.items()):
        s = spec(name)
        needs = [f"reference model{' when ' + s.reference + ' > 0' if isinstance(s.reference, str) else ''} (the run's starting model unless --ref)"] if s.reference else []
        needs += ["dynamic sampling (on by default in crl iterate)"] if s.dynamic_sampling else []
        needs += ["accepts --tis-cap"] if s.tis else []
        shown = f"{name} (default)" if name == Train.objective else name
        table.add_row(shown, ", ".join(f"{k}={v}" for k, v in options(name).items()), "; ".join(needs), (fn.__doc__ or "").strip().splitlines()[0])
    stdout.print(table)


@settings_command(app, "train", ["model", "seed", "rounds", "log_to", "train.*", "lora.*"])
def train_cmd(
    verified: Annotated[Optional[list[Path]], typer.Argument(help="verified/ folders written by `crl verify` (several: one training set, e.g. a run's round-*/verified).")] = None,
    out: Annotated[Path, out_option("Checkpoint folder to write.")] = Path("checkpoint"),
    overwrite: Overwrite = False,
    list_objectives_: Annotated[bool, typer.Option("--list-objectives", help="List objectives and their options, then exit.")] = False,
    *,
    given: Given,
) -> None:
    """Update the model on verified/ folders with one objective; write a checkpoint with optimizer state and train_log.parquet.

    Several folders make one training set (each round's prompts their own groups): train offline on every stored
    round of a run with `crl train RUN/round-*/verified --epochs E ...`.

    Runs the same on N processes under torchrun (FSDP2): torchrun --nproc-per-node N -m crl train VERIFIED ...
    """
    if list_objectives_:
        list_objectives()
        return
    if not verified:
        raise CrlError("missing argument VERIFIED (a verified/ folder, or several)")
    from crl.config import as_table
    from crl.data.models import resolve_model
    from crl.progress import console
    from crl.stages.train import train
    from crl.views.report import stdout
    from crl.views.tracking import open_tracker

    run = given.resolve().config
    main = int(os.environ.get("RANK", "0")) == 0  # under torchrun every process runs this command; one reports
    with open_tracker(run.log_to if main else "none", out.parent, as_table(run)) as tracker:
        log = train(verified, out, run, resolve_model(run.model), overwrite=overwrite, on_step=lambda row: tracker.log(row["step"], row))
    if main:
        stdout.print(log.select([c for c in ("step", "loss", "units", "groups", "grad_norm", "tokens") if c in log.columns]))
        console.print(f"wrote {out}")
