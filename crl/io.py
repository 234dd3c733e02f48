"""Crash-safe output: every file and folder crl writes appears whole or not at all.

Writers produce a temporary sibling and rename it into place (an atomic step on one filesystem), so a
killed run leaves no half-written output and ``--resume`` can trust what exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import polars as pl
import pyarrow.parquet as pq

TMP_PREFIX = ".tmp-"


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write a file or a folder into; rename it to ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    remove(tmp)
    try:
        yield tmp
        if path.exists():
            remove(path)
        os.replace(tmp, path)
    finally:
        remove(tmp)


def remove(path: Path) -> None:
    """Delete a file or a folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def clean_partial(folder: Path) -> None:
    """Remove temporary leftovers of a killed run below ``folder``."""
    for tmp in sorted(folder.rglob(f"{TMP_PREFIX}*"), key=lambda p: len(p.parts), reverse=True):
        remove(tmp)


def write_parquet(df: pl.DataFrame, path: str | Path, metadata: dict[str, object] | None = None) -> None:
    """Write ``df`` atomically, with ``metadata`` stored as JSON in the file's key-value metadata."""
    table = df.to_arrow()
    if metadata:
        meta = dict(table.schema.metadata or {})
        meta.update({f"crl.{k}".encode(): json.dumps(v).encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_metadata(path: str | Path) -> dict[str, object]:
    """The crl key-value metadata of a Parquet file written by ``write_parquet``."""
    raw = pq.read_schema(path).metadata or {}
    return {k.decode()[4:]: json.loads(v) for k, v in raw.items() if k.startswith(b"crl.")}
