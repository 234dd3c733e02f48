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

The folder also holds crl's marker ``.crl-output.json`` (kind ``run``) and its lock ``.crl-lock``; a new run
folder appears with both and its config.toml in one rename, so of two processes started on the same ``--out``
one makes the run and the other is refused. Only a folder with that marker is resumed, and only crl's own names
in it (``round-NNNN`` exactly, ``checkpoints/round-NNNN``, ``.crl-tmp-*``) are ever removed.

The model and optimizer live in memory between rounds, so the state a run can restart from is a checkpoint of a
finished round: ``--resume`` continues from the newest one whose round and every round before it are done
(round.json written), and redoes the later rounds exactly (same prompts, seeds and updates), replacing their
folders and checkpoints. The configuration's relative paths are kept relative to the run folder, so a run
resumes on the same files from wherever it is resumed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from pathlib import Path
from typing import Iterable, Iterator

import polars as pl

from crl.config import Resolved, dumps
from crl.config.resolve import paths_relative_to
from crl.errors import CrlError
from crl.io import (
    RUN, TMP_PREFIX, check_place, check_writable, mark, output_kind, remove, remove_stale, tmp_sibling, write_parquet,
)
from crl.locks import run_lock

CONFIG = "config.toml"
DONE = "round.json"
CHECKPOINTS = "checkpoints"
_ROUND = re.compile(r"round-(\d{4,})")


def round_dir(run: Path, r: int) -> Path:
    return run / f"round-{r:04d}"


def checkpoint_dir(run: Path, r: int) -> Path:
    return run / CHECKPOINTS / f"round-{r:04d}"


def _rounds(folder: Path) -> list[int]:
    """The round numbers of crl's own ``round-NNNN`` folders in ``folder`` (a copy such as round-0002-backup is
    not one)."""
    found = (_ROUND.fullmatch(p.name) for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else ()
    return sorted(int(m[1]) for m in found if m)


def done_rounds(run: Path) -> list[int]:
    """The finished rounds (their round.json written last), oldest first."""
    return [r for r in _rounds(run) if (round_dir(run, r) / DONE).is_file()]


def saved_rounds(run: Path) -> list[int]:
    """Finished rounds with a saved state, oldest first (a state is written whole or not at all, before the
    round's round.json)."""
    done = set(done_rounds(run))
    return [r for r in _rounds(run / CHECKPOINTS) if r in done]


def resume_point(run: Path) -> int:
    """The round whose saved state a resumed run continues from: the newest saved round that every round up to
    it is done for (0: the starting model). A round is redone only from the state of the round before it."""
    done = set(done_rounds(run))
    first_missing = next(r for r in range(len(done) + 1) if r not in done)
    return max((r for r in saved_rounds(run) if r < first_missing), default=0)


def prune_checkpoints(run: Path, keep_last: int) -> None:
    """Keep the newest ``keep_last`` saved states of finished rounds."""
    for r in saved_rounds(run)[:-keep_last]:
        remove(checkpoint_dir(run, r))


def is_run(folder: Path) -> bool:
    return output_kind(folder) == RUN


def check_new_run(run: Path, inputs: Iterable[str | Path] = ()) -> None:
    """A new run goes into a folder that does not exist or is empty; anything else is refused."""
    check_place(run, inputs, "--out")
    if run.exists() or run.is_symlink():
        if is_run(run):
            raise CrlError(f"--out {run}: a run folder: pass --resume to continue it; it was left untouched")
        if not run.is_dir() or run.is_symlink() or any(run.iterdir()):
            raise CrlError(f"--out {run}: not empty and not a run folder; it was left untouched")
    check_writable(run / CONFIG, "--out")


def check_resumable(run: Path) -> None:
    """``--resume`` continues only a folder that crl made as a run (its marker), with its configuration."""
    if not is_run(run):
        what = "no such folder" if not run.exists() else "not a run folder made by `crl iterate` (no crl run marker)"
        raise CrlError(f"--resume {run}: {what}; nothing was changed")
    if not (run / CONFIG).is_file():
        raise CrlError(f"--resume {run}: the run's {CONFIG} is missing; nothing was changed")
    check_writable(run / CONFIG, "--out")


@contextlib.contextmanager
def new_run(run: Path, resolved: Resolved) -> Iterator[None]:
    """Make the run folder whole, with its marker, its configuration (paths relative to it) and its lock held
    for the block, in one rename; refused if another process made it meanwhile."""
    run.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(run.parent)
    tmp = tmp_sibling(run)
    remove(tmp)
    tmp.mkdir()
    try:
        mark(tmp, RUN)
        (tmp / CONFIG).write_text(dumps(paths_relative_to(resolved, run)))
        with run_lock(tmp):
            try:
                os.rename(tmp, run)  # onto nothing or an empty folder; a folder with files in it refuses
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    raise
                raise CrlError(f"--out {run}: another process wrote there while this run was being checked; it was left untouched") from None
            yield
    finally:
        remove(tmp)


def check_saved_state(run: Path, r: int, fresh_optimizer: bool) -> None:
    """Refuse, before anything in the run is removed, to resume from round ``r``'s saved state when it is damaged
    or incomplete; the line names the state to fall back to."""
    from crl.engine.checkpoint import check_saved_state as check

    try:
        check(checkpoint_dir(run, r), fresh_optimizer)
    except CrlError as e:
        earlier = [s for s in saved_rounds(run) if s < r]
        again = f"remove {checkpoint_dir(run, r)} and run `crl iterate --out {run} --resume` again"
        first = earlier[-1] + 1 if earlier else 1
        redo = f"round {r}" if first == r else f"rounds {first}-{r}"
        fallback = (f"{again} to redo {redo} from round {earlier[-1]}'s saved state" if earlier
                    else f"{again} to redo {redo} from the starting model (no earlier state is saved)")
        raise CrlError(f"{e}; or {fallback}") from None


def forget_after(run: Path, r: int) -> None:
    """Remove the rounds and checkpoints after ``r`` and crl's temporaries: a resumed run redoes them from round
    ``r``'s state. Only crl's own names inside the run folder are touched (the run is locked, so every
    temporary in it is a killed process's)."""
    for folder in (run, run / CHECKPOINTS):
        for later in (x for x in _rounds(folder) if x > r):
            remove(folder / f"round-{later:04d}")
    for folder in (run, run / CHECKPOINTS, *(p for p in [*run.iterdir(), *(run / CHECKPOINTS).glob("*")] if p.is_dir())):
        for entry in folder.glob(f"{TMP_PREFIX}*") if folder.is_dir() else ():
            remove(entry)


def metrics_table(run: Path) -> pl.DataFrame:
    """One row per finished round, from the rounds' summaries."""
    rows = [json.loads((round_dir(run, r) / DONE).read_text()) for r in done_rounds(run)]
    return pl.from_dicts(rows, infer_schema_length=None) if rows else pl.DataFrame()


def write_metrics(run: Path) -> pl.DataFrame:
    table = metrics_table(run)
    write_parquet(table, run / "metrics.parquet", kind="metrics")
    return table
