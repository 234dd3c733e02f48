"""Stage 3, train: verified/ folders and a model in, a checkpoint folder (with optimizer state) out.

One round of updates with the ``[train]`` settings (crl/engine/trainer.py does the work), on one verified/
folder or on several (the stored rounds of a run, for training offline: each prompt of each round is a group
of its own, and ``epochs`` passes over them all). The model may be a
previous round's checkpoint: its AdamW state, step and round counters continue, and the objectives that need
a frozen reference model use the run's starting model recorded there (or ``--ref``). ConSPO's margin
curriculum runs over ``rounds`` (the planned length of the run). The checkpoint folder appears whole or not
at all, with train_log.parquet (one row per optimiser step) inside.

The same command runs on N processes: ``torchrun --nproc-per-node N -m crl train ...`` (docs/multinode.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import polars as pl

from crl.config import RunConfig
from crl.data.models import resolve_model
from crl.data.schemas import read_verified_rounds
from crl.engine import distributed
from crl.engine.trainer import Trainer
from crl.io import check_output
from crl.objectives import check_options


def train(
    verified: list[Path], out: Path, run: RunConfig, model: str, *, overwrite: bool = False,
    on_step: Callable[[dict], None] | None = None,
) -> pl.DataFrame:
    """Run one round of training on the rows of the ``verified`` folders and write the checkpoint folder;
    returns the per-step log."""
    check_options(run.train.objective, run.train.options)
    if run.train.ref:
        resolve_model(run.train.ref, "--ref")
    out = check_output(out, kind="checkpoint", overwrite=overwrite, inputs=[p for p in (*verified, model, run.train.ref) if p])
    rows, meta = read_verified_rounds(verified)
    with distributed.session(run.train.device):
        trainer = Trainer(model, run)
        trainer.check(rows, meta, ", ".join(map(str, verified)))
        log = trainer.train_round(rows, meta, on_step).steps
        trainer.save(out, log)
    return log
