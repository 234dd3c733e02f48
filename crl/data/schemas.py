"""The files passed between stages: their columns, their typed metadata, and readers that check both.

Readers check the columns, types and values and raise one-line ``CrlError``s naming the file, row and column,
so a stage never starts on the wrong input. A rollouts "file" may also be a folder of shards written by
``--shard i/n``; every shard must come from the same tokenizer and sampling settings.

The metadata contract (Parquet key-value metadata, JSON values under ``crl.*``): rollouts carry ``sampling``
(the settings they were drawn with), ``tokenizer`` (a fingerprint of the vocabulary: token ids mean the same
thing exactly when it matches), ``model`` and ``seed``; verified/ adds ``verifier`` (names and weights) and
``summary``. ``RolloutMeta`` is that contract as a type; a file without it was not written by crl.

`crl verify` also reads a plain table of completions made by any tool (prompt_id, completion, answer; see
``read_completions``): its verified/ output has only the columns that table had, plus the verdicts, and is refused
by training with one line naming what it lacks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from crl.config import Sampling, sampling_of
from crl.config.resolve import section_from
from crl.errors import CrlError
from crl.io import check_input, read_metadata

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
COMPLETION_SCHEMA: dict[str, pl.DataType] = {"prompt_id": pl.String(), "completion": pl.String(), "answer": pl.String()}
TOKEN_COLUMNS = ("prompt_ids", "completion_ids", "logprobs")




@dataclass(frozen=True)
class RolloutMeta:
    """What crl generate records about how a rollouts file was made."""

    sampling: Sampling
    tokenizer: str
    model: str = ""
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, raw: dict[str, Any], where: str) -> RolloutMeta:
        if not isinstance(raw.get("sampling"), dict) or not raw.get("tokenizer"):
            raise CrlError(f"{where}: no crl generation metadata (sampling settings, tokenizer); make rollouts with `crl generate`")
        sampling = section_from(Sampling, raw["sampling"], f"{where}: crl.sampling")
        known = {"sampling", "tokenizer", "model", "seed"}
        return cls(sampling, str(raw["tokenizer"]), str(raw.get("model") or ""), int(raw.get("seed") or 0),
                   {k: v for k, v in raw.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """The metadata as written into a file's key-value metadata."""
        return {"sampling": dataclasses.asdict(self.sampling), "tokenizer": self.tokenizer, "model": self.model,
                "seed": self.seed, **self.extra}


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A short hash of the vocabulary: token ids mean the same thing exactly when it matches."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha1(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]


def rollout_metadata(sampling: Sampling, tokenizer: Any, **extra: Any) -> dict[str, Any]:
    """What goes into rollouts.parquet's key-value metadata (see ``RolloutMeta``)."""
    return {"sampling": dataclasses.asdict(sampling_of(sampling)), "tokenizer": tokenizer_fingerprint(tokenizer), **extra}


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType], where: str) -> pl.DataFrame:
    """Check that ``df`` has the columns of ``schema`` (extra columns kept) with types that convert without loss
    of meaning (numbers to numbers, strings stay strings), and cast them."""
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise CrlError(f"{where}: missing column(s) {', '.join(missing)}")
    for column, dtype in schema.items():
        have = df.schema[column]
        if not _converts(have, dtype):
            raise CrlError(f"{where}: column {column} holds {have}, expected {dtype}")
    try:
        return df.with_columns([pl.col(c).cast(t) for c, t in schema.items()])
    except pl.exceptions.PolarsError as e:
        raise CrlError(f"{where}: a column has the wrong type ({str(e).splitlines()[0]})") from None


def _converts(have: pl.DataType, want: pl.DataType) -> bool:
    """Whether a column of type ``have`` holds what ``want`` means: text for text, integers for integers,
    numbers for floats, lists of those for lists (a missing column of nulls too)."""
    if have == pl.Null:
        return True
    if isinstance(want, pl.List):
        return isinstance(have, pl.List) and _converts(have.inner, want.inner)
    if want == pl.String():
        return have == pl.String()
    if want.is_integer():
        return have.is_integer()
    return have.is_numeric() if want.is_float() else have == want


def check_filled(df: pl.DataFrame, columns: tuple[str, ...], where: str) -> None:
    """Refuse rows with a missing value in one of ``columns`` or an empty gold answer."""
    for column in columns:
        nulls = df[column].is_null()
        if nulls.any():
            raise CrlError(f"{where}: row {int(nulls.arg_true()[0])} has no {column}")
    empty = df["answer"].str.strip_chars() == ""
    if empty.any():
        raise CrlError(f"{where}: row {int(empty.arg_true()[0])} has an empty gold answer")


def check_rows(df: pl.DataFrame, where: str) -> None:
    """Refuse rollout rows a stage cannot use: missing values, repeated (prompt_id, sample), negative token ids,
    behaviour log-probs that are not finite, above 0, or not one per completion token."""
    check_filled(df, ("prompt_id", "completion", "answer", "prompt_ids", "completion_ids", "logprobs"), where)
    dup = df.select(pl.struct("prompt_id", "sample").is_duplicated().alias("d"))["d"]
    if dup.any():
        row = int(dup.arg_true()[0])
        raise CrlError(f"{where}: (prompt_id, sample) = ({df['prompt_id'][row]}, {df['sample'][row]}) appears twice (row {row} and another)")
    for column in ("prompt_ids", "completion_ids"):
        bad = df[column].list.min().fill_null(0) < 0
        if bad.any():
            raise CrlError(f"{where}: row {int(bad.arg_true()[0])}: {column} holds a negative token id")
    short = df["logprobs"].list.len() != df["completion_ids"].list.len()
    if short.any():
        raise CrlError(f"{where}: row {int(short.arg_true()[0])}: logprobs has not one value per completion token")
    flat = df["logprobs"].explode().drop_nulls()
    if flat.len() and (not flat.is_finite().all() or flat.max() > 1e-3):
        row = int(df["logprobs"].list.eval(pl.element().is_finite().not_() | (pl.element() > 1e-3)).list.any().arg_true()[0])
        raise CrlError(f"{where}: row {row}: a behaviour log-prob is not a finite number <= 0")


def parquet_files(path: str | Path) -> list[Path]:
    """The Parquet file at ``path``, or the shards (``*.parquet``) of the folder at ``path``, sorted."""
    path = check_input(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
        if not files:
            raise CrlError(f"{path}: folder holds no .parquet files")
        check_shards(path, files)
        return files
    if not path.exists():
        raise CrlError(f"{path}: no such file or folder")
    return [path]


SHARD = re.compile(r"rollouts-(\d{5,})-of-(\d{5,})\.parquet")  # what ``crl generate --shard i/n`` writes


def check_shards(folder: Path, files: list[Path]) -> None:
    """A folder of shards holds every shard of one set (``--shard i/n`` for each i < n) and nothing else, so a
    missing shard is not silently left out."""
    shards = [SHARD.fullmatch(f.name) for f in files]
    if not any(shards):
        return
    if not all(shards):
        other = next(f.name for f, m in zip(files, shards) if m is None)
        raise CrlError(f"{folder}: holds {other} beside rollout shards; a folder of shards holds only rollouts-i-of-n.parquet files")
    sets = sorted({int(m[2]) for m in shards})
    if len(sets) > 1:
        raise CrlError(f"{folder}: holds shards of {' and of '.join(map(str, sets))}; a folder of shards holds one set")
    missing = sorted(set(range(sets[0])) - {int(m[1]) for m in shards})
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CrlError(f"{folder}: shard {missing[0]} of {sets[0]} is missing{more}; generate it with --shard {missing[0]}/{sets[0]}")


def read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(check_input(path))
    except (OSError, pl.exceptions.PolarsError) as e:
        raise CrlError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None


def read_rollouts(path: str | Path) -> tuple[pl.DataFrame, RolloutMeta]:
    """All rollouts in a file or a folder of shards, checked, and their generation metadata (every shard's
    tokenizer and sampling settings must agree)."""
    files = parquet_files(path)
    frames, meta = [], None
    for f in files:
        frames.append(conform(read_parquet(f), ROLLOUT_SCHEMA, str(f)))
        this = RolloutMeta.read(read_metadata(f), str(f))
        if meta is not None and (this.tokenizer, this.sampling) != (meta.tokenizer, meta.sampling):
            what = "tokenizer" if this.tokenizer != meta.tokenizer else "sampling settings"
            raise CrlError(f"{f}: made with another {what} than {files[0].name}; shards of one rollouts folder must agree")
        meta = meta or this
    df = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
    if df.is_empty():
        raise CrlError(f"{path}: holds no rollouts")
    check_rows(df, str(path))
    return df, meta  # type: ignore[return-value]


def read_completions(path: str | Path) -> tuple[pl.DataFrame, RolloutMeta | None]:
    """What `crl verify` checks: rollouts of `crl generate` (a table with token ids, which must carry crl's metadata),
    or any other table of completions (Parquet, a folder of Parquet shards, or JSONL) with prompt_id, completion and
    answer columns, whose other columns are kept as they are and whose metadata is None: verifying needs no token
    ids, log-probs or sampling settings, only training does."""
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".ndjson") and path.is_file():
        try:
            df = pl.read_ndjson(path, infer_schema_length=None)
        except (OSError, pl.exceptions.PolarsError) as e:
            raise CrlError(f"{path}: not a readable JSONL file ({str(e).splitlines()[0]})") from None
    else:
        files = parquet_files(path)
        df = pl.concat([read_parquet(f) for f in files], how="diagonal_relaxed")
        if any(read_metadata(f).get("tokenizer") for f in files) or set(TOKEN_COLUMNS) & set(df.columns):
            return read_rollouts(path)  # crl rollouts: token ids mean nothing without their tokenizer's metadata
    if not {"prompt_id", "completion", "answer"} <= set(df.columns):
        missing = [c for c in COMPLETION_SCHEMA if c not in df.columns]
        raise CrlError(f"{path}: missing column(s) {', '.join(missing)}; a table to verify needs prompt_id, completion and answer")
    if df.schema["prompt_id"].is_integer():
        df = df.with_columns(pl.col("prompt_id").cast(pl.String))
    df = conform(df, COMPLETION_SCHEMA, str(path))
    if df.is_empty():
        raise CrlError(f"{path}: holds no completions")
    check_filled(df, tuple(COMPLETION_SCHEMA), str(path))
    return df, None


def read_verified(folder: str | Path) -> tuple[pl.DataFrame, pl.DataFrame, RolloutMeta]:
    """The positive and negative rollouts of a verified/ folder as one frame (with a ``positive`` column), its
    groups, and its metadata (the rollouts' plus ``verifier`` and ``summary`` in ``extra``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CrlError(f"{folder}: not a verified/ folder of `crl verify`")
    missing = [f for f in VERIFIED_FILES if not (folder / f).is_file()]
    if missing:
        raise CrlError(f"{folder}: not a verified/ output of `crl verify` (missing {', '.join(missing)})")
    parts = []
    for name, positive in zip(VERIFIED_FILES[:2], (True, False)):
        part = read_parquet(folder / name)
        if "tokenizer" not in read_metadata(folder / name) and {"prompt_id", "completion", "answer"} <= set(part.columns):
            lacks = [c for c in ROLLOUT_SCHEMA if c not in part.columns] + ["crl generation metadata"]
            raise CrlError(f"{folder}: verified from a plain completion table, which lacks {', '.join(lacks)}; "
                           "training needs rollouts made by `crl generate`")
        part = conform(part, VERIFIED_SCHEMA, str(folder / name))
        parts.append(part.with_columns(positive=pl.lit(positive)))
    rows = pl.concat(parts, how="diagonal_relaxed").sort("prompt_id", "sample")
    if rows.is_empty():
        raise CrlError(f"{folder}: holds no rollouts")
    check_rows(rows, str(folder))
    groups = conform(read_parquet(folder / "groups.parquet"), GROUP_SCHEMA, str(folder / "groups.parquet"))
    meta = RolloutMeta.read(read_metadata(folder / "positive.parquet"), str(folder))
    if "verifier" not in meta.extra:
        raise CrlError(f"{folder}: no crl verify metadata (verifier); write verified/ with `crl verify`")
    return rows, groups, meta


def read_verified_rounds(folders: list[Path]) -> tuple[pl.DataFrame, RolloutMeta]:
    """The rows of several verified/ folders as one training set (each sample once: a group is one prompt in one
    round, crl/data/rounds.py) and their common metadata: the same tokenizer and sampling settings, since the
    trainer recomputes log-probs at the sampling temperature and against the generation limit."""
    frames, meta = [], None
    for folder in folders:
        rows, _, this = read_verified(folder)
        if meta is not None and (this.tokenizer, this.sampling) != (meta.tokenizer, meta.sampling):
            what = "tokenizer" if this.tokenizer != meta.tokenizer else "sampling settings"
            raise CrlError(f"{folder}: made with another {what} than {folders[0]}; folders trained on together must agree")
        frames.append(rows)
        meta = meta or this
    rows = pl.concat(frames, how="diagonal_relaxed")
    twice = rows.select(pl.struct("round", "prompt_id", "sample").is_duplicated().alias("d"))["d"]
    if twice.any():
        row = rows.row(int(twice.arg_true()[0]), named=True)
        raise CrlError(f"{row['prompt_id']} sample {row['sample']} of round {row['round']} is in two of the folders given; give each round's verified/ once")
    return rows, meta  # type: ignore[return-value]
