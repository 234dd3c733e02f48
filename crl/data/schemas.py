"""The columns of the files passed between stages (DESIGN.md, "Data contracts"), and their readers.

Readers check the columns and types and raise one-line ``CrlError``s naming the file, so a stage never
starts on the wrong input. A rollouts "file" may also be a folder of shards written by ``--shard i/n``.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from crl.errors import CrlError
from crl.io import read_metadata

ROLLOUT_SCHEMA: dict[str, pl.DataType] = {
    "prompt_id": pl.String(),
    "sample": pl.Int32(),
    "prompt": pl.String(),
    "completion": pl.String(),
    "answer": pl.String(),
    "source": pl.String(),
    "prompt_ids": pl.List(pl.Int32()),
    "completion_ids": pl.List(pl.Int32()),
    "logprobs": pl.List(pl.Float32()),
    "finish_reason": pl.String(),
    "model": pl.String(),
    "round": pl.Int32(),
    "temperature": pl.Float32(),
    "seed": pl.Int64(),
}

VERDICT_SCHEMA: dict[str, pl.DataType] = {"reward": pl.Float32(), "pred": pl.String(), "status": pl.String()}
VERIFIED_SCHEMA = {**ROLLOUT_SCHEMA, **VERDICT_SCHEMA}

GROUP_SCHEMA: dict[str, pl.DataType] = {
    "prompt_id": pl.String(),
    "n": pl.Int32(),
    "n_pos": pl.Int32(),
    "n_neg": pl.Int32(),
    "pass_rate": pl.Float32(),
}

STATUSES = ("ok", "no_answer", "unparsable", "timeout", "error")
VERIFIED_FILES = ("positive.parquet", "negative.parquet", "groups.parquet")


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType], where: str) -> pl.DataFrame:
    """Check that ``df`` has the columns of ``schema`` (extra columns kept) and cast them to its types."""
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise CrlError(f"{where}: missing column(s) {', '.join(missing)}")
    try:
        return df.with_columns([pl.col(c).cast(t) for c, t in schema.items()])
    except pl.exceptions.PolarsError as e:
        raise CrlError(f"{where}: a column has the wrong type ({str(e).splitlines()[0]})") from None


def parquet_files(path: str | Path) -> list[Path]:
    """The Parquet file at ``path``, or the shards (``*.parquet``) of the folder at ``path``, sorted."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
        if not files:
            raise CrlError(f"{path}: folder holds no .parquet files")
        return files
    if not path.exists():
        raise CrlError(f"{path}: no such file or folder")
    return [path]


def read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as e:
        raise CrlError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None


def read_rollouts(path: str | Path) -> tuple[pl.DataFrame, dict[str, object]]:
    """All rollouts in a file or a folder of shards, and the generation metadata of the first shard."""
    files = parquet_files(path)
    frames = [conform(read_parquet(f), ROLLOUT_SCHEMA, str(f)) for f in files]
    df = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
    if df.is_empty():
        raise CrlError(f"{path}: holds no rollouts")
    return df, read_metadata(files[0])


def read_verified(folder: str | Path) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, object]]:
    """The positive and negative rollouts of a verified/ folder as one frame, its groups, its metadata."""
    folder = Path(folder)
    missing = [f for f in VERIFIED_FILES if not (folder / f).is_file()]
    if missing:
        raise CrlError(f"{folder}: not a verified/ output of `crl verify` (missing {', '.join(missing)})")
    parts = [conform(read_parquet(folder / f), VERIFIED_SCHEMA, str(folder / f)) for f in VERIFIED_FILES[:2]]
    rows = pl.concat(parts, how="diagonal_relaxed").sort("prompt_id", "sample")
    groups = conform(read_parquet(folder / "groups.parquet"), GROUP_SCHEMA, str(folder / "groups.parquet"))
    return rows, groups, read_metadata(folder / "positive.parquet")
