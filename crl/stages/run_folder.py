"""The folder of one ``crl iterate`` run, and what finished means in it.

::

    RUN/config.toml                  the resolved configuration (written before the first round)
    RUN/round-0000/eval.parquet      the starting model's evaluation
    RUN/round-NNNN/rollouts.parquet  the round's samples, from the policy after round NNNN-1
    RUN/round-NNNN/verified/         positive, negative, groups
    RUN/round-NNNN/train_log.parquet one row per optimiser step
    RUN/round-NNNN/eval.parquet      every ``eval.every`` rounds and after the last
    RUN/checkpoints/round-NNNN/      weights, optimizer and trainer state, every ``save_every`` rounds and
                                     after the last, the newest ``keep_last`` kept
    RUN/round-NNNN/round.json        written last: the round's summary; the round is done
    RUN/metrics.parquet              one row per finished round, rebuilt from the round.json files

The model and optimizer live in memory between rounds, so the state a run can restart from is its newest
checkpoint of a finished round: ``--resume`` continues from there and redoes the later rounds exactly (same
prompts, seeds and updates), replacing their folders and checkpoints.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl

from crl.errors import CrlError
from crl.io import TMP_PREFIX, check_writable, remove, write_parquet

CONFIG = "config.toml"
DONE = "round.json"
CHECKPOINTS = "checkpoints"
_ROUND = re.compile(r"round-(\d{4,})")


def round_dir(run: Path, r: int) -> Path:
    return run / f"round-{r:04d}"


def checkpoint_dir(run: Path, r: int) -> Path:
    return run / CHECKPOINTS / f"round-{r:04d}"


def saved_rounds(run: Path) -> list[int]:
    """Finished rounds with a saved state, oldest first (a state is written whole or not at all, before the
    round's round.json)."""
    folder = run / CHECKPOINTS
    found = (_ROUND.fullmatch(p.name) for p in folder.iterdir()) if folder.is_dir() else ()
    return sorted(int(m[1]) for m in found if m and (round_dir(run, int(m[1])) / DONE).is_file())


def prune_checkpoints(run: Path, keep_last: int) -> None:
    for r in saved_rounds(run)[:-keep_last]:
        remove(checkpoint_dir(run, r))


def check_new_run(run: Path) -> None:
    """A new run goes into a folder that does not exist or is empty; anything else is refused."""
    if run.exists() and (not run.is_dir() or any(run.iterdir())):
        what = "a run folder: pass --resume to continue it" if (run / CONFIG).is_file() else "not empty and not a run folder"
        raise CrlError(f"--out {run}: {what}; it was left untouched")
    check_writable(run / CONFIG, "--out")


def check_resumable(run: Path) -> None:
    if not (run / CONFIG).is_file():
        raise CrlError(f"--resume {run}: not a run folder of `crl iterate` (no {CONFIG}); nothing was changed")
    check_writable(run / CONFIG, "--out")


def forget_after(run: Path, r: int) -> None:
    """Remove the rounds and checkpoints after ``r`` and crl's temporaries: a resumed run redoes them from round
    ``r``'s state. Only crl's own names inside the run folder are touched."""
    for folder in (run, run / CHECKPOINTS):
        for entry in folder.iterdir() if folder.is_dir() else ():
            m = _ROUND.fullmatch(entry.name)
            if (m and int(m[1]) > r) or entry.name.startswith(TMP_PREFIX):
                remove(entry)
    for folder in (p for p in [*run.iterdir(), *(run / CHECKPOINTS).glob("*")] if p.is_dir()):
        for entry in folder.iterdir():
            if entry.name.startswith(TMP_PREFIX):
                remove(entry)


def metrics_table(run: Path) -> pl.DataFrame:
    """One row per finished round, from the rounds' summaries."""
    rows = [json.loads(p.read_text()) for p in sorted(run.glob(f"round-*/{DONE}"))]
    return pl.from_dicts(rows, infer_schema_length=None) if rows else pl.DataFrame()


def write_metrics(run: Path) -> pl.DataFrame:
    table = metrics_table(run)
    write_parquet(table, run / "metrics.parquet", kind="metrics")
    return table
